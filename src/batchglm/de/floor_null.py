"""Null means of the zero-side floor: the full fit projected onto the reduced model.

The exact conditional test of a separated feature's zeros (:mod:`batchglm.de.zero_side`)
needs the means of every observation under the null. :func:`floor_null_means` takes the
full fit's means and removes the tested effect by a least-squares projection of the
linear predictor onto the reduced model, fitted on the observations that are not on the
zero side; it falls back to the reduced fit's means where that is not possible (no
residual df on the expressed side, non-finite projections).
:func:`zeros_explained_by_null` finds features whose zeros the reduced fit puts at 0 as
well (then the zeros carry no evidence and there is no floor). Used by
:mod:`batchglm.de.separated_tests` for the Wald, LRT and QL floors
(``docs/validation.md``, "Separated genes").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.de.separation import separated_in_direction
from batchglm.de.zero_side import zero_side
from batchglm.fitted import linear_predictors
from batchglm.result import FitResult

Array = NDArray[np.float64]

#: Elements of one (observations x features) block of the projection.
_PROJECTION_CHUNK_ELEMENTS = 1 << 22


def zeros_explained_by_null(
    mu_full: Array, mu_reduced: Array, kept: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """Features whose reduced fit also puts every zero-side observation at zero.

    Parameters
    ----------
    mu_full, mu_reduced : ndarray
        ``(n_obs, F)`` means of the full and the reduced fit.
    kept : ndarray of bool, optional
        ``(n_obs, F)`` observations that count (weight 1); ``None``: all.

    Returns
    -------
    ndarray of bool
        ``(F,)``: True where each observation on the full fit's zero side
        (:func:`batchglm.de.zero_side.zero_side`) is on the reduced fit's zero side too.
        Nuisance effects then explain the zeros under the null as well: they carry no
        evidence on the tested effect, the likelihood ratio rests on the other
        observations, and no floor applies.
    """
    counted = np.ones(mu_full.shape, dtype=bool) if kept is None else np.asarray(kept, bool)
    z_full = zero_side(np.where(counted, mu_full, 0.0)) & counted
    z_red = zero_side(np.where(counted, mu_reduced, 0.0)) & counted
    return np.asarray(np.all(~z_full | z_red, axis=0))


def floor_null_means(
    res: FitResult,
    features: NDArray[np.intp],
    l_free: Array,
    kept: NDArray[np.bool_] | None = None,
    fallback: Array | None = None,
) -> Array:
    """Null means of the zero-side floor: the full fit projected onto ``L theta = 0``.

    Parameters
    ----------
    res : FitResult
        The full (separated) fit of the test, NB or Poisson.
    features : ndarray of int
        Positions of its features to use.
    l_free : ndarray
        Tested rows over the free location parameters, ``L C``, shape ``(r, k)``.
    kept : ndarray of bool, optional
        ``(n_obs, len(features))`` observations that count (weight 1); others get no
        weight in the projection. ``None``: all.
    fallback : ndarray, optional
        ``(n_obs, len(features))`` means used instead (the reduced fit's) for features whose
        null parameters the other side cannot estimate with a residual degree of freedom
        left, or whose projected means are not finite (see Notes).

    Returns
    -------
    ndarray
        ``(n_obs, len(features))`` means ``g^-1(x theta_0 + offset)`` (size factors and the
        fit's offset included), with ``theta_0`` the point of ``{theta : L theta = 0}``
        closest to the full fit's ``theta`` in the full fit's Fisher information metric:
        the weighted least-squares fit of the full fit's linear predictor by the null
        design, weights ``mu / (1 + alpha mu)`` (NB; ``mu`` for Poisson).

    Notes
    -----
    A separated fit's coefficients run to infinity along a direction that only the zero
    side informs, but its linear predictor on the other observations is finite, and so are
    its covariate (nuisance) effects, which the zero side does not pull: there the fitted
    means are about 0 and carry no weight. The projection keeps those effects and puts the
    zero side at the mean the null model gives it (for ``~ covariates + condition`` with
    one condition all zero: the other condition's level at each zero-side sample's
    covariates). The reduced maximum-likelihood fit instead bends the nuisance effects
    towards the zeros, which makes them look plausible and the floor conservative
    (``docs/validation.md``, "Separated genes"). Weights are floored at ``1e-8`` times a
    feature's largest, so that null parameters which only zero-side observations inform
    (a second all-zero group) follow the full fit there (means about 0) instead of being
    left undetermined; elsewhere that floor moves ``theta_0`` by about ``1e-7``.
    Memory: ``(features x observations x null parameters)`` per chunk of features.

    The premise fails when the other side has no residual degree of freedom for the null
    parameters (4 expressed samples and ``~ batch + RIN + age`` besides the condition: the
    nuisance effects interpolate those 4 samples exactly, and extrapolated to the zero side
    they gave null means from 1e-11 to 1e18, and NaN p-values for clear on/off genes). Such
    features take ``fallback`` (the reduced fit's means, the conservative choice). So do
    features whose other side the full model interpolates exactly (no residual df after the
    full model's parameters, :mod:`batchglm.de.zero_fitted_df`): their nuisance effects were
    bent to fit those observations and the zeros, not estimated from a residual (a null gene
    ``1 1 15 26 / 0 10 0 0`` under ``~ batch + RIN + age + condition`` got null means that
    put its floor at 1.7e-5 instead of 0.047; ``docs/validation.md``, "Covariate-separated
    genes").
    """
    k = res.loc.n_free
    _, s, vt = np.linalg.svd(l_free, full_matrices=True)
    rank = int((s > 1e-10 * max(s.max(initial=0.0), 1e-300)).sum())
    xc = res.loc.reduced  # (n, k)
    x_null = xc @ vt[rank:].T  # (n, p): the null model's free directions
    eta, eta_scale = linear_predictors(res, features)
    mu = res.family.fitted_mean(eta)
    if res.family == "nb":
        alpha = np.exp(-np.clip(eta_scale, *res.family.scale_bounds))
        w = mu / (1.0 + alpha * mu)
    else:
        w = mu.copy()
    counted = np.ones(w.shape, dtype=bool) if kept is None else np.asarray(kept, dtype=bool)
    w = np.where(counted, w, 0.0)
    w = np.where(counted, np.maximum(w, 1e-8 * w.max(axis=0, keepdims=True)), 0.0)
    target = xc @ res.theta_free[features, :k].T  # (n, F): predictor without offsets
    if x_null.shape[1] == 0:
        # The null fixes every location parameter at 0.
        return np.asarray(res.family.fitted_mean(eta - target))
    out = np.empty_like(mu)
    # Other side: counted observations the full fit does not drive to 0.
    other = counted & ~zero_side(np.where(counted, mu, 0.0))
    usable = np.ones(features.size, dtype=bool)
    step = max(1, _PROJECTION_CHUNK_ELEMENTS // (x_null.shape[1] * max(xc.shape[0], 1)))
    for start in range(0, features.size, step):
        part = slice(start, start + step)
        sw = np.sqrt(w[:, part]).T  # (f, n)
        a = sw[:, :, None] * x_null[None]  # (f, n, p)
        q, r_mat = np.linalg.qr(a)
        rhs = np.einsum("fnp,fn->fp", q, sw * target[:, part].T)
        g = np.einsum("fpq,fq->fp", np.linalg.pinv(r_mat, rcond=1e-10), rhs)
        shift = x_null @ g.T - target[:, part]  # (n, f): theta_0 - theta on the predictor
        out[:, part] = res.family.fitted_mean(eta[:, part] + shift)
        if fallback is not None:
            # A residual df left on the other side after the null's parameters, and after
            # the full model's (see Notes).
            n_other = other[:, part].sum(axis=0)
            rank = np.linalg.matrix_rank(other[:, part].T[:, :, None] * x_null[None])
            rank_full = np.linalg.matrix_rank(other[:, part].T[:, :, None] * xc[None])
            usable[part] = (n_other - rank >= 1) & (n_other - rank_full >= 1)
    if fallback is not None:
        # The projection's premise (the zero side informs the tested direction only) holds
        # where the separation is in the tested direction.
        usable &= separated_in_direction(res, l_free)[features]
        usable &= np.all(np.isfinite(out), axis=0)
        out = np.where(usable[None, :], out, fallback)
    return out
