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
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

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
    """A noise model with a location and (optionally) a scale linear predictor."""

    #: Name used in ``bg.fit(family=...)``.
    name: str = ""
    #: Whether the family has a scale parameter with its own design.
    has_scale: bool = True
    #: Name of the scale parameter in messages and docs.
    scale_name: str = ""
    #: Whether :meth:`count_terms` is implemented. Such families must also have
    #: ``constant(0) == 0`` so that both can be summed over non-zero entries only.
    has_count_terms: bool = False
    #: Bounds on the scale predictor; a feature whose optimum lies beyond is stopped there.
    scale_bounds: tuple[float, float] = (-np.inf, np.inf)

    @abstractmethod
    def validate(self, y: Array) -> None:
        """Raise ``ValueError`` when ``y`` lies outside the family's domain.

        Parameters
        ----------
        y : ndarray
            Observations, shape ``(n_obs, n_features)``.
        """

    @abstractmethod
    def derivatives(self, y: Array, eta_loc: Array, eta_scale: Array, order: int) -> Derivatives:
        """Elementwise log-likelihood terms and derivatives.

        Parameters
        ----------
        y : ndarray
            Observations.
        eta_loc, eta_scale : ndarray
            Linear predictors, broadcastable to ``y``.
        order : int
            0 for the log-likelihood only, 2 for first and second derivatives too.

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

    @abstractmethod
    def sample(
        self, rng: np.random.Generator, eta_loc: Array, eta_scale: Array
    ) -> Array:
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
