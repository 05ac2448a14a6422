"""Negative binomial family: log link for the mean, log link for the size ``r``.

``var = mu + mu**2 / r``; DESeq2's dispersion is ``1 / r``. Every expression below is
written in ``q = mu / r`` so that it stays accurate from the Poisson limit (``r`` huge,
``q`` tiny) to strong over-dispersion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy import special

from batchglm.families import nb_kernel
from batchglm.families._base import Array, CountTerms, Derivatives, Family
from batchglm.families.domain import check_counts
from batchglm.families.scratch import Scratch, fresh
from batchglm.families.special_diff import digamma_diff, lgamma_diff, trigamma_diff

if TYPE_CHECKING:
    from batchglm.nonzeros import NonZeros


class NegativeBinomial(Family):
    """Negative binomial with ``log(mu) = eta_loc`` and ``log(r) = eta_scale``."""

    name = "nb"
    has_scale = True
    scale_name = "size r (var = mu + mu^2 / r)"
    has_count_terms = True
    affine_in_y = True
    #: ``log r`` between log(1e-8) and log(1e8): DESeq2's dispersion range. At the upper
    #: bound the fit is numerically the Poisson fit (under-dispersed features).
    scale_bounds = (float(np.log(1e-8)), float(np.log(1e8)))

    def validate(self, y: Array, feature_offset: int = 0) -> None:
        """Require finite, non-negative integer counts.

        Parameters
        ----------
        y : ndarray
            Observations.
        feature_offset : int
            Position of the block's first feature in the data, for messages.
        """
        check_counts(y, self.name, feature_offset)

    def derivatives(
        self,
        y: Array,
        eta_loc: Array,
        eta_scale: Array,
        order: int,
        scratch: Scratch | None = None,
    ) -> Derivatives:
        """Elementary (special-function free) NB terms and their derivatives.

        Parameters
        ----------
        y : ndarray
            Counts.
        eta_loc, eta_scale : ndarray
            ``log(mu)`` and ``log(r)``, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results (see :mod:`batchglm.families.scratch`).

        Returns
        -------
        Derivatives
            Terms excluding ``gammaln(y + r) - gammaln(r)`` and ``-gammaln(y + 1)``.

        Notes
        -----
        Plain 2-D blocks go through the fused compiled kernel
        (:mod:`batchglm.families.nb_kernel`, one pass); everything else, and every block
        when ``nb_kernel.ENABLED`` is false, through :meth:`derivatives_numpy`. Both
        evaluate the same expressions in the same order.
        """
        buf = scratch if scratch is not None else fresh
        if nb_kernel.applies(y, eta_loc, eta_scale):
            shape = y.shape
            ll = buf("ll", shape)
            if order == 0:
                nb_kernel.nb_terms(y, eta_loc, eta_scale, 0, (ll,) * 6)
                return Derivatives(ll, ll, None, ll, None, None)
            names = ("d_loc", "d_scale", "d2_loc", "d2_cross", "d2_scale")
            out = (ll,) + tuple(buf(name, shape) for name in names)
            nb_kernel.nb_terms(y, eta_loc, eta_scale, order, out)
            return Derivatives(*out)
        return self.derivatives_numpy(y, eta_loc, eta_scale, order, scratch)

    def derivatives_numpy(
        self,
        y: Array,
        eta_loc: Array,
        eta_scale: Array,
        order: int,
        scratch: Scratch | None = None,
    ) -> Derivatives:
        """Compute the terms of :meth:`derivatives` with one NumPy pass per operation.

        Parameters
        ----------
        y : ndarray
            Counts.
        eta_loc, eta_scale : ndarray
            ``log(mu)`` and ``log(r)``, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results.

        Returns
        -------
        Derivatives
            Terms excluding ``gammaln(y + r) - gammaln(r)`` and ``-gammaln(y + 1)``.
        """
        # Every intermediate goes into a named buffer: these arrays are the size of the data
        # block, and allocating them costs more than the arithmetic done in them.
        buf = scratch if scratch is not None else fresh
        r = np.exp(eta_scale)
        shape = np.broadcast_shapes(np.shape(y), np.shape(eta_loc), np.shape(eta_scale))
        ll = np.subtract(eta_loc, eta_scale, out=buf("ll", shape))  # log q for now
        q = np.exp(ll, out=buf("q", shape))
        log1p_q = np.log1p(q, out=buf("log1p_q", shape))
        ll -= log1p_q
        ll *= y
        tmp = np.multiply(r, log1p_q, out=buf("tmp", shape))
        ll -= tmp
        if order == 0:
            return Derivatives(ll, ll, None, ll, None, None)
        inv = np.add(q, 1.0, out=buf("inv", shape))
        np.reciprocal(inv, out=inv)
        q_inv = np.multiply(q, inv, out=buf("q_inv", shape))
        resid = np.multiply(q, r, out=q)
        np.subtract(y, resid, out=resid)
        d_loc = np.multiply(resid, inv, out=buf("d_loc", shape))
        q_inv2 = np.multiply(q_inv, inv, out=buf("q_inv2", shape))
        d2_cross = np.multiply(resid, q_inv2, out=buf("d2_cross", shape))
        d2_loc = np.add(y, r, out=buf("d2_loc", shape))
        d2_loc *= q_inv2
        np.negative(d2_loc, out=d2_loc)
        # d/d(log r) of r*log(r) - (y + r)*log(r + mu) = r*(q/(1+q) - log1p(q)) - y/(1+q);
        # the difference in brackets is kept together so it stays exact when r >> mu.
        d_scale = np.subtract(q_inv, log1p_q, out=log1p_q)
        d_scale *= r
        np.multiply(y, inv, out=tmp)
        d_scale -= tmp
        # second derivative: d_scale + mu/(1+q) + (y - mu)/(1+q)^2
        d2_scale = np.multiply(q_inv, r, out=q_inv)
        d2_scale += d_scale
        np.multiply(d_loc, inv, out=tmp)
        d2_scale += tmp
        return Derivatives(ll, d_loc, d_scale, d2_loc, d2_cross, d2_scale)

    def count_terms(self, y: Array, eta_scale: Array, order: int) -> CountTerms:
        """``gammaln(y + r) - gammaln(r)`` and its derivatives in ``log r``.

        Parameters
        ----------
        y : ndarray
            Positive counts.
        eta_scale : ndarray
            ``log(r)`` for each entry of ``y``.
        order : int
            0 for the log-likelihood only (``lgamma``), 1 for the first derivative too
            (``digamma``), 2 for the second too (``trigamma``). Only the special functions
            the order needs are evaluated.

        Returns
        -------
        CountTerms
            Values for each entry; derivatives above ``order`` are ``None``.
        """
        r = np.exp(eta_scale)
        ll = lgamma_diff(y, r)
        if order == 0:
            return CountTerms(ll, None, None)
        d1 = r * digamma_diff(y, r)
        if order == 1:
            return CountTerms(ll, d1, None)
        d2 = d1 + r * r * trigamma_diff(y, r)
        return CountTerms(ll, d1, d2)

    def constant(self, y: Array) -> Array:
        """Return ``-gammaln(y + 1)``.

        Parameters
        ----------
        y : ndarray
            Counts.

        Returns
        -------
        ndarray
            The parameter-free term.
        """
        return -special.gammaln(y + 1.0)

    def start_scale(
        self, y: Array, eta_loc: Array, sums: Callable[[Array], Array], sizes: Array
    ) -> Array:
        """Estimate ``log r`` per scale group by the method of moments.

        ``r = sum(mu^2) / sum((y - mu)^2 - mu)``
        within each group, ``1e6`` where there is no over-dispersion, clipped to
        ``[1e-3, 1e6]`` and to :attr:`scale_bounds`.

        Parameters
        ----------
        y : ndarray
            Observations ``(n_obs, F)``.
        eta_loc : ndarray
            Starting location predictors ``(n_obs, F)``.
        sums : callable
            Sums ``(n_obs, F)`` values over each scale group -> ``(n_groups, F)``.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            Starting scale predictors ``(n_groups, F)``.
        """
        mu = np.exp(eta_loc)
        # A rough location start can miss the level of sparse features several-fold (means
        # 0.6 where the observed means are 0.03); moments about such means are negative and
        # would start r at 1e6, a flat region where the solver can stall at the upper bound.
        # The means are rescaled to each group's observed total first.
        with np.errstate(divide="ignore", invalid="ignore"):
            level = sums(y) / sums(mu)
        level = np.where(np.isfinite(level) & (level > 0), level, 1.0)
        expand = getattr(sums, "expand", None)
        if level.shape[0] == 1:
            mu = mu * level
        elif expand is not None:
            mu = mu * expand(level)
        num = sums(mu * mu)
        den = sums((y - mu) ** 2 - mu)
        return self._log_r_from_moments(num, den)

    def start_scale_sparse(
        self,
        nonzeros: NonZeros,
        size_factors: Array,
        loc_group: NDArray[np.intp],
        group_means: Array,
        scale_group: NDArray[np.intp],
        sum_sf: Array,
        sum_sf2: Array,
    ) -> Array:
        """:meth:`start_scale` for a grouped location design, from the non-zero counts only.

        With means ``mu_j = s_j m_g`` (size factor times the mean of the observation's
        location group ``g``), every sum :meth:`start_scale` takes over a scale group splits
        into a part over all observations, ``sum_g m_g^k sum_j s_j^k``, which needs only the
        size-factor sums of each (scale group, location group) pair, and a part over the
        non-zero counts: ``sum (y - mu)^2 - mu = sum_all (mu^2 - mu) + sum_nonzero
        (y^2 - 2 y mu)``. Same estimator, no pass over the zeros.

        Parameters
        ----------
        nonzeros : NonZeros
            Non-zero counts of the block ``(n_obs, F)``.
        size_factors : ndarray
            ``(n_obs,)`` size factors ``s_j``.
        loc_group : ndarray of int
            ``(n_obs,)`` location-design group of each observation.
        group_means : ndarray
            ``(n_loc_groups, F)`` means ``m_g`` at a size factor of 1.
        scale_group : ndarray of int
            ``(n_obs,)`` scale group of each observation.
        sum_sf, sum_sf2 : ndarray
            ``(n_scale_groups, n_loc_groups)`` sums of ``s_j`` and ``s_j^2`` per pair.

        Returns
        -------
        ndarray
            Starting scale predictors ``(n_scale_groups, F)`` (natural log of ``r``).
        """
        n_scale = sum_sf.shape[0]
        sum_mu = sum_sf @ group_means
        sum_y = nonzeros.group_sums(scale_group, n_scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = sum_y / sum_mu
        level = np.where(np.isfinite(level) & (level > 0), level, 1.0)
        num = level * level * (sum_sf2 @ (group_means * group_means))
        obs, feat, y = nonzeros.obs, nonzeros.feat, nonzeros.values
        mu_nz = (
            size_factors[obs] * group_means[loc_group[obs], feat] * level[scale_group[obs], feat]
        )
        den = num - level * sum_mu
        den += nonzeros.group_sums(scale_group, n_scale, y * (y - 2.0 * mu_nz))
        return self._log_r_from_moments(num, den)

    def _log_r_from_moments(self, num: Array, den: Array) -> Array:
        """``log(num / den)``, ``log 1e6`` where ``den <= 0``, clipped (see :meth:`start_scale`)."""
        lo, hi = self.scale_bounds
        upper = min(np.log(1e6), hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_r = np.log(num / den)
        log_r = np.where((den > 0) & np.isfinite(log_r), log_r, upper)
        return np.clip(log_r, max(np.log(1e-3), lo), upper)

    def sample(self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array) -> Array:
        """Draw NB counts with mean ``exp(eta_loc)`` and size ``exp(eta_scale)``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        eta_loc, eta_scale : ndarray
            Linear predictors.

        Returns
        -------
        ndarray
            Counts as float64.
        """
        mu = np.exp(eta_loc)
        r = np.exp(eta_scale)
        return rng.negative_binomial(r, r / (r + mu)).astype(np.float64)

    def variance(self, mu: Array, eta_scale: Array) -> Array:
        """Return ``mu + mu^2 / r``.

        Parameters
        ----------
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(r)``.

        Returns
        -------
        ndarray
            Variances.
        """
        return mu + mu * mu * np.exp(-eta_scale)

    def unit_deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """NB unit deviance at a fixed size ``r``.

        ``2 [y log(y / mu) - (y + r) log((y + r) / (mu + r))]``, the deviance of
        statsmodels' ``NegativeBinomial(alpha=1/r)`` family and of DESeq2/edgeR; the second
        log is written as ``log1p((y - mu) / (mu + r))`` to stay exact for large ``r``.

        Parameters
        ----------
        y : ndarray
            Counts.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(r)``.

        Returns
        -------
        ndarray
            Non-negative deviance contributions.
        """
        r = np.exp(eta_scale)
        with np.errstate(divide="ignore"):
            dev = 2.0 * (
                special.xlogy(y, y) - special.xlogy(y, mu) - (y + r) * np.log1p((y - mu) / (mu + r))
            )
        return np.asarray(np.maximum(dev, 0.0), dtype=np.float64)

    def cdf_parts(self, y: Array, mu: Array, eta_scale: Array) -> tuple[Array, Array, Array]:
        """NB probabilities below, at and above each count.

        Parameters
        ----------
        y : ndarray
            Counts.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(r)``.

        Returns
        -------
        below, at, above : ndarray
            ``P(Y < y)``, ``P(Y = y)``, ``P(Y > y)``.
        """
        from scipy import stats

        r = np.exp(eta_scale)
        p = 1.0 / (1.0 + mu / r)
        return (
            stats.nbinom.cdf(y - 1.0, r, p),
            stats.nbinom.pmf(y, r, p),
            stats.nbinom.sf(y, r, p),
        )
