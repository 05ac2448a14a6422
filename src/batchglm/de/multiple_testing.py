"""Multiple-testing correction that leaves untestable features out."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import false_discovery_control

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
        ``scipy.stats.false_discovery_control(p, method="bh")`` on the finite entries;
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
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q
