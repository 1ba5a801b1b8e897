"""Linear models: least squares and ridge regression, exact and iterative solvers."""

from mlxp.exceptions import DivergenceError, SolverError
from mlxp.linear_model._linear import LinearRegression, Ridge

__all__ = ["DivergenceError", "LinearRegression", "Ridge", "SolverError"]
