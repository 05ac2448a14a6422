"""Multiple-testing correction that leaves untestable features out."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def bh_qvalues(pvals: ArrayLike) -> Array:
    """Benjamini-Hochberg adjusted p-values (q-values) over the finite p-values.

    Parameters
    ----------
    pvals : array_like
        One p-value per feature; ``NaN`` marks a feature that was not tested (not
        converged, all zero).

    Returns
    -------
    ndarray
        Benjamini & Hochberg (1995) adjusted p-values of the finite entries,
        ``min_{j >= i} min(1, m p_(j) / j)`` for the ``i``-th smallest of ``m`` (as R's
        ``p.adjust(p, "BH")`` and ``scipy.stats.false_discovery_control``);
        ``NaN`` where the p-value is ``NaN``. Untested features do not count towards the
        number of tests, as in DESeq2's independent filtering of all-zero genes.

    Raises
    ------
    ValueError
        When ``pvals`` is not 1-D or has values outside ``[0, 1]`` (NaN allowed).
    """
    p = np.asarray(pvals, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"`pvals` must be 1-D, but it has {p.ndim} dimensions.")
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("`pvals` must lie in [0, 1] (or be NaN for untested features).")
    q = np.full_like(p, np.nan)
    if ok.any():
        q[ok] = _bh(p[ok])
    return q


def _bh(p: Array) -> Array:
    """Benjamini-Hochberg adjustment of finite p-values (same order as ``p``)."""
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out
