"""Poisson family: log link for the mean, no scale parameter (``var = mu``)."""

from __future__ import annotations

import numpy as np
from scipy import special

from batchglm.families._base import Array, Derivatives, Family
from batchglm.families.domain import check_counts
from batchglm.families.scratch import Scratch


class Poisson(Family):
    """Poisson with ``log(mu) = eta_loc``; ``eta_scale`` is ignored."""

    name = "poisson"
    has_scale = False
    scale_name = ""
    has_count_terms = False

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
        """Poisson terms, centred on the saturated model, and their derivatives.

        The log-likelihood part is ``y (eta - log y) - (mu - y)`` (minus half the unit
        deviance): each term is small near the optimum, so sums over many observations with
        large counts keep the precision the line search needs. ``y log y - y`` moves to
        :meth:`constant`.

        Parameters
        ----------
        y : ndarray
            Counts.
        eta_loc : ndarray
            ``log(mu)``, broadcastable to ``y``.
        eta_scale : ndarray
            Ignored.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results (see :mod:`batchglm.families.scratch`).

        Returns
        -------
        Derivatives
            Terms excluding :meth:`constant`; the scale entries are ``None``.
        """
        mu = np.exp(eta_loc)
        log_y = np.log(y, out=np.zeros_like(y), where=y > 0)
        ll = y * (eta_loc - log_y) - (mu - y)
        if order == 0:
            return Derivatives(ll, ll, None, ll, None, None)
        # Observed and expected information coincide for the canonical link.
        return Derivatives(ll, y - mu, None, -mu, None, None)

    def constant(self, y: Array) -> Array:
        """Return ``y log y - y - gammaln(y + 1)``, zero at ``y == 0``.

        Parameters
        ----------
        y : ndarray
            Counts.

        Returns
        -------
        ndarray
            The parameter-free term.
        """
        return special.xlogy(y, y) - y - special.gammaln(y + 1.0)

    def sample(self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array) -> Array:
        """Draw Poisson counts with mean ``exp(eta_loc)``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        eta_loc : ndarray
            Location predictors.
        eta_scale : ndarray
            Ignored.

        Returns
        -------
        ndarray
            Counts as float64.
        """
        return rng.poisson(np.exp(eta_loc)).astype(np.float64)

    def variance(self, mu: Array, eta_scale: Array) -> Array:
        """Return ``mu``.

        Parameters
        ----------
        mu : ndarray
            Means.
        eta_scale : ndarray
            Ignored.

        Returns
        -------
        ndarray
            Variances.
        """
        return np.asarray(mu, dtype=np.float64)

    def unit_deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """Poisson unit deviance ``2 [y log(y / mu) - (y - mu)]``.

        Parameters
        ----------
        y : ndarray
            Counts.
        mu : ndarray
            Means.
        eta_scale : ndarray
            Ignored.

        Returns
        -------
        ndarray
            Non-negative deviance contributions.
        """
        with np.errstate(divide="ignore"):
            dev = 2.0 * (special.xlogy(y, y) - special.xlogy(y, mu) - (y - mu))
        return np.asarray(np.maximum(dev, 0.0), dtype=np.float64)

    def cdf_parts(self, y: Array, mu: Array, eta_scale: Array) -> tuple[Array, Array, Array]:
        """Poisson probabilities below, at and above each count.

        Parameters
        ----------
        y : ndarray
            Counts.
        mu : ndarray
            Means.
        eta_scale : ndarray
            Ignored.

        Returns
        -------
        below, at, above : ndarray
            ``P(Y < y)``, ``P(Y = y)``, ``P(Y > y)``.
        """
        from scipy import stats

        return (stats.poisson.cdf(y - 1.0, mu), stats.poisson.pmf(y, mu), stats.poisson.sf(y, mu))
