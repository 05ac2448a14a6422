"""A conditional negative binomial floor for the p-values of separated features.

A feature separated in the tested direction has only zeros on one side (the observations
whose fitted mean the full fit drives to 0). Its likelihood-ratio (or QL F) statistic is
referred to an asymptotic distribution, an approximation that fails for a handful of
reads: on Marioni et al.'s kidney/liver table, genes with 3 reads, all in one liver sample,
got p = 0.05 (DESeq2's Wald test: 0.34).

The floor is the exact conditional test of the observed separation, edgeR's ``exactTest``
idea (Robinson and Smyth 2008, *Biostatistics* 9: 321-332: condition on the total count),
used only as a lower bound. Under the null model the counts are gamma-Poisson:
``y_j | lambda_j ~ Poisson(lambda_j)``, ``lambda_j ~ Gamma(shape 1 / alpha_j, mean mu0_j)``
(``mu0`` the null means, size factors and nuisance effects included, see **Inputs**; ``alpha``
the NB dispersion the test uses). Given the feature's total ``T``, the probability that
no read falls on the zero side ``Z`` (the other observations: ``N``) is
``P = P(Y_Z = 0, Y_N = T) / P(Y_Z + Y_N = T)``, and the floor is ``min(1, 2 P)``
(two-sided). A gene whose few reads sit on one side cannot be more significant than the
sampling of those reads allows; over-dispersed reads clump in one sample, which makes
"all T reads on one side" much likelier than under Poisson sampling.

**Computation.** ``P = P(Y_Z = 0) P(Y_N = T) / P(Y = T)`` with independent NB counts
``Y_j ~ NB(r_j = 1 / alpha_j, q_j = alpha_j mu0_j / (1 + alpha_j mu0_j))``. The generating
function of a sum of them is ``prod_j (1 - q_j)^r_j (1 - q_j z)^-r_j``, so with ``h_t`` the
coefficients of ``exp(sum_k c_k z^k)``, ``c_k = sum_j r_j q_j^k / k`` (``t h_t = sum_{k <= t}
k c_k h_{t-k}``, ``h_0 = 1``), ``P`` is ``h_T`` over the other side's observations divided by
``h_T`` over all of them: exact, with positive terms only, in ``O(T^2)`` operations per
feature. Up to :data:`EXACT_TOTAL_MAX` reads (and :data:`EXACT_WORK_MAX` observations times
reads) it is computed so (agrees with the convolution
of per-sample NB probabilities to 1e-13). Above, ``P(Y_N = T)`` and ``P(Y = T)`` are
second-order saddlepoint approximations of the two sums and ``P(Y_Z = 0) = prod_Z (1 +
alpha mu0)^(-1 / alpha)`` is exact; against the convolution (150 random layouts, means
spread over two orders of magnitude within a side, totals 257-6600) the ratio lies in
0.985-1.014 for dispersions up to 1, 0.95-1.05 up to 2 and 0.78-1.16 up to 6, where one
sample with an NB shape below 0.5 dominates. There is no cap on the total. ``P`` need not
decrease with ``T``: a very large total most likely comes from the sample with the
heaviest tail (the largest ``alpha mu0``), and when that sample is off the zero side ``P``
tends to a positive limit. With equal
means and one dispersion ``P`` is the beta-binomial (Dirichlet-multinomial) probability
``B(k_N + T, k_Z) / B(k_N, k_Z)``, ``k = n / alpha``; as ``alpha -> 0`` it tends to the
Poisson value ``(1 - q)^T``, ``q = sum_Z mu0 / sum mu0`` (the binomial test of the split).

**Why not a moment-matched gamma.** Until this version each side's sum of intensities was
replaced by the gamma with the same mean and variance (shape ``(sum mu0)^2 / sum alpha
mu0^2``), which gave a closed form, and totals above 2000 were evaluated at 2000. Near zero
a sum of independent gammas behaves like a gamma of the summed shapes (``n_Z / alpha``),
not of the moment-matched shape, which is much smaller when the means within a side are
unequal; "no read on the zero side" is exactly that left tail. Covariates make it so: a
user's on/off gene (ctrl 3, 1973, 1265, 1176, 551; A all zero; B about 1000; ``~ batch +
RIN + age + condition``, MAP dispersion 1.53) had reduced-fit means 16-2839 on its five
zero samples, a moment-matched shape 0.81 instead of 3.3, ``P(Y_Z = 0)`` 1.2e-3 instead of
the exact 3.3e-8, and a floor of 0.012 where the exact conditional value is 1.0e-7 (the
likelihood ratio alone: 1.2e-10); B vs A 2.1e-4, exactly 5.6e-6
(``tests/test_zero_side_unequal.py``).

**Inputs** (:func:`batchglm.de.separated_tests.null_dispersion`): the dispersion is the one the
test's statistic uses (the full fit's MLE, MAP or trended value; QL-inflated for QL
tests), never the reduced fit's, which an on/off gene inflates by explaining its zeros as
clumping. The null means (:func:`batchglm.de.floor_null.floor_null_means`) are the full
fit projected onto the null ``L theta = 0`` in its Fisher information metric: its
covariate (nuisance) effects, which the zero side (fitted means about 0) does not
inform, with the zero side at the level the null model gives it there. Until this version
they were the reduced ML fit's, the null the likelihood ratio is computed at; with many
nuisance parameters that fit bends a covariate towards the zeros (means 0.1-75 on a zero
side next to 31000 for a sample with 1552 reads), which makes the zeros plausible and the
plug-in floor very conservative: a user's on/off genes (``~ batch + RIN + age +
condition``, one on-side sample with 1 read) got Wald p 0.003-0.013 (floor-bound) against
a likelihood ratio of 2e-9 to 2e-7 (DESeq2 4e-9 to 2e-6); now 2e-9 to 2e-7. On simulated
null genes with 1-5 reads in one condition (5 vs 5 and 8 vs 8, with and without raw-scale
covariates) no Wald, LRT or QL p-value falls below 0.05 now (before: 0.002-0.005 with
covariates); separated null genes with 6-50 reads are rejected more often with covariates
(Wald 0.10 -> 0.18 and 0.04 -> 0.14), as often as without them
(``benchmarks/separated_floor_null_means.py``, ``docs/validation.md``, "Separated genes").

With other free groups or covariates the floor conditions on the feature's total only
(not on the nuisance parameters' sufficient statistics): an approximation to the exact
conditional test, never used as the test itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from batchglm.families import nb_kernel

Array = NDArray[np.float64]

#: Observations whose full-fit mean is below this fraction of the feature's largest fitted
#: mean are on the zero side (separated fits drive them to about 1e-8 and below).
ZERO_SIDE_RTOL = 1e-6

#: Totals up to this count are computed exactly (a recursion with ``O(T^2)`` operations per
#: feature); larger ones by the saddlepoint approximation (within 1.5 % of the exact value
#: for dispersions up to 1, module docstring; ``tests/test_zero_side_unequal.py``).
EXACT_TOTAL_MAX = 256

#: ... and only while ``n_obs * (T + 1)`` stays below this: the recursion's power sums cost
#: ``n_obs * T`` per feature, which for single-cell tables (tens of thousands of cells, many
#: separated features in marker tests) would cost seconds to minutes. There the saddlepoint
#: sums thousands of terms and is at its most accurate.
EXACT_WORK_MAX = 1 << 18

#: Dispersions below this are the Poisson limit (``k`` up to about 1e12 times the mean).
_ALPHA_MIN = 1e-12

#: Elements of one (features x reads) block of the exact recursion.
_CHUNK_ELEMENTS = 1 << 20

#: The exact recursion rescales a feature's coefficients when they leave
#: ``[1 / _RESCALE, _RESCALE]``.
_RESCALE = 1e150

#: Newton steps of the saddlepoint equation (safeguarded by bisection; about 10 are used).
_NEWTON_STEPS = 200


def zero_side_floor(
    total: Array, mu_full: Array, mu_reduced: Array, dispersion: ArrayLike | None = None
) -> Array:
    """Two-sided conditional NB p-value of "no read on the zero side", per feature.

    Parameters
    ----------
    total : ndarray
        ``(F,)`` total count of each feature over the fit's observations.
    mu_full : ndarray
        ``(n_obs, F)`` fitted means of the full (separated) fit, size factors included.
    mu_reduced : ndarray
        ``(n_obs, F)`` means of the null model (``L theta = 0``), likewise; the tests use
        :func:`batchglm.de.floor_null.floor_null_means` (the full fit's projection).
    dispersion : array_like, optional
        NB dispersion ``alpha`` (``var = mu + alpha mu^2``) of the null model, broadcastable
        to ``(n_obs, F)``: one per feature (``(F,)``) or per observation and feature.
        ``None`` (or 0) is the Poisson limit.

    Returns
    -------
    ndarray
        ``(F,)`` ``min(1, 2 P)`` with ``P`` the conditional probability, given ``total``,
        that the zero side gets no read under the null means (module docstring); 0 (no
        floor) where no observation is on the zero side, 1 where the null puts no mean
        there.

    Raises
    ------
    ValueError
        If ``dispersion`` is negative or not finite somewhere.

    Notes
    -----
    Source: the conditional (on the total) test of Robinson and Smyth (2008, edgeR's
    ``exactTest``), here for "all reads off the zero side", computed exactly from the
    probability generating function of the sum of independent NB counts up to
    :data:`EXACT_TOTAL_MAX` reads and by the saddlepoint approximation (Daniels 1954,
    *Ann. Math. Stat.* 25: 631-650; second-order form, Butler 2007, *Saddlepoint
    Approximations with Applications*, section 2.2) above; its ``alpha -> 0`` limit is the
    exact binomial comparison of two Poisson rates (Przyborowski and Wilenski 1940,
    *Biometrika* 31: 313-323).
    """
    mu_full = np.asarray(mu_full, dtype=np.float64)
    mu_reduced = np.asarray(mu_reduced, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64).ravel()
    alpha = np.zeros(1) if dispersion is None else np.asarray(dispersion, dtype=np.float64)
    if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
        raise ValueError(
            "`dispersion` must be finite and non-negative, but it has "
            f"{int(np.sum(~np.isfinite(alpha) | (alpha < 0)))} value(s) that are not."
        )
    zero = zero_side(mu_full)
    m_z = np.where(zero, mu_reduced, 0.0).sum(axis=0)
    m_n = np.where(zero, 0.0, mu_reduced).sum(axis=0)
    has_zero = zero.any(axis=0)
    out = np.where(has_zero, 1.0, 0.0)
    # Features with a zero side, reads, and mean on both sides; elsewhere P = 1 (no mean on
    # the zero side, or no read) or P = 0 (no mean off it: certain).
    live = has_zero & (total > 0) & (m_z > 0) & (m_n > 0)
    out[has_zero & (total > 0) & (m_z > 0) & ~(m_n > 0)] = 0.0
    idx = np.flatnonzero(live)
    if idx.size and not np.any(alpha > 0):
        # Poisson: the binomial probability that all T reads miss the zero side.
        share = m_z[idx] / (m_z[idx] + m_n[idx])
        out[idx] = np.minimum(1.0, 2.0 * np.exp(total[idx] * np.log1p(-share)))
    elif idx.size:
        a = np.broadcast_to(np.maximum(alpha, _ALPHA_MIN), mu_reduced.shape)[:, idx]
        log_p = _log_no_read_probability(
            np.rint(total[idx]), mu_reduced[:, idx], np.ascontiguousarray(a), zero[:, idx]
        )
        out[idx] = np.minimum(1.0, 2.0 * np.exp(np.minimum(log_p, 0.0)))
    return out


def zero_side(mu_full: Array) -> NDArray[np.bool_]:
    """Observations on the zero side: full-fit mean below :data:`ZERO_SIDE_RTOL` of the largest.

    Parameters
    ----------
    mu_full : ndarray
        ``(n_obs, F)`` the full fit's means.

    Returns
    -------
    ndarray of bool
        ``(n_obs, F)``.
    """
    return np.asarray(mu_full < ZERO_SIDE_RTOL * mu_full.max(axis=0, keepdims=True))


def _log_no_read_probability(t: Array, mu: Array, alpha: Array, zero: NDArray[np.bool_]) -> Array:
    """``log P`` of the module docstring; ``mu``, ``alpha`` and ``zero`` are ``(n, F)``."""
    # NB(r, q): P(y) = C(y + r - 1, y) (1 - q)^r q^y with r = 1 / alpha, q = alpha mu / (1 +
    # alpha mu); q = 0 (no mean) contributes nothing.
    r = 1.0 / alpha
    q = alpha * mu / (1.0 + alpha * mu)
    out = np.empty(t.size)
    small = (t <= EXACT_TOTAL_MAX) & (mu.shape[0] * (t + 1.0) <= EXACT_WORK_MAX)
    if np.any(small):
        s = np.flatnonzero(small)
        out[s] = _log_ratio_exact(t[s], r[:, s], q[:, s], ~zero[:, s])
    if not np.all(small):
        # Columns by a slice when every feature is large (single-cell tables): no copies.
        b = slice(None) if not np.any(small) else np.flatnonzero(~small)
        zb, rb, qb = zero[:, b], r[:, b], q[:, b]
        # log P(Y_Z = 0) = sum_Z r log(1 - q) = -sum_Z r log1p(alpha mu).
        log_p0 = (rb * np.log1p(-np.where(zb, qb, 0.0))).sum(0)
        saddle = _saddlepoint_function(zero.size)
        others = saddle(t[b], rb, qb, ~zb)
        every = saddle(t[b], rb, qb, np.ones_like(zb))
        out[b] = log_p0 + others - every
    return out


def _log_ratio_exact(t: Array, r: Array, q: Array, other: NDArray[np.bool_]) -> Array:
    """``log P(Y_N = t) P(Y_Z = 0) / P(Y = t)`` by the recursion of the generating function.

    The generating function of a sum of independent NB counts is ``prod_j (1 - q_j)^r_j (1 -
    q_j z)^-r_j``; its logarithm is ``const + sum_k c_k z^k`` with ``c_k = sum_j r_j q_j^k /
    k``, and the coefficients ``h`` of ``exp(sum_k c_k z^k)`` satisfy ``t h_t = sum_{k=1}^t
    k c_k h_{t-k}``, ``h_0 = 1``: all terms positive, so no cancellation. ``P`` is ``h_t``
    of the other side over ``h_t`` of all observations (the constants cancel). ``z`` is
    scaled by ``w`` (the same for both, so ``w^t`` cancels) to keep ``h`` in range.
    """
    out = np.empty(t.size)
    order = np.argsort(t)
    t_max = int(t.max())
    # Both the (n, 2f) power sums and the (2f, T + 1) coefficients stay within one chunk.
    step = max(1, _CHUNK_ELEMENTS // (2 * max(t_max + 1, r.shape[0])))
    for start in range(0, t.size, step):
        part = order[start : start + step]
        tp = t[part].astype(np.intp)
        k_max = int(tp.max())
        rp, qp = r[:, part], q[:, part]
        # w: the tilt that puts the Poisson-approximate mean at t, with q w <= 1.
        c1 = (rp * qp).sum(axis=0)
        w = np.minimum(tp / c1, 1.0 / qp.max(axis=0))
        qw = qp * w
        rows = np.concatenate([np.where(other[:, part], rp, 0.0), rp], axis=1)  # (n, 2f)
        qw2 = np.concatenate([qw, qw], axis=1)
        kc = np.empty((rows.shape[1], k_max + 1))  # k c_k = sum_j r_j (q_j w)^k
        kc[:, 0] = 0.0
        power = np.ones_like(qw2)
        for k in range(1, k_max + 1):
            power = power * qw2
            kc[:, k] = (rows * power).sum(axis=0)
        h = np.zeros((rows.shape[1], k_max + 1))
        h[:, 0] = 1.0
        log_scale = np.zeros(rows.shape[1])
        want = np.concatenate([tp, tp])
        got = np.zeros(rows.shape[1])
        for k in range(1, k_max + 1):
            h[:, k] = np.einsum("ij,ij->i", kc[:, 1 : k + 1], h[:, k - 1 :: -1]) / k
            off = (h[:, k] > _RESCALE) | (h[:, k] < 1.0 / _RESCALE)
            if np.any(off):
                scale = h[off, k]
                h[off, : k + 1] /= scale[:, None]
                log_scale[off] += np.log(scale)
            done = want == k
            if np.any(done):
                got[done] = np.log(h[done, k]) + log_scale[done]
        f = part.size
        out[part] = got[:f] - got[f:]
    return out


def _saddlepoint_function(size: int) -> Callable[..., Array]:
    """Pick the compiled saddlepoint for blocks of at least ``MIN_ENTRIES`` entries, else NumPy."""
    if not (nb_kernel.ENABLED and size >= nb_kernel.MIN_ENTRIES):
        return _log_saddlepoint_pmf
    from batchglm.de.zero_side_compiled import log_saddlepoint_pmf

    def compiled(t: Array, r: Array, q: Array, mask: NDArray[np.bool_]) -> Array:
        out = np.empty(t.size)
        log_saddlepoint_pmf(
            np.ascontiguousarray(t, dtype=np.float64),
            np.ascontiguousarray(r, dtype=np.float64),
            np.ascontiguousarray(q, dtype=np.float64),
            np.ascontiguousarray(mask, dtype=np.bool_),
            _NEWTON_STEPS,
            out,
        )
        return out

    return compiled


def _log_saddlepoint_pmf(t: Array, r: Array, q: Array, mask: NDArray[np.bool_]) -> Array:
    """``log P(sum_{mask} Y_j = t)`` for independent ``Y_j ~ NB(r_j, q_j)``, second order.

    The cumulant generating function is ``K(s) = sum_j r_j (log(1 - q_j) - log(1 - q_j
    e^s))``; the saddlepoint ``s`` solves ``K'(s) = t`` and ``P(t) ~ exp(K(s) - s t) /
    sqrt(2 pi K''(s)) (1 + kappa_4 / 8 - 5 kappa_3^2 / 24)``.
    """
    r = np.where(mask & (q > 0), r, 0.0)
    with np.errstate(divide="ignore"):
        log_q = np.where(r > 0, np.log(q), -np.inf)
    q_max = np.exp(log_q.max(axis=0))
    c1 = (r * np.where(r > 0, q, 0.0)).sum(axis=0)
    # K'(s) lies between e^s c1 and e^s c1 / (1 - q_max e^s): a bracket of the root.
    hi = np.minimum(-np.log(q_max), np.log(t / c1))
    lo = np.log(t / (c1 + t * q_max))
    # Start at the Poisson root log(t / c1) (exact as q -> 0; thousands of small-mean cells)
    # where it lies inside the bracket; iterate only on features not yet converged.
    s = np.log(t / c1)
    s = np.where((s > lo) & (s < hi), s, 0.5 * (lo + hi))
    active = np.arange(s.size)
    for _ in range(_NEWTON_STEPS):
        sa, lq, ra = s[active], log_q[:, active], r[:, active]
        u = np.exp(lq + sa)
        v = u / (1.0 - u)
        k1 = (ra * v).sum(axis=0)
        k2 = (ra * v / (1.0 - u)).sum(axis=0)
        above = k1 > t[active]
        hi[active] = np.where(above, sa, hi[active])
        lo[active] = np.where(above, lo[active], sa)
        new = sa - (k1 - t[active]) / k2
        new = np.where((new > lo[active]) & (new < hi[active]), new, 0.5 * (lo + hi)[active])
        s[active] = new
        moving = np.abs(new - sa) > 1e-14 * np.maximum(1.0, np.abs(sa))
        active = active[moving]
        if active.size == 0:
            break
    u = np.exp(log_q + s)
    big_k = (r * (np.log1p(-np.where(r > 0, q, 0.0)) - np.log1p(-u))).sum(axis=0)
    k2 = (r * u / (1.0 - u) ** 2).sum(axis=0)
    k3 = (r * u * (1.0 + u) / (1.0 - u) ** 3).sum(axis=0)
    k4 = (r * u * (1.0 + 4.0 * u + u * u) / (1.0 - u) ** 4).sum(axis=0)
    correction = 1.0 + k4 / (8.0 * k2**2) - 5.0 * k3**2 / (24.0 * k2**3)
    return big_k - s * t - 0.5 * np.log(2.0 * np.pi * k2) + np.log(correction)
