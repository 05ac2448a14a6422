"""Beta family: logit link for the mean, log link for the precision ``phi``.

With mean ``mu`` and precision ``phi`` the density is ``Beta(mu phi, (1 - mu) phi)``, so
``var = mu (1 - mu) / (1 + phi)`` (the parametrisation of Ferrari and Cribari-Neto, and of
statsmodels' ``BetaModel``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from batchglm.families._base import Array, Derivatives, Family
from batchglm.families.domain import check_finite, first_offender
from batchglm.families.scratch import Scratch
from batchglm.families.special_diff import trigamma


def _trigamma(x: Array) -> Array:
    # scipy's polygamma(1, .) goes through the Hurwitz zeta function and dominates the
    # cost of a beta fit; the series in special_diff is several times faster.
    x = np.asarray(x, dtype=np.float64)
    return trigamma(x.ravel()).reshape(x.shape)


class Beta(Family):
    """Beta with ``logit(mu) = eta_loc`` and ``log(phi) = eta_scale``."""

    name = "beta"
    has_scale = True
    scale_name = "precision phi (var = mu(1 - mu) / (1 + phi))"
    has_count_terms = False
    #: ``phi`` between 1e-4 and 1e6. At the upper bound the values are practically constant
    #: around the mean (``sd < 5e-4``); beyond it the log-gamma terms lose accuracy.
    scale_bounds = (float(np.log(1e-4)), float(np.log(1e6)))
    loc_link = "logit"
    separated_eta = None

    def validate(self, y: Array, feature_offset: int = 0) -> None:
        """Require finite values strictly between 0 and 1.

        Parameters
        ----------
        y : ndarray
            Observations.
        feature_offset : int
            Position of the block's first feature in the data, for messages.

        Raises
        ------
        ValueError
            When a value is not finite or lies at or outside 0 and 1.
        """
        check_finite(y, feature_offset)
        bad = (y <= 0.0) | (y >= 1.0)
        if bad.any():
            i, j = first_offender(bad)
            raise ValueError(
                f"family {self.name!r} needs values strictly between 0 and 1, but `data` has "
                f"{int(bad.sum())} values at or outside 0 and 1; the first is "
                f"{float(y[i, j])!r} at observation {i}, feature {j + feature_offset}."
            )

    def derivatives(
        self,
        y: Array,
        eta_loc: Array,
        eta_scale: Array,
        order: int,
        scratch: Scratch | None = None,
    ) -> Derivatives:
        """Beta log-density terms and their derivatives.

        Parameters
        ----------
        y : ndarray
            Observations in ``(0, 1)``.
        eta_loc, eta_scale : ndarray
            ``logit(mu)`` and ``log(phi)``, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results (see :mod:`batchglm.families.scratch`).

        Returns
        -------
        Derivatives
            Terms excluding ``-log(y) - log(1 - y)``.
        """
        # expit of both signs keeps 1 - mu accurate when mu is close to 1.
        mu = special.expit(eta_loc)
        nu = special.expit(-eta_loc)
        phi = np.exp(eta_scale)
        p, q = mu * phi, nu * phi
        log_y, log_1my = np.log(y), np.log1p(-y)
        ll = special.gammaln(phi) - special.gammaln(p) - special.gammaln(q)
        ll = ll + p * log_y + q * log_1my
        if order == 0:
            return Derivatives(ll, ll, None, ll, None, None)
        psi_p, psi_q = special.digamma(p), special.digamma(q)
        tri_p, tri_q = _trigamma(p), _trigamma(q)
        m = mu * nu  # d mu / d eta_loc
        # ``ystar - mustar`` is the score of the mean on the logit-of-y scale.
        u = (log_y - log_1my) - (psi_p - psi_q)
        d_loc = phi * m * u
        d2_loc = d_loc * (nu - mu) - (phi * m) ** 2 * (tri_p + tri_q)
        d_scale = phi * (special.digamma(phi) - mu * psi_p - nu * psi_q + mu * log_y + nu * log_1my)
        d2_scale = d_scale + phi * phi * (_trigamma(phi) - mu * mu * tri_p - nu * nu * tri_q)
        d2_cross = d_loc + phi * phi * m * (nu * tri_q - mu * tri_p)
        return Derivatives(ll, d_loc, d_scale, d2_loc, d2_cross, d2_scale)

    def constant(self, y: Array) -> Array:
        """Return ``-log(y) - log(1 - y)``.

        Parameters
        ----------
        y : ndarray
            Observations in ``(0, 1)``.

        Returns
        -------
        ndarray
            The parameter-free term.
        """
        return -np.log(y) - np.log1p(-y)

    def start_loc_groups(self, means: Array, sizes: Array) -> Array:
        """Logit of the group means.

        Parameters
        ----------
        means : ndarray
            Group means ``(n_groups, F)``, inside ``(0, 1)`` for valid data.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            Starting ``logit(mu)`` per group.
        """
        return special.logit(np.clip(means, 1e-12, 1.0 - 1e-12))

    def start_loc_obs(self, y_norm: Array, inv_size_factors: Array) -> Array:
        """Logit of the observations, clipped to ``[-10, 10]``.

        Values extremely close to 0 or 1 (``logit`` up to about 700 in magnitude) would
        otherwise dominate the least-squares start.

        Parameters
        ----------
        y_norm : ndarray
            Observations (size factors are not used by this family).
        inv_size_factors : ndarray
            Unused.

        Returns
        -------
        ndarray
            ``logit(y)``, clipped.
        """
        return np.clip(special.logit(y_norm), -10.0, 10.0)

    def start_scale(
        self, y: Array, eta_loc: Array, sums: Callable[[Array], Array], sizes: Array
    ) -> Array:
        """Moments: ``1 + phi = sum(mu (1 - mu)) / sum((y - mu)^2)`` per scale group.

        Groups whose spread is at least that of ``phi = 0.01`` start there; the value is
        clipped to ``[0.01, 1e5]`` and to :attr:`scale_bounds`.

        Parameters
        ----------
        y : ndarray
            Observations ``(n_obs, F)``.
        eta_loc : ndarray
            Starting ``logit(mu)`` ``(n_obs, F)``.
        sums : callable
            Sums over each scale group.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            Starting ``log(phi)`` per group.
        """
        mu = special.expit(eta_loc)
        num = sums(mu * special.expit(-eta_loc))
        den = sums((y - mu) ** 2)
        lo, hi = self.scale_bounds
        low, high = max(np.log(1e-2), lo), min(np.log(1e5), hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_phi = np.log(num / den - 1.0)
        log_phi = np.where(np.isnan(log_phi), low, log_phi)
        return np.clip(log_phi, low, high)

    def draw_loc_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw ``logit(mu)`` with ``mu ~ U(0.1, 0.9)``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        size : tuple of int
            ``(n_features, n_intercepts)``.

        Returns
        -------
        ndarray
            Location intercepts.
        """
        return special.logit(rng.uniform(0.1, 0.9, size=size))

    def draw_scale_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw ``log(phi)`` with ``phi ~ U(5, 100)``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        size : tuple of int
            ``(n_features, n_intercepts)``.

        Returns
        -------
        ndarray
            Scale intercepts.
        """
        return np.log(rng.uniform(5.0, 100.0, size=size))

    def sample(self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array) -> Array:
        """Draw beta values with mean ``expit(eta_loc)`` and precision ``exp(eta_scale)``.

        Draws that round to exactly 0 or 1 (tiny ``phi`` or extreme means) are moved to the
        nearest representable value inside ``(0, 1)``, so the result is always valid data.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        eta_loc, eta_scale : ndarray
            Linear predictors.

        Returns
        -------
        ndarray
            Draws as float64.
        """
        phi = np.exp(eta_scale)
        y = rng.beta(special.expit(eta_loc) * phi, special.expit(-eta_loc) * phi)
        tiny = np.finfo(np.float64).tiny
        return np.clip(y, tiny, np.nextafter(1.0, 0.0))

    def variance(self, mu: Array, eta_scale: Array) -> Array:
        """Return ``mu (1 - mu) / (1 + phi)``.

        Parameters
        ----------
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(phi)``.

        Returns
        -------
        ndarray
            Variances.
        """
        return np.asarray(mu * (1.0 - mu) / (1.0 + np.exp(eta_scale)), dtype=np.float64)

    def unit_deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """Beta deviance against the saturated mean at a fixed precision.

        The saturated mean ``m`` maximises ``l(y; m, phi)``: it solves
        ``digamma(m phi) - digamma((1 - m) phi) = log(y / (1 - y))`` (Ferrari and
        Cribari-Neto 2004), found by Newton's method on ``logit(m)``.

        Parameters
        ----------
        y : ndarray
            Observations in ``(0, 1)``.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(phi)``.

        Returns
        -------
        ndarray
            Non-negative deviance contributions.
        """
        y, mu, eta_scale = np.broadcast_arrays(
            np.asarray(y, dtype=np.float64),
            np.asarray(mu, dtype=np.float64),
            np.asarray(eta_scale, dtype=np.float64),
        )
        phi = np.exp(eta_scale)
        target = np.log(y) - np.log1p(-y)
        t = target.copy()
        for _ in range(50):
            m, n = special.expit(t), special.expit(-t)
            g = special.digamma(m * phi) - special.digamma(n * phi) - target
            dg = phi * m * n * (_trigamma(m * phi) + _trigamma(n * phi))
            step = np.clip(g / dg, -2.0, 2.0)
            t = t - step
            if np.max(np.abs(step), initial=0.0) < 1e-12:
                break
        sat = self.loglik(y, t, eta_scale)
        fitted = self.loglik(y, special.logit(mu), eta_scale)
        return np.asarray(np.maximum(2.0 * (sat - fitted), 0.0), dtype=np.float64)

    def cdf_parts(self, y: Array, mu: Array, eta_scale: Array) -> tuple[Array, Array, Array]:
        """Return beta probabilities below and above each value (none at it).

        Parameters
        ----------
        y : ndarray
            Observations in ``(0, 1)``.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(phi)``.

        Returns
        -------
        below, at, above : ndarray
            ``P(Y < y)``, zeros, ``P(Y > y)``.
        """
        phi = np.exp(eta_scale)
        a, b = mu * phi, (1.0 - mu) * phi
        below = special.betainc(a, b, y)
        return below, np.zeros_like(below), special.betainc(b, a, 1.0 - y)
