"""Figures a model version is described by, per kind: the metrics of a manifest and the
split-conformal interval of a point regressor. Pure numpy; training and import share it.
"""

from __future__ import annotations

import math

import numpy as np

from models.artifact import ConformalInterval, Unit
from models.kinds import MIN_PROBABILITY

# Fewer calibration rows than this give an interval too coarse to state: with n rows
# the coverage guarantee is only in steps of 1 / (n + 1).
MIN_CALIBRATION_ROWS = 20


def short(value: float) -> float:
    """Six significant digits: the manifest stays readable and small."""
    return float(f"{value:.6g}")


def regression_metrics(y: np.ndarray, predicted: np.ndarray, unit: Unit,
                       lower: np.ndarray | None = None, upper: np.ndarray | None = None,
                       baseline: np.ndarray | None = None) -> dict[str, float]:
    """MAE, RMSE, bias and (with an interval) coverage; within one day for days."""
    error = predicted - y
    figures = {"mae": float(np.mean(np.abs(error))),
               "rmse": float(np.sqrt(np.mean(error ** 2))),
               "bias": float(np.mean(error))}
    if lower is not None and upper is not None:
        figures["interval_coverage"] = float(np.mean((y >= lower) & (y <= upper)))
    if unit is Unit.DAYS:
        figures["within_one_day"] = float(np.mean(np.abs(np.floor(predicted + 0.5) - y) <= 1))
    if baseline is not None:
        figures["baseline_mae"] = float(np.mean(np.abs(baseline - y)))
    return {key: short(value) for key, value in figures.items()}


def classification_metrics(actual: np.ndarray, proba: np.ndarray,
                           prior: np.ndarray | None = None) -> dict[str, float]:
    """Log loss, accuracy and Brier score of class probabilities against class indices;
    with ``prior`` (class shares), the log loss of always answering the prior."""
    rows = np.arange(len(actual))
    onehot = np.zeros_like(proba)
    onehot[rows, actual] = 1.0
    figures = {
        "log_loss": float(np.mean(-np.log(np.maximum(proba[rows, actual], MIN_PROBABILITY)))),
        "accuracy": float(np.mean(np.argmax(proba, axis=1) == actual)),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
    }
    if prior is not None:
        figures["baseline_log_loss"] = float(
            np.mean(-np.log(np.maximum(prior[actual], MIN_PROBABILITY))))
    return {key: short(value) for key, value in figures.items()}


def conformal_interval(y: np.ndarray, predicted: np.ndarray, coverage: float,
                       seed: int) -> ConformalInterval | None:
    """Split conformal on rows the model was not fitted on: a seeded half calibrates the
    half width, the other half measures the coverage it reaches. None with too few rows."""
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    calibrate, hold_out = order[: (n + 1) // 2], order[(n + 1) // 2:]
    if len(calibrate) < MIN_CALIBRATION_ROWS:
        return None
    residuals = np.sort(np.abs(y[calibrate] - predicted[calibrate]))
    rank = math.ceil((len(residuals) + 1) * coverage)
    if rank > len(residuals):  # too few rows for this coverage: the interval would be infinite
        return None
    half_width = float(residuals[rank - 1])
    held = None
    if len(hold_out):
        inside = np.abs(y[hold_out] - predicted[hold_out]) <= half_width
        held = short(float(np.mean(inside)))
    return ConformalInterval(coverage=coverage, half_width=half_width,
                             calibration_rows=len(calibrate), held_out_coverage=held,
                             held_out_rows=len(hold_out))
