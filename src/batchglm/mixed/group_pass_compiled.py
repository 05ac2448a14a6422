"""The numba kernels of :mod:`batchglm.mixed.group_pass` (imported on first use only).

Three passes over the observations of a block, each summing per-observation terms into
per-group accumulators (see :mod:`batchglm.mixed.group_pass` for what they compute):
``sums`` (``S1``, ``S2`` of an inner Newton step), ``loglik`` (the value) and ``moments``
(value, derivatives of order one to four times products of design coordinates).

The NB and Poisson expressions they share are ``inline="always"`` functions of this
module: numba inlines them in its own IR, so the compiled loops are the ones written out
before, and their operations run in the same order (results identical to the bit). They
stay in this file on purpose: numba's on-disk cache of a kernel is invalidated by changes
to the kernel's own file only, so a shared expression in another module could keep
running in its old form from the cache (``docs/mixed_model.md``, Speed).

Family terms: :mod:`batchglm.families.nb_kernel` (NB, in ``q = mu / r``),
:mod:`batchglm.mixed.third_derivatives` (orders three and four) and
:meth:`batchglm.families.poisson.Poisson.derivatives`; ``log1p(q)`` is ``log(1 + q)`` for
``q >= 0.01`` (three times faster compiled; relative error below ``2e-14``).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

Array = NDArray[np.float64]

_jit = njit(cache=True, nogil=True)
#: Scalar expressions shared by the kernels, inlined into them by numba.
_inline = njit(cache=True, nogil=True, inline="always")

#: ``log1p(q)`` is evaluated as ``log(1 + q)`` from here on.
LOG1P_BELOW = 1e-2
#: Family codes (``group_pass.FAMILY_CODES``).
NB = 0


@_inline
def _log1p(q: float) -> float:  # pragma: no cover - compiled
    """``log(1 + q)``, by ``log1p`` below :data:`LOG1P_BELOW`."""
    return np.log1p(q) if q < LOG1P_BELOW else np.log(1.0 + q)


@_inline
def _nb_loglik(
    yi: float, eta: float, log_r: float, r: float, log1p_q: float
) -> float:  # pragma: no cover - compiled
    """NB log-likelihood term without the count terms, at ``q = mu / r``."""
    return (eta - log_r - log1p_q) * yi - r * log1p_q


@_inline
def _poisson_loglik(yi: float, eta: float, mu: float) -> float:  # pragma: no cover - compiled
    """Poisson log-likelihood term, saturated at ``mu = y`` (zero at the data)."""
    log_y = np.log(yi) if yi > 0 else 0.0
    return yi * (eta - log_y) - (mu - yi)


@_inline
def _nb_eta_terms(
    yi: float, q: float, r: float
) -> tuple[float, float, float, float, float]:  # pragma: no cover - compiled
    """NB score and weight in ``eta``, and ``1 / (1 + q)``, ``q / (1 + q)``, ``q / (1 + q)^2``."""
    inv = 1.0 / (q + 1.0)
    q_inv = q * inv
    q_inv2 = q_inv * inv
    return (yi - q * r) * inv, -((yi + r) * q_inv2), inv, q_inv, q_inv2


@_jit
def sums(
    family: int,
    y: Array,
    base: Array,
    r_arg: Array,
    index: NDArray[np.intp],
    factor: Array,
    acc: Array,
) -> None:  # pragma: no cover - compiled; covered through GroupPass.sums
    """Add ``S1``, ``S2`` of each ``(group, feature)`` to ``acc`` ``(G, 2, F)``."""
    n, n_feat = y.shape
    per_obs = r_arg.shape[0] != 1
    for i in range(n):
        g = index[i]
        si = i if per_obs else 0
        for f in range(n_feat):
            q = base[i, f] * factor[g, f]
            yi = y[i, f]
            if family == NB:
                d1, d2, _, _, _ = _nb_eta_terms(yi, q, r_arg[si, f])
                acc[g, 0, f] += d1
                acc[g, 1, f] += d2
            else:
                acc[g, 0, f] += yi - q
                acc[g, 1, f] -= q


@_jit
def loglik(
    family: int,
    y: Array,
    base: Array,
    eta_fixed: Array,
    log_r: Array,
    r_arg: Array,
    index: NDArray[np.intp],
    shift: Array,
    factor: Array,
    acc: Array,
) -> None:  # pragma: no cover - compiled; covered through GroupPass.loglik
    """Add the log-likelihood of each ``(group, feature)`` to ``acc`` ``(G, F)``."""
    n, n_feat = y.shape
    per_obs = r_arg.shape[0] != 1
    for i in range(n):
        g = index[i]
        si = i if per_obs else 0
        for f in range(n_feat):
            q = base[i, f] * factor[g, f]
            yi = y[i, f]
            eta = eta_fixed[i, f] + shift[g, f]
            if family == NB:
                acc[g, f] += _nb_loglik(yi, eta, log_r[si, f], r_arg[si, f], _log1p(q))
            else:
                acc[g, f] += _poisson_loglik(yi, eta, q)


@_jit
def moments(
    family: int,
    y: Array,
    base: Array,
    eta_fixed: Array,
    log_r: Array,
    r_arg: Array,
    index: NDArray[np.intp],
    shift: Array,
    factor: Array,
    coords: Array,
    prod_a: NDArray[np.intp],
    prod_b: NDArray[np.intp],
    term: NDArray[np.intp],
    light: bool,
    acc: Array,
) -> None:  # pragma: no cover - compiled; covered through GroupPass.moments
    """Add ``term[k]`` times ``coords[:, prod_a[k]] * coords[:, prod_b[k]]`` to ``acc[:, k]``.

    Terms: 0 ll, 1 d_loc, 2 d_scale, 3-5 d2-d4, 6-8 c2-c4, 9-11 e2-e4; with ``light``
    only ll, d_loc and d2_loc are computed.
    """
    n, n_feat = y.shape
    width = term.size
    per_obs = r_arg.shape[0] != 1
    # Per row: the twelve terms of every feature (``wb``) and the design products of the
    # row.
    wb = np.zeros((12, n_feat))
    prod = np.ones(width)
    for i in range(n):
        g = index[i]
        si = i if per_obs else 0
        for k in range(width):
            prod[k] = coords[i, prod_a[k]] * coords[i, prod_b[k]]
        for f in range(n_feat):
            q = base[i, f] * factor[g, f]
            yi = y[i, f]
            eta = eta_fixed[i, f] + shift[g, f]
            if family == NB:
                r = r_arg[si, f]
                log1p_q = _log1p(q)
                wb[0, f] = _nb_loglik(yi, eta, log_r[si, f], r, log1p_q)
                d1, d2, inv, q_inv, q_inv2 = _nb_eta_terms(yi, q, r)
                wb[1, f] = d1
                wb[3, f] = d2
                if light:
                    continue
                ds = (q_inv - log1p_q) * r - yi * inv
                # Orders three and four as batchglm.mixed.third_derivatives.
                f2 = q_inv2 * (1.0 - q) * inv
                f3 = q_inv2 * ((1.0 - q) * (1.0 - q) - 2.0 * q) * inv * inv
                w = yi + r
                rf1 = r * q_inv2
                rf2 = r * f2
                wf2 = w * f2
                wf3 = w * f3
                wb[2, f] = ds
                wb[4, f] = -wf2
                wb[5, f] = -wf3
                wb[6, f] = (yi - q * r) * q_inv2
                wb[7, f] = wf2 - rf1
                wb[8, f] = wf3 - rf2
                wb[9, f] = q_inv * r + ds + d1 * inv
                wb[10, f] = 2.0 * rf1 - r * q_inv - wf2
                wb[11, f] = 2.0 * rf2 - rf1 - wf3
            else:
                wb[0, f] = _poisson_loglik(yi, eta, q)
                wb[1, f] = yi - q
                wb[3, f] = -q
                wb[4, f] = -q
                wb[5, f] = -q
        ag = acc[g]
        for k in range(width):
            t = prod[k]
            wk = wb[term[k]]
            out = ag[k]
            for f in range(n_feat):
                out[f] += wk[f] * t
