"""Noise models. Each is elementwise; see :class:`batchglm.families.Family`."""

from __future__ import annotations

from batchglm.families._base import CountTerms, Derivatives, Family
from batchglm.families.beta import Beta
from batchglm.families.link import Link, get_link
from batchglm.families.nb import NegativeBinomial
from batchglm.families.normal import Normal
from batchglm.families.poisson import Poisson

_FAMILIES: dict[str, type[Family]] = {
    "nb": NegativeBinomial,
    "poisson": Poisson,
    "normal": Normal,
    "beta": Beta,
}


def get_family(name: str | Family) -> Family:
    """Return the family instance for a name.

    Parameters
    ----------
    name : str or Family
        One of the registered names, or a ready instance.

    Returns
    -------
    Family
        The family object; it compares equal to its name (``get_family("nb") == "nb"``).

    Raises
    ------
    ValueError
        For a name that is not registered.
    """
    if isinstance(name, Family):
        return name
    try:
        return _FAMILIES[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"`family` must be one of {sorted(_FAMILIES)}, but {name!r} was given."
        ) from None


__all__ = [
    "Beta",
    "CountTerms",
    "Derivatives",
    "Family",
    "Link",
    "NegativeBinomial",
    "Normal",
    "Poisson",
    "get_family",
    "get_link",
]
