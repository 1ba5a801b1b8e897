"""scikit-learn's own conformance suite, run on every mlxp estimator."""

import pytest

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlxp.linear_model import LinearRegression, Ridge

ESTIMATORS = [
    LinearRegression(),
    LinearRegression(solver="qr"),
    LinearRegression(solver="gd", tol=1e-6, max_iter=20000),
    Ridge(),
    Ridge(alpha=0.1, solver="svd"),
    Ridge(solver="sgd", random_state=0),
]


def expected_failures(estimator) -> dict[str, str]:
    """Variants that knowingly differ from scikit-learn's expectations, with the reason."""
    if estimator.solver == "qr":
        reason = (
            "solver='qr' refuses rank-deficient data (this check's data is: zero weights in an "
            "underdetermined problem, or redundant columns); 'auto' and 'svd' handle it"
        )
        return {
            "check_sample_weight_equivalence_on_dense_data": reason,
            "check_array_api_input": reason,
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_conformance(estimator, check):
    check(estimator)
