"""A model to fit, as one object: location and scale designs with their constraints.

``bg.de.lrt(data, full=Model("~ condition + batch"), reduced=Model("~ batch"))`` groups
the eight design arguments of the keyword form (``full_loc``, ``constraints_full_loc``,
...) into two objects; both forms fit the same models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Model", "model_keywords"]


@dataclass(frozen=True)
class Model:
    """Designs of one model for :func:`batchglm.de.lrt`.

    Parameters
    ----------
    loc : design, optional
        Location design: a matrix ``(n_obs, p)``, a DataFrame or a formula (with ``obs``),
        as :func:`batchglm.fit`'s ``design_loc``.
    scale : design, optional
        Scale design ``(n_obs, q)``, as :func:`batchglm.fit`'s ``design_scale``.
    constraints_loc : array_like, optional
        Location constraints, as :func:`batchglm.fit`'s ``constraints_loc``.
    constraints_scale : array_like, optional
        Scale constraints, as :func:`batchglm.fit`'s ``constraints_scale``.

    Notes
    -----
    A part left at ``None`` means what the matching keyword of :func:`batchglm.de.lrt`
    means: in the full model, no scale design is an intercept-only scale model; in the
    reduced model, no design keeps the full model's design (and its constraints, unless
    given), so ``reduced=Model(scale="~ 1")`` tests the scale model alone.
    """

    loc: Any = None
    scale: Any = None
    constraints_loc: Any = None
    constraints_scale: Any = None


def model_keywords(full: object, reduced: object, given: dict[str, Any]) -> dict[str, Any]:
    """Translate two :class:`Model` objects into the keyword form of :func:`batchglm.de.lrt`.

    Parameters
    ----------
    full, reduced : Model
        The two models (anything else is refused).
    given : dict
        The design keywords passed besides them (``full_loc``, ``constraints_full_loc``,
        ...), by name; values of ``None`` count as not given.

    Returns
    -------
    dict
        ``full_loc``, ``full_scale``, ``reduced_loc``, ``reduced_scale`` and the four
        ``constraints_*`` keywords.

    Raises
    ------
    ValueError
        When ``full`` or ``reduced`` is not a :class:`Model`, design keywords are given as
        well, or the full model has no location design.
    """
    if not isinstance(full, Model) or not isinstance(reduced, Model):
        raise ValueError(
            "`full` and `reduced` must both be bg.de.Model or both FitResult, but "
            f"{type(full).__name__} and {type(reduced).__name__} were given."
        )
    twice = sorted(name for name, value in given.items() if value is not None)
    if twice:
        raise ValueError(
            f"with `full=Model(...)` and `reduced=Model(...)`, leave out {twice}; give "
            "designs and constraints inside the models."
        )
    if full.loc is None:
        raise ValueError("`full` must have a location design, but `Model(loc=None)` was given.")
    return {
        "full_loc": full.loc,
        "full_scale": full.scale,
        "constraints_full_loc": full.constraints_loc,
        "constraints_full_scale": full.constraints_scale,
        "reduced_loc": reduced.loc,
        "reduced_scale": reduced.scale,
        "constraints_reduced_loc": reduced.constraints_loc,
        "constraints_reduced_scale": reduced.constraints_scale,
    }
