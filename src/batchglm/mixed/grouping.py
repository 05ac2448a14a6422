"""The grouping factor of a random intercept, as a group index per observation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.design import Design
from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Grouping:
    """One random-intercept factor.

    Attributes
    ----------
    factor : str
        Column of ``obs`` that defines the groups.
    levels : pandas.Index
        Group labels, in the order of the group index.
    sums : GroupSums
        Group of each observation.
    """

    factor: str
    levels: pd.Index
    sums: GroupSums

    @property
    def n_groups(self) -> int:
        """Number of groups."""
        return len(self.levels)


def parse_random_effects(
    random_effects: str | Sequence[str], obs: pd.DataFrame | None, n_obs: int, loc: Design
) -> list[Grouping]:
    """Check ``random_effects`` and turn every factor into a group index.

    Parameters
    ----------
    random_effects : str or sequence of str
        Name(s) of the ``obs`` columns whose levels get random intercepts (several
        factors may be crossed or nested, e.g. ``["batch", "donor"]``).
    obs : pandas.DataFrame or None
        Observation annotations.
    n_obs : int
        Number of observations.
    loc : Design
        Fixed location design (with constraints), to reject a factor it already codes.

    Returns
    -------
    list of Grouping
        One per factor, in the given order.

    Raises
    ------
    ValueError
        Without ``obs``, for no or repeated names, an unknown column, missing labels, fewer
        than two levels, one level per observation, or a factor the fixed design already
        spans.
    """
    names = [random_effects] if isinstance(random_effects, str) else list(random_effects)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise ValueError(
            "`random_effects` must name one or several distinct columns of `obs`, but "
            f"{random_effects!r} was given."
        )
    return [_one_factor(name, obs, n_obs, loc) for name in names]


def _one_factor(factor: str, obs: pd.DataFrame | None, n_obs: int, loc: Design) -> Grouping:
    if obs is None:
        raise ValueError(
            f"`random_effects={factor!r}` names a column of `obs`, but no `obs` was given; "
            "pass `obs=` (or an AnnData with that column in .obs)."
        )
    if factor not in obs.columns:
        raise ValueError(
            f"`random_effects` column {factor!r} is not in `obs`; its columns are "
            f"{list(obs.columns)}."
        )
    labels = obs[factor]
    if len(labels) != n_obs:
        raise ValueError(f"`obs` has {len(labels)} rows but the data have {n_obs} observations.")
    if labels.isna().any():
        raise ValueError(
            f"`random_effects` column {factor!r} has {int(labels.isna().sum())} missing "
            "labels; every observation needs a group."
        )
    codes, levels = pd.factorize(labels, sort=True)
    n_groups = len(levels)
    if n_groups < 2 or n_groups >= n_obs:
        raise ValueError(
            f"`random_effects` column {factor!r} must have between 2 and n_obs - 1 "
            f"({n_obs - 1}) levels, but it has {n_groups}."
        )
    indicators = np.zeros((n_obs, n_groups))
    indicators[np.arange(n_obs), codes] = 1.0
    xc = loc.reduced
    rank_x = np.linalg.matrix_rank(xc)
    if np.linalg.matrix_rank(np.column_stack([xc, indicators])) == rank_x:
        # A formula naming the factor is refused earlier (design.check_random_not_fixed);
        # here the groups coincide with fixed-effect levels, e.g. one donor per condition.
        raise ValueError(
            f"`random_effects` factor {factor!r}: the fixed design `design_loc` already "
            f"separates each of its {n_groups} levels (e.g. every condition has a single "
            f"{factor}), so the {factor} variance cannot be told apart from the fixed "
            f"effects; it needs a fixed-effect level with at least two levels of {factor!r}."
        )
    return Grouping(
        factor, pd.Index(levels, name=factor), GroupSums(codes.astype(np.intp), n_groups)
    )
