"""Linear models: least squares, ridge and logistic regression, exact and iterative solvers."""

from mlxp.exceptions import DivergenceError, RankWarning, SolverError
from mlxp.linear_model._linear import LinearRegression, Ridge
from mlxp.linear_model._logistic import LogisticRegression

__all__ = [
    "DivergenceError",
    "LinearRegression",
    "LogisticRegression",
    "RankWarning",
    "Ridge",
    "SolverError",
]
