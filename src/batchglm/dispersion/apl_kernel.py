"""Compiled Cox-Reid adjusted profile likelihood of one NB dispersion per feature.

:class:`batchglm.dispersion.adjusted_profile.AdjustedProfile` written with NumPy makes about
ten passes over the ``(n_obs, F)`` block per grid point or Newton evaluation (``log1p``,
the weights, the weighted cross-products ``X^T W X``, ``inv``/``solve``/``einsum`` for the
log-determinant's derivatives). With an intercept-only scale model every feature has one
``t = log r``, and the two kernels here visit each observation of a feature once per
evaluation:

* :func:`grid_terms`: for every grid point, ``sum_i (y_i + r n_i) log1p(q_i)`` and
  ``log det(X^T W X)`` (``q = mu / r``, ``W = mu / (1 + q)`` floored as in
  :data:`~batchglm.dispersion.adjusted_profile.W_FLOOR`, ``n`` the cell sizes);
* :func:`newton_terms`: value, first and second derivative in ``t`` of the likelihood's
  affine part and of ``-1/2 log det M`` from one pass accumulating ``M = X^T W X``,
  ``M1 = X^T diag(W') X`` and ``M2 = X^T diag(W'') X``:
  ``d log det M / dt = tr(M^-1 M1)`` and
  ``d2 log det M / dt2 = tr(M^-1 M2) - tr(M^-1 M1 M^-1 M1)`` (the same identities as the
  NumPy path, written with ``h_i = x_i^T M^-1 x_i`` there).

The weights are summed per distinct row of ``X`` first (a design of groups and batches has
a handful), so the ``k x k`` matrices cost ``k (k + 1) / 2`` products per distinct row, not
per observation. The log-determinants come from an LU factorisation with partial pivoting
(``log |det|``, as ``numpy.linalg.slogdet``); where its pivots show ``M`` ill-conditioned
(a pivot below ``1e-6`` of the largest diagonal entry: weights floored at ``1e-10`` in a
separated group next to weights of 1e4), from Gram-Schmidt (twice) on
``diag(sqrt(W)) X``, whose error grows with the condition number and not its square. There
the NumPy path's normal equations lose up to about 2e-4 of ``log det`` and the kernel
agrees with an orthogonal factorisation to about 1e-10 (``tests/test_apl_kernel.py``);
elsewhere the two paths agree to about 1e-12. In the grid, ``log1p`` is a short series
(:func:`batchglm.dispersion.apl_compiled._log1p_unit`, within 2 ulp) that the compiler
vectorises, about 5x faster than the C library's. The count terms ``gammaln(y + r) -
gammaln(r)`` and the prior stay in NumPy (once per distinct count,
:class:`~batchglm.solvers.count_table.CountTable`); the Newton iterations stay in
:func:`batchglm.solvers.newton.solve`: only the evaluation is compiled.

Compiled by numba on first use (cached on disk, GIL released so the passes' threads run in
parallel); :data:`ENABLED` (``BATCHGLM_NUMBA=0`` switches it off) selects it, and the NumPy
path stays the reference and the
fallback without numba. The formulas are the Cox-Reid adjustment (Cox and Reid 1987) as in
edgeR's ``adjustedProfileLik`` and DESeq2's ``fitDisp``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.families import nb_kernel

Array = NDArray[np.float64]

#: Use the compiled kernels where they apply: the switch of the fused NB kernel (numba
#: installed and ``BATCHGLM_NUMBA`` not ``0``).
ENABLED = nb_kernel.ENABLED

#: Blocks with fewer observation-feature entries use the NumPy path: loading the compiled
#: kernels costs a fraction of a second once per process, more than they save on small data.
#: The dispersion passes never cut blocks below this (``estimate._blocks``).
MIN_ENTRIES = 1 << 14


_compiled: list[Any] = []
_LOCK = threading.Lock()


def _kernels() -> Any:
    """Return the module of compiled kernels (numba's on-disk cache loads them later)."""
    with _LOCK:
        if not _compiled:
            from batchglm.dispersion import apl_compiled

            _compiled.append(apl_compiled)
        return _compiled[0]


def applies(n_obs: int, n_feat: int, k_scale: int, n_scale_rows: int) -> bool:
    """Tell whether the compiled kernels evaluate this objective.

    Parameters
    ----------
    n_obs, n_feat : int
        Rows (observations or cells) and features of the block.
    k_scale, n_scale_rows : int
        Columns and distinct rows of the scale design; the kernels need one of each.

    Returns
    -------
    bool
        True while :data:`ENABLED`, for one dispersion per feature and blocks of at least
        :data:`MIN_ENTRIES` entries.
    """
    return ENABLED and k_scale == 1 and n_scale_rows == 1 and n_obs * n_feat >= MIN_ENTRIES


def grid_terms(
    y: Array,
    mu: Array,
    size: Array,
    row_of: NDArray[np.intp],
    rows: Array,
    grid: Array,
    floor: float,
) -> tuple[Array, Array]:
    """Likelihood sums and log-determinants of every feature at every grid point.

    Parameters
    ----------
    y, mu : ndarray
        ``(F, n)`` counts and fitted means, one feature per row (C order).
    size : ndarray
        ``(n,)`` observations per row (cell sizes; ones for plain observations).
    row_of : ndarray of int
        ``(n,)`` index of each row's location-design row in ``rows``.
    rows : ndarray
        ``(n_rows, k)`` distinct rows of the (scaled) location design.
    grid : ndarray
        ``(G,)`` values of ``t = log r``.
    floor : float
        Smallest working weight.

    Returns
    -------
    like : ndarray
        ``(G, F)`` ``sum_i (y_i + r n_i) log1p(mu_i / r)``.
    logdet : ndarray
        ``(G, F)`` ``log |det X^T W X|``.
    """
    n_feat = y.shape[0]
    like = np.empty((grid.size, n_feat))
    logdet = np.empty((grid.size, n_feat))
    _kernels().grid(y, mu, size, row_of, rows, grid, floor, like, logdet)
    return like, logdet


def newton_terms(
    y: Array,
    mu: Array,
    size: Array,
    row_of: NDArray[np.intp],
    rows: Array,
    t: Array,
    floor: float,
    order: int,
    magnitude: bool,
    *,
    log_mu: Array,
    counts: tuple[Array, Array, NDArray[np.intp]] | None = None,
) -> Array:
    """Value, derivatives in ``t`` and magnitude of the APL's non-count terms per feature.

    Parameters
    ----------
    y, mu, size, row_of, rows, floor
        As :func:`grid_terms`.
    t : ndarray
        ``(F,)`` ``log r`` per feature.
    order : int
        0, 1 or 2: derivatives computed (columns above ``order`` are left unset).
    magnitude : bool
        Sum the size of the terms (rounding noise); unset otherwise.
    log_mu : ndarray
        ``(F, n)`` natural log of ``mu`` (kept by the caller across evaluations).
    counts : tuple of ndarray, optional
        ``(values, multiplicities, offsets)``: the distinct positive counts of feature
        ``f`` are ``values[offsets[f]:offsets[f + 1]]``. Given, the count terms
        ``gammaln(y + r) - gammaln(r)`` (and their derivatives, and their size in the
        magnitude) are added in the same call.

    Returns
    -------
    ndarray
        ``(F, 4)``: ``sum_{y > 0} y (log q - log1p q) - sum r n log1p q - 1/2 log|det M|``,
        its first and second derivative in ``t``, and the magnitude
        ``sum y (|log q| + log1p q) + r n log1p q + 1/2 |log det M|``.
    """
    out = np.full((y.shape[0], 4), np.nan)
    compiled = _kernels()
    compiled.newton(y, mu, log_mu, size, row_of, rows, t, floor, order, magnitude, out)
    if counts is not None:
        compiled.count_sums(*counts, t, order, out)
    return out
