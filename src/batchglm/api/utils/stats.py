"""Seed-era summary statistics for comparing estimates with simulated truth."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mae", "rmsd"]


def rmsd(estim: Any, true: Any, axis: int | tuple[int, ...] | None = None) -> Any:
    """Root mean squared deviation between two arrays.

    Labelled inputs (DataArrays, DataFrames) are compared by position, not aligned by label.

    Parameters
    ----------
    estim : array_like
        Estimated values.
    true : array_like
        Reference values, same shape as ``estim``.
    axis : int or tuple of int, optional
        Axes to average over; all of them by default.

    Returns
    -------
    float or ndarray
        ``sqrt(mean((estim - true) ** 2))``; a float when averaging over all axes.
    """
    diff = np.asarray(estim, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    out = np.sqrt(np.mean(np.square(diff), axis=axis))
    return float(out) if axis is None else out


def mae(estim: Any, true: Any, axis: int | tuple[int, ...] | None = None) -> Any:
    """Mean absolute error between two arrays.

    Parameters
    ----------
    estim : array_like
        Estimated values.
    true : array_like
        Reference values, same shape as ``estim``.
    axis : int or tuple of int, optional
        Axes to average over; all of them by default.

    Returns
    -------
    float or ndarray
        ``mean(abs(estim - true))``; a float when averaging over all axes.
    """
    diff = np.asarray(estim, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    out = np.mean(np.abs(diff), axis=axis)
    return float(out) if axis is None else out
