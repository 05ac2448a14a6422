"""Link functions of the location model, as objects.

A :class:`Link` maps a mean to the location predictor (``link``) and back
(``inverse``), with the derivative of the inverse for the delta method. Each family holds
its link (:attr:`batchglm.families.Family.link`); code that needs means from predictors
asks the family's link instead of rebuilding the function from a name.

The three links are the standard GLM links (McCullagh and Nelder 1989, *Generalized Linear
Models*, table 2.1): ``log`` (NB, Poisson), ``identity`` (normal) and ``logit`` (beta).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

Array = NDArray[np.float64]

#: Largest log-link predictor turned into a mean: ``exp(700)`` is about ``1e304``, the
#: largest power of e that stays finite in float64 with room for a size factor.
MAX_LOG_MEAN = 700.0


@dataclass(frozen=True, eq=False)
class Link:
    """A link function ``eta = g(mu)`` with its inverse and the inverse's derivative.

    A link compares equal to its name (``Link`` objects and the strings ``"log"``,
    ``"identity"``, ``"logit"``), so ``family.link == "log"`` reads as it should.

    Attributes
    ----------
    name : str
        ``"log"``, ``"identity"`` or ``"logit"``.
    """

    name: str
    _link: Callable[[Array], Array] = field(repr=False)
    _inverse: Callable[[Array], Array] = field(repr=False)
    _d_inverse: Callable[[Array], Array] = field(repr=False)

    def link(self, mu: ArrayLike) -> Array:
        """Map means to predictors, ``g(mu)``.

        Parameters
        ----------
        mu : array_like
            Means on the response scale, any shape.

        Returns
        -------
        ndarray
            Predictors (natural-log scale for the log link), same shape.
        """
        return self._link(np.asarray(mu, dtype=np.float64))

    def inverse(self, eta: ArrayLike) -> Array:
        """Map predictors to means, ``g^{-1}(eta)``.

        Parameters
        ----------
        eta : array_like
            Predictors, offsets included, any shape.

        Returns
        -------
        ndarray
            Means on the response scale, same shape. The log link caps predictors at
            :data:`MAX_LOG_MEAN` so that means stay finite.
        """
        return self._inverse(np.asarray(eta, dtype=np.float64))

    def d_inverse(self, eta: ArrayLike) -> Array:
        """Return the derivative of the inverse link, ``d mu / d eta``.

        Parameters
        ----------
        eta : array_like
            Predictors, any shape.

        Returns
        -------
        ndarray
            Derivatives, same shape (used by the delta method).
        """
        return self._d_inverse(np.asarray(eta, dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Link):
            return self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name


def _exp(eta: Array) -> Array:
    return np.exp(np.minimum(eta, MAX_LOG_MEAN))


def _logistic(eta: Array) -> Array:
    return np.asarray(special.expit(eta), dtype=np.float64)


def _d_logistic(eta: Array) -> Array:
    return np.asarray(special.expit(eta) * special.expit(-eta), dtype=np.float64)


def _log(mu: Array) -> Array:
    with np.errstate(divide="ignore"):
        return np.log(mu)


def _logit(mu: Array) -> Array:
    with np.errstate(divide="ignore"):
        return np.asarray(special.logit(mu), dtype=np.float64)


def _identity(x: Array) -> Array:
    return x


#: The log link of count families: ``mu = exp(eta)``.
LOG = Link("log", _log, _exp, _exp)
#: The identity link of the normal family: ``mu = eta``.
IDENTITY = Link("identity", _identity, _identity, np.ones_like)
#: The logit link of the beta family: ``mu = 1 / (1 + exp(-eta))``.
LOGIT = Link("logit", _logit, _logistic, _d_logistic)

LINKS: dict[str, Link] = {link.name: link for link in (LOG, IDENTITY, LOGIT)}


def get_link(name: str) -> Link:
    """Return the link object for a name.

    Parameters
    ----------
    name : str
        ``"log"``, ``"identity"`` or ``"logit"``.

    Returns
    -------
    Link
        The link.

    Raises
    ------
    ValueError
        For any other name.
    """
    try:
        return LINKS[name]
    except KeyError:
        raise ValueError(
            f"the location link must be one of {sorted(LINKS)}, but {name!r} was given."
        ) from None
