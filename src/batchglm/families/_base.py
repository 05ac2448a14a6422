"""The elementwise interface every noise model implements.

A family never sees a design matrix: it maps per-observation linear predictors to
log-likelihood terms and their derivatives. Sums over observations, chain rules through
the designs and all linear algebra live in :mod:`batchglm.solvers`.

Terms that depend on the data only through ``(y, eta_scale)`` and vanish at ``y == 0``
(for NB: the ``gammaln``/``digamma``/``trigamma`` differences) are exposed separately as
*count terms*, so the solver can evaluate them once per distinct non-zero count instead of
once per observation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families.link import LINKS, Link
from batchglm.families.scratch import Scratch

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Derivatives:
    """Per-observation log-likelihood and derivatives with respect to the predictors.

    Attributes
    ----------
    ll : ndarray
        Log-likelihood terms (without the count terms and constants).
    d_loc, d_scale : ndarray
        First derivatives with respect to ``eta_loc`` and ``eta_scale``.
    d2_loc, d2_cross, d2_scale : ndarray
        Observed second derivatives (not expectations).
    """

    ll: Array
    d_loc: Array
    d_scale: Array | None
    d2_loc: Array
    d2_cross: Array | None
    d2_scale: Array | None


@dataclass(frozen=True)
class CountTerms:
    """Count terms evaluated at ``(y, eta_scale)`` pairs; zero for ``y == 0``.

    Attributes
    ----------
    ll : ndarray
        Log-likelihood contribution.
    d_scale, d2_scale : ndarray or None
        First and second derivatives with respect to ``eta_scale``.
    """

    ll: Array
    d_scale: Array | None
    d2_scale: Array | None


class Family(ABC):
    """A noise model with a location and (optionally) a scale linear predictor.

    A family is the object a fit keeps (``FitResult.family``): its location link
    (:attr:`link`, an object with ``inverse`` and ``d_inverse``), :meth:`fitted_mean`,
    :meth:`deviance` and the likelihood pieces. It prints, hashes and compares equal to its
    registered name (``NegativeBinomial() == "nb"``, ``str(family) == "nb"``,
    ``repr(family) == "'nb'"``), so code written for the name keeps working.
    """

    #: Name used in ``bg.fit(family=...)``.
    name: str = ""
    #: Whether the family has a scale parameter with its own design.
    has_scale: bool = True
    #: Name of the scale parameter in messages and docs.
    scale_name: str = ""
    #: Whether :meth:`count_terms` is implemented. Such families must also have
    #: ``constant(0) == 0`` so that both can be summed over non-zero entries only.
    has_count_terms: bool = False
    #: Whether every term of :meth:`derivatives` is affine in ``y``: sums over observations
    #: with equal predictors then equal their count times the terms at their mean ``y``.
    affine_in_y: bool = False
    #: Bounds on the scale predictor; a feature whose optimum lies beyond is stopped there.
    scale_bounds: tuple[float, float] = (-np.inf, np.inf)
    #: Link of the location model: ``"log"``, ``"identity"`` or ``"logit"``. Size factors
    #: are a location offset ``log(size_factors)``, meaningful for the log link only.
    loc_link: str = "log"
    #: Location predictor below which a fitted mean counts as separated (a group with only
    #: zeros drives it to minus infinity; about log(1e-9)). ``None`` for families whose
    #: location likelihood stays bounded; they also have no special all-zero case.
    separated_eta: float | None = -20.7

    @abstractmethod
    def validate(self, y: Array, feature_offset: int = 0) -> None:
        """Raise ``ValueError`` when ``y`` lies outside the family's domain.

        Parameters
        ----------
        y : ndarray
            Observations, shape ``(n_obs, n_features)``.
        feature_offset : int
            Position of the block's first feature in the data, for messages.
        """

    @abstractmethod
    def derivatives(
        self,
        y: Array,
        eta_loc: Array,
        eta_scale: Array,
        order: int,
        scratch: Scratch | None = None,
    ) -> Derivatives:
        """Elementwise log-likelihood terms and derivatives.

        Parameters
        ----------
        y : ndarray
            Observations.
        eta_loc, eta_scale : ndarray
            Linear predictors, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for first and second derivatives too.
        scratch : Scratch, optional
            Reusable buffers for the results (see :mod:`batchglm.families.scratch`).

        Returns
        -------
        Derivatives
            Terms that exclude :meth:`count_terms` and :meth:`constant`.
        """

    def count_terms(self, y: Array, eta_scale: Array, order: int) -> CountTerms | None:
        """Terms that depend on ``(y, eta_scale)`` only and vanish at ``y == 0``.

        Parameters
        ----------
        y : ndarray
            Positive observed values.
        eta_scale : ndarray
            Scale predictors, same shape as ``y``.
        order : int
            0 for the log-likelihood only, 2 for derivatives too.

        Returns
        -------
        CountTerms or None
            ``None`` when the family has no such terms.
        """
        return None

    def constant(self, y: Array) -> Array:
        """Parameter-free log-likelihood terms, elementwise.

        Parameters
        ----------
        y : ndarray
            Observations.

        Returns
        -------
        ndarray
            Terms such as ``-gammaln(y + 1)``, same shape as ``y``.
        """
        return np.zeros_like(y)

    def loglik(self, y: Array, eta_loc: Array, eta_scale: Array) -> Array:
        """Full elementwise log-likelihood, the sum of all parts.

        Parameters
        ----------
        y : ndarray
            Observations.
        eta_loc, eta_scale : ndarray
            Linear predictors, broadcastable to ``y``.

        Returns
        -------
        ndarray
            Log-likelihood of every observation.
        """
        y, eta_loc, eta_scale = np.broadcast_arrays(y, eta_loc, eta_scale)
        total = self.derivatives(y, eta_loc, eta_scale, order=0).ll + self.constant(y)
        pos = y > 0
        counts = self.count_terms(y[pos], eta_scale[pos], order=0)
        if counts is not None:
            total = total.copy()
            total[pos] += counts.ll
        return total

    def start_loc_groups(self, means: Array, sizes: Array) -> Array:
        """Map group means of ``y / size_factors`` to starting location predictors.

        The default is the log link, with empty groups floored at a mean of
        ``1 / (8 n_group)`` so that the start stays finite.

        Parameters
        ----------
        means : ndarray
            Group means ``(n_groups, F)``.
        sizes : ndarray
            Observations per group ``(n_groups, 1)``.

        Returns
        -------
        ndarray
            Starting location predictors per group.
        """
        return np.log(np.maximum(means, 1.0 / (8.0 * sizes)))

    def start_loc_obs(self, y_norm: Array, inv_size_factors: Array) -> Array:
        """Per-observation working response for designs with many distinct rows.

        The default is the log link: ``log((y + 0.5) / size_factors)``.

        Parameters
        ----------
        y_norm : ndarray
            ``y / size_factors``, shape ``(n_obs, F)``.
        inv_size_factors : ndarray
            ``1 / size_factors``, shape ``(n_obs, 1)``.

        Returns
        -------
        ndarray
            Values on the location predictor scale, regressed on the design.
        """
        return np.log(y_norm + 0.5 * inv_size_factors)

    def start_scale(
        self, y: Array, eta_loc: Array, sums: Callable[[Array], Array], sizes: Array
    ) -> Array:
        """Return starting scale predictors per scale group (families with a scale override).

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
            Starting scale predictors ``(n_groups, F)``; zeros by default.
        """
        return np.zeros((sizes.shape[0], y.shape[1]))

    def draw_loc_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw location intercepts for :func:`batchglm.simulate`.

        The default follows the original batchglm count simulator:
        ``log(mean) ~ U(log 300, log 9000)``.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        size : tuple of int
            ``(n_features, n_intercepts)``.

        Returns
        -------
        ndarray
            Intercepts on the location predictor scale.
        """
        return rng.uniform(np.log(300), np.log(9000), size=size)

    def draw_scale_intercepts(self, rng: np.random.Generator, size: tuple[int, int]) -> Array:
        """Draw scale intercepts for :func:`batchglm.simulate`.

        The default follows the original batchglm NB simulator: ``log(r)`` with ``r`` a
        uniform integer in 1..10.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        size : tuple of int
            ``(n_features, n_intercepts)``.

        Returns
        -------
        ndarray
            Intercepts on the scale predictor scale.
        """
        return np.log(rng.integers(1, 11, size=size))

    @abstractmethod
    def sample(self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array) -> Array:
        """Draw observations for given predictors.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness.
        eta_loc, eta_scale : ndarray
            Linear predictors of the same shape.

        Returns
        -------
        ndarray
            One draw per element.
        """

    # -- Response-scale pieces: fitted means, residuals, predictions ------------------------
    # Defaults raise, so a family added later fails loudly instead of giving wrong numbers.

    @property
    def link(self) -> Link:
        """The location link as an object (see :mod:`batchglm.families.link`).

        Returns
        -------
        Link
            ``log``, ``identity`` or ``logit``, from :attr:`loc_link`.

        Raises
        ------
        NotImplementedError
            For a family whose ``loc_link`` is none of these.
        """
        try:
            return LINKS[self.loc_link]
        except KeyError:
            raise NotImplementedError(
                f"family {self.name!r} has location link {self.loc_link!r}, which is not one "
                f"of {sorted(LINKS)}; define `link` on the family."
            ) from None

    def inverse_link(self, eta_loc: Array) -> Array:
        """Mean of the response for a location predictor (the inverse location link).

        ``exp`` for the log link (predictors capped at 700 so that means stay finite), the
        identity, or the logistic function for the logit link; see :attr:`link`.

        Parameters
        ----------
        eta_loc : ndarray
            Location predictors, offsets included.

        Returns
        -------
        ndarray
            Means, same shape.

        Raises
        ------
        NotImplementedError
            For a family whose ``loc_link`` is none of these.
        """
        return self.link.inverse(eta_loc)

    def d_inverse_link(self, eta_loc: Array) -> Array:
        """Return the derivative of the mean with respect to the location predictor.

        Parameters
        ----------
        eta_loc : ndarray
            Location predictors.

        Returns
        -------
        ndarray
            ``d mu / d eta_loc``, same shape (used by the delta method in predictions).

        Raises
        ------
        NotImplementedError
            For a family whose ``loc_link`` is not log, identity or logit.
        """
        return self.link.d_inverse(eta_loc)

    def fitted_mean(self, eta_loc: Array, offset: Array | None = None) -> Array:
        """Fitted means from location predictors and an optional location offset.

        The one rule by which coefficients become means everywhere (fitted values,
        ``baseMean``, residuals, dispersion estimation): ``g^{-1}(eta_loc + offset)``. For
        the log link the offset is ``log(size_factors)``, so the mean is
        ``size_factor * exp(x . a)``.

        Parameters
        ----------
        eta_loc : ndarray
            Location predictors without offset, ``(n_obs, n_features)``.
        offset : ndarray, optional
            Location offset per observation ``(n_obs,)``; ``None`` for none.

        Returns
        -------
        ndarray
            ``(n_obs, n_features)`` means on the response scale.

        Raises
        ------
        NotImplementedError
            For a family whose ``loc_link`` is not log, identity or logit.
        """
        eta = np.asarray(eta_loc, dtype=np.float64)
        if offset is not None:
            eta = eta + np.asarray(offset, dtype=np.float64)[:, None]
        return self.link.inverse(eta)

    def deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """Deviance per feature: the sum over observations of :meth:`unit_deviance`.

        Parameters
        ----------
        y : ndarray
            Observations ``(n_obs, n_features)``.
        mu : ndarray
            Means, broadcastable to ``y``.
        eta_scale : ndarray
            Scale predictors, broadcastable to ``y``.

        Returns
        -------
        ndarray
            ``(n_features,)`` non-negative deviances (McCullagh and Nelder 1989, sec. 2.3).

        Raises
        ------
        NotImplementedError
            For a family without :meth:`unit_deviance`.
        """
        return np.asarray(self.unit_deviance(y, mu, eta_scale).sum(axis=0), dtype=np.float64)

    # A family prints, hashes and compares as its registered name, so code written when
    # ``FitResult.family`` was a string (``res.family == "nb"``, ``f"{res.family!r}"``,
    # dictionary look-ups by name) keeps working with the object.

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Family):
            return type(self) is type(other) and self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return repr(self.name)

    def variance(self, mu: Array, eta_scale: Array) -> Array:
        """Variance of one observation with mean ``mu`` and scale predictor ``eta_scale``.

        Parameters
        ----------
        mu : ndarray
            Means.
        eta_scale : ndarray
            Scale predictors, broadcastable to ``mu``.

        Returns
        -------
        ndarray
            ``Var(y)``, including the scale parameter.
        """
        raise NotImplementedError(f"family {self.name!r} does not define its variance.")

    def unit_deviance(self, y: Array, mu: Array, eta_scale: Array) -> Array:
        """Twice the log-likelihood lost against the saturated mean, at a fixed scale.

        ``2 [max_m l(y; m, s) - l(y; mu, s)]`` elementwise, so ``sign(y - mu)`` times its
        square root is the deviance residual.

        Parameters
        ----------
        y : ndarray
            Observations.
        mu : ndarray
            Means, broadcastable to ``y``.
        eta_scale : ndarray
            Scale predictors, broadcastable to ``y``.

        Returns
        -------
        ndarray
            Non-negative deviance contributions.
        """
        raise NotImplementedError(f"family {self.name!r} does not define its deviance.")

    def cdf_parts(self, y: Array, mu: Array, eta_scale: Array) -> tuple[Array, Array, Array]:
        """Probabilities below, at and above each observation.

        Parameters
        ----------
        y : ndarray
            Observations.
        mu : ndarray
            Means, broadcastable to ``y``.
        eta_scale : ndarray
            Scale predictors, broadcastable to ``y``.

        Returns
        -------
        below, at, above : ndarray
            ``P(Y < y)``, ``P(Y = y)`` (zero for continuous families) and ``P(Y > y)``;
            the upper tail is computed directly so that it keeps its precision far out.
        """
        raise NotImplementedError(
            f"family {self.name!r} does not define its distribution function."
        )
