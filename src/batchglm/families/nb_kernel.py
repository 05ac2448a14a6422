"""Fused negative binomial terms: one compiled pass per block instead of about twenty.

:meth:`batchglm.families.nb.NegativeBinomial.derivatives` written with NumPy makes one pass
over the ``(n_obs, F)`` block per operation (about 20 passes for order 2, each reading and
writing arrays of the block's size). Here every observation is visited once and all six
outputs are written from registers: the same formulas in ``q = mu / r`` (see
:mod:`batchglm.families.nb`), the same order of operations, so both paths agree to a few
units in the last place (``tests/test_nb_kernel.py``).

The kernel is compiled by numba on first use (cached on disk) and releases the GIL, so the
fit's threads run it in parallel. :data:`ENABLED` (environment variable ``BATCHGLM_NUMBA=0``
to switch off) selects it; the NumPy path stays the reference and the fallback when numba
is missing or the arrays are not plain 2-D float64 blocks.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Use the compiled kernel where it applies (numba is imported on first use only, so
#: ``import batchglm`` stays fast).
ENABLED = (
    importlib.util.find_spec("numba") is not None and os.environ.get("BATCHGLM_NUMBA", "1") != "0"
)

#: Blocks with fewer entries use the NumPy expressions: loading the compiled kernel costs
#: about 0.5 s once per process (measured on Marioni et al., 5,088 x 10: the first bulk fit
#: took 0.72 s with the kernel and 0.30 s without), more than it saves on small data.
MIN_ENTRIES = 1 << 16


def _terms(
    y: Array,
    eta_loc: Array,
    eta_scale: Array,
    order: int,
    ll: Array,
    d_loc: Array,
    d_scale: Array,
    d2_loc: Array,
    d2_cross: Array,
    d2_scale: Array,
) -> None:  # pragma: no cover - compiled; covered through the wrapper
    n, n_feat = y.shape
    per_obs = eta_scale.shape[0] != 1
    # r once per feature when the scale is shared by all observations (the common case).
    r_row = np.exp(eta_scale[0])
    for i in range(n):
        si = i if per_obs else 0
        for f in range(n_feat):
            es = eta_scale[si, f]
            r = np.exp(es) if per_obs else r_row[f]
            yi = y[i, f]
            log_q = eta_loc[i, f] - es
            q = np.exp(log_q)
            log1p_q = np.log1p(q)
            ll[i, f] = (log_q - log1p_q) * yi - r * log1p_q
            if order == 0:
                continue
            inv = 1.0 / (q + 1.0)
            q_inv = q * inv
            resid = yi - q * r
            dl = resid * inv
            q_inv2 = q_inv * inv
            d_loc[i, f] = dl
            d2_cross[i, f] = resid * q_inv2
            d2_loc[i, f] = -((yi + r) * q_inv2)
            ds = (q_inv - log1p_q) * r - yi * inv
            d_scale[i, f] = ds
            d2_scale[i, f] = q_inv * r + ds + dl * inv


_compiled: list[Callable[..., Any]] = []
_LOCK = threading.Lock()


def _kernel() -> Callable[..., Any]:
    """Return the compiled kernel (numba's on-disk cache makes later processes load it)."""
    with _LOCK:
        if not _compiled:
            from numba import njit

            _compiled.append(njit(cache=True, nogil=True)(_terms))
        return _compiled[0]


def applies(y: Array, eta_loc: Array, eta_scale: Array) -> bool:
    """Tell whether the compiled kernel can evaluate this block.

    Parameters
    ----------
    y, eta_loc : ndarray
        Counts and ``log(mu)`` of the block.
    eta_scale : ndarray
        ``log(r)``, per observation ``(n, F)`` or per feature ``(1, F)``.

    Returns
    -------
    bool
        True for 2-D float64 arrays of the block's shape (``eta_scale`` with 1 or ``n``
        rows) and at least :data:`MIN_ENTRIES` entries, while :data:`ENABLED`.
    """
    if not ENABLED or y.size < MIN_ENTRIES:
        return False
    arrays = (y, eta_loc, eta_scale)
    if any(not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype != np.float64 for a in arrays):
        return False
    n, n_feat = y.shape
    return eta_loc.shape == (n, n_feat) and eta_scale.shape in ((n, n_feat), (1, n_feat))


def nb_terms(
    y: Array, eta_loc: Array, eta_scale: Array, order: int, outputs: tuple[Array, ...]
) -> None:
    """Fill the six NB outputs in one pass over the block.

    Parameters
    ----------
    y : ndarray
        ``(n, F)`` counts.
    eta_loc : ndarray
        ``(n, F)`` natural log of the means.
    eta_scale : ndarray
        ``(n, F)`` or ``(1, F)`` natural log of the size ``r``.
    order : int
        0 for the log-likelihood only (the other outputs are left untouched), 2 for all.
    outputs : tuple of ndarray
        Six ``(n, F)`` float64 arrays ``ll, d_loc, d_scale, d2_loc, d2_cross, d2_scale``
        (see :class:`batchglm.families.Derivatives`).

    Raises
    ------
    RuntimeError
        When the kernel is switched off or numba is not installed (check :func:`applies`).
    """
    if not ENABLED:
        raise RuntimeError(
            "the fused NB kernel needs numba and BATCHGLM_NUMBA unset or 1; check "
            "`nb_kernel.applies` before calling it."
        )
    _kernel()(y, eta_loc, eta_scale, order, *outputs)
