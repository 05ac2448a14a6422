"""Shared checks of observed values against a family's domain."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def first_offender(bad: NDArray[np.bool_]) -> tuple[int, int]:
    """Return ``(obs, feature)`` of the first ``True`` entry in row-major order.

    Parameters
    ----------
    bad : ndarray of bool
        Mask of offending entries, shape ``(n_obs, n_features)``.

    Returns
    -------
    tuple of int
        Observation and feature index.
    """
    flat = int(np.argmax(bad.ravel()))
    obs, feat = np.unravel_index(flat, bad.shape)
    return int(obs), int(feat)


def check_finite(y: NDArray[np.float64], feature_offset: int = 0) -> None:
    """Raise ``ValueError`` when ``y`` has NaN or infinite values.

    Parameters
    ----------
    y : ndarray
        Observations, shape ``(n_obs, n_features)``.
    feature_offset : int
        Position of the block's first feature in the data, for messages.

    Raises
    ------
    ValueError
        When a value is NaN or infinite.
    """
    bad = ~np.isfinite(y)
    if bad.any():
        i, j = first_offender(bad)
        raise ValueError(
            f"`data` must be finite, but it has {int(bad.sum())} NaN or infinite values; "
            f"the first is {float(y[i, j])!r} at observation {i}, "
            f"feature {j + feature_offset}."
        )


def check_counts(y: NDArray[np.float64], family: str, feature_offset: int = 0) -> None:
    """Raise ``ValueError`` unless ``y`` holds non-negative integers.

    Parameters
    ----------
    y : ndarray
        Observations, shape ``(n_obs, n_features)``.
    family : str
        Family name, for the message.
    feature_offset : int
        Position of the block's first feature in the data, for messages.

    Raises
    ------
    ValueError
        When a value is negative or not an integer.
    """
    check_finite(y)
    bad = y < 0
    if bad.any():
        i, j = first_offender(bad)
        raise ValueError(
            f"family {family!r} needs non-negative counts, but `data` has "
            f"{int(bad.sum())} negative values; the first is {float(y[i, j])!r} at "
            f"observation {i}, feature {j + feature_offset}."
        )
    bad = y != np.floor(y)
    if bad.any():
        i, j = first_offender(bad)
        raise ValueError(
            f"family {family!r} needs integer counts, but `data` has {int(bad.sum())} "
            f"non-integer values; the first is {float(y[i, j])!r} at observation {i}, "
            f"feature {j + feature_offset}. "
            "Pass raw counts, not normalised values."
        )
