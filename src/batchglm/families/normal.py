"""Normal family: identity link for the mean, log link for the standard deviation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from batchglm.families._base import Array, Derivatives, Family
from batchglm.families.domain import check_finite
from batchglm.families.scratch import Scratch

_HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))


class Normal(Family):
    """Normal with ``mean = eta_loc`` and ``log(sd) = eta_scale``."""

    name = "normal"
    has_scale = True
    scale_name = "standard deviation"
    has_count_terms = False
    #: ``sd`` between 1e-10 and 1e10. A feature fitted exactly (constant values, or as many
    #: distinct design rows as observations) has ``sd -> 0`` and an unbounded likelihood;
    #: it stops at the lower bound with status ``scale_at_bound``.
    scale_bounds = (float(np.log(1e-10)), float(np.log(1e10)))
    loc_link = "identity"
    separated_eta = None

    def validate(self, y: Array, feature_offset: int = 0) -> None:
        """Require finite values.

        Parameters
        ----------
        y : ndarray
            Observations.
        feature_offset : int
            Position of the block's first feature in the data, for messages.
        """
        check_finite(y, feature_offset)

    def derivatives(
        self,
        y: Array,
        eta_loc: Array,
        eta_scale: Array,
        order: int,
        scratch: Scratch | None = None,
    ) -> Derivatives:
        """Compute normal log-density terms and their derivatives.

        Parameters
        ----------
        y : ndarray
            Observations.
        eta_loc, eta_scale : ndarray
            Mean and ``log(sd)``, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results (see :mod:`batchglm.families.scratch`).

        Returns
        -------
        Derivatives
            Terms excluding ``-log(2 pi) / 2``.
        """
        prec = np.exp(-2.0 * eta_scale)
        resid = y - eta_loc
        z2 = resid * resid * prec
        ll = -eta_scale - 0.5 * z2
        if order == 0:
            return Derivatives(ll, ll, None, ll, None, None)
        d_loc = resid * prec
        d2_loc = np.broadcast_to(-prec, y.shape)
        return Derivatives(ll, d_loc, z2 - 1.0, d2_loc, -2.0 * d_loc, -2.0 * z2)

    def constant(self, y: Array) -> Array:
        """Return ``-log(2 pi) / 2``.

        Parameters
        ----------
        y : ndarray
            Observations.

        Returns
        -------
        ndarray
            The parameter-free term.
        """
        return np.full_like(y, -_HALF_LOG_2PI, dtype=np.float64)

    def start_loc_groups(self, means: Array, sizes: Array) -> Array:
        """Group means are already on the identity link scale.

        Parameters
        ----------
        means : ndarray
            Group means ``(n_groups, F)``.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            ``means``.
        """
        return means

    def start_loc_obs(self, y_norm: Array, inv_size_factors: Array) -> Array:
        """Observations are already on the identity link scale.

        Parameters
        ----------
        y_norm : ndarray
            Observations (size factors are not used by this family).
        inv_size_factors : ndarray
            Unused.

        Returns
        -------
        ndarray
            ``y_norm``.
        """
        return y_norm

    def start_scale(
        self, y: Array, eta_loc: Array, sums: Callable[[Array], Array], sizes: Array
    ) -> Array:
        """Log of the root mean squared residual per scale group, within the bounds.

        Parameters
        ----------
        y : ndarray
            Observations ``(n_obs, F)``.
        eta_loc : ndarray
            Starting means ``(n_obs, F)``.
        sums : callable
            Sums over each scale group.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            Starting ``log(sd)`` per group.
        """
        var = sums((y - eta_loc) ** 2) / sizes
        lo, hi = self.scale_bounds
        with np.errstate(divide="ignore"):
            return np.clip(0.5 * np.log(var), lo, hi)

    def draw_loc_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw means ``~ U(1, 10)``, like log-normalised expression.

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
        return rng.uniform(1.0, 10.0, size=size)

    def draw_scale_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw ``log(sd)`` with ``sd ~ U(0.5, 2)``.

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
        return np.log(rng.uniform(0.5, 2.0, size=size))

    def sample(self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array) -> Array:
        """Draw normal values with mean ``eta_loc`` and sd ``exp(eta_scale)``.

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
        return rng.normal(eta_loc, np.exp(eta_scale))

    def variance(self, mu: Array, eta_scale: Array) -> Array:
        """Return ``sd^2 = exp(2 eta_scale)``.

        Parameters
        ----------
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(sd)``.

        Returns
        -------
        ndarray
            Variances, broadcast to the shape of ``mu``.
        """
        return np.broadcast_to(np.exp(2.0 * eta_scale), np.shape(mu)).astype(np.float64)

    def unit_deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """Scaled unit deviance ``(y - mu)^2 / sd^2``.

        Parameters
        ----------
        y : ndarray
            Observations.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(sd)``.

        Returns
        -------
        ndarray
            Deviance contributions.
        """
        return np.asarray((y - mu) ** 2 * np.exp(-2.0 * eta_scale), dtype=np.float64)

    def cdf_parts(self, y: Array, mu: Array, eta_scale: Array) -> tuple[Array, Array, Array]:
        """Return normal probabilities below and above each value (none at it).

        Parameters
        ----------
        y : ndarray
            Observations.
        mu : ndarray
            Means.
        eta_scale : ndarray
            ``log(sd)``.

        Returns
        -------
        below, at, above : ndarray
            ``P(Y < y)``, zeros, ``P(Y > y)``.
        """
        from scipy import special as sp

        z = (y - mu) * np.exp(-eta_scale)
        return sp.ndtr(z), np.zeros_like(z), sp.ndtr(-z)
