"""Figures a model version is described by, per kind: the metrics of a manifest and the
split-conformal half width of a point regressor. Pure numpy; training and import share it.
"""

from __future__ import annotations

import math

import numpy as np

from models.artifact import DAY_TOLERANCE, Unit
from models.kinds import MIN_PROBABILITY, Scored


class TooFewRows(ValueError):
    """Too few calibration rows for the asked coverage: the interval would be infinite."""

    def __init__(self, rows: int, needed: int, coverage: float) -> None:
        self.rows, self.needed = rows, needed
        super().__init__(f"a {coverage:g} conformal interval needs at least {needed} "
                         f"calibration rows; there are {rows}")


def short(value: float) -> float:
    """Six significant digits: the manifest stays readable and small."""
    return float(f"{value:.6g}")


def covered(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, unit: Unit) -> np.ndarray:
    """Whether each actual lies in its interval; whole days are read with DAY_TOLERANCE."""
    tol = DAY_TOLERANCE if unit is Unit.DAYS else 0.0
    inside: np.ndarray = (y >= lower - tol) & (y <= upper + tol)
    return inside


def regression_figures(y: np.ndarray, scored: Scored, unit: Unit) -> dict[str, float]:
    """MAE, RMSE, bias (prediction - actual), interval coverage (with an interval) and,
    for days, the share whose rounded prediction is within one day."""
    value = scored.value
    error = value - y
    figures = {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "bias": float(np.mean(error)),
    }
    if scored.lower is not None and scored.upper is not None:
        figures["interval_coverage"] = float(np.mean(covered(y, scored.lower, scored.upper,
                                                             unit)))
    if unit is Unit.DAYS:
        figures["within_one_day"] = float(np.mean(np.abs(np.floor(value + 0.5) - y) <= 1))
    return figures


def classification_figures(y: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Log loss (probabilities floored at MIN_PROBABILITY, as the server judges outcomes),
    accuracy of the most probable class, and Brier score (sum over classes, row mean)."""
    rows = np.arange(len(y))
    p_true = np.maximum(probabilities[rows, y], MIN_PROBABILITY)
    onehot = np.eye(probabilities.shape[1])[y]
    return {
        "log_loss": float(-np.mean(np.log(p_true))),
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == y)),
        "brier": float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1))),
    }


def conformal_halves(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices split in two seeded halves: (calibration, held out)."""
    order = np.random.default_rng((seed, 1)).permutation(rows)
    calibration = (rows + 1) // 2
    return np.sort(order[:calibration]), np.sort(order[calibration:])


def conformal_half_width(residuals: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest absolute residual of n calibration rows:
    under exchangeability, value +- this holds a new outcome with probability >= coverage."""
    n = len(residuals)
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        raise TooFewRows(n, math.ceil(coverage / (1.0 - coverage)), coverage)
    return float(np.sort(np.abs(residuals))[rank - 1])
