"""A warning for tests of group-level effects with two or fewer groups per level.

With 2 vs 2 donors the small-sample references of :mod:`batchglm.mixed.small_sample` rest
on ``G - p_b = 2`` degrees of freedom and a variance estimated from four donors; in a user's
simulations (issue 15, 150 null genes per seed) the moderated mixed Wald test rejected
0.067 and 0.037 of nulls at 0.05 and ``moderate=False`` 0.007 and 0.013, so one run is
anti-conservative and the other has almost no power. ``docs/mixed_model.md``
(Limitations) prefers pseudobulk with ``bg.de.ql_f`` there (edgeR's quasi-likelihood F
test, Lun and Smyth 2017, on donor sums), whose dispersion is shared across genes by a
trend. This module says so when such a test is made.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from batchglm.warning_site import user_stacklevel

if TYPE_CHECKING:
    from batchglm.result import FitResult

Array = NDArray[np.float64]

#: At most this many groups in a level of a tested group-level effect triggers the warning.
MAX_GROUPS_WARNED = 2


class FewGroupsWarning(UserWarning):
    """A tested group-level effect has two or fewer groups (e.g. donors) in some level."""


def groups_per_level(group_design: Array, lmat: Array) -> NDArray[np.intp]:
    """Count the groups at each distinct value of the tested group-level columns.

    Parameters
    ----------
    group_design : ndarray
        ``(n_groups, p)`` group means of the location design.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the location coefficients.

    Returns
    -------
    ndarray of int
        Groups per distinct row of the tested columns (e.g. ``[2, 2]`` for a two-level
        condition with 2 donors each), in order of first appearance; empty for a
        continuous group-level covariate (more distinct values than half the groups).
    """
    used = np.any(lmat != 0, axis=0)
    rows = np.round(group_design[:, used], 10)
    _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    if counts.size > max(group_design.shape[0] // 2, 2):
        return np.zeros(0, dtype=np.intp)
    return counts[np.argsort(first)].astype(np.intp)


def warn_few_groups(res: FitResult, model: str, lmat: Array) -> None:
    """Warn when a tested group-level effect has at most two groups in a level.

    Parameters
    ----------
    res : FitResult
        The mixed fit under test (nothing happens for a fit without random effects).
    model : str
        ``"loc"`` or ``"scale"``.
    lmat : ndarray
        ``(n_tests, p)`` tested combinations of the location coefficients.

    Warns
    -----
    FewGroupsWarning
        Naming the first random-effect factor (the replicates), its groups per level, and
        pointing to ``bg.pseudobulk`` with ``bg.de.ql_f``.
    """
    ss = res.small_sample
    if ss is None or res.random is None or model != "loc" or ss.group_design is None:
        return
    used = np.any(lmat != 0, axis=0)
    if not (used.any() and ss.between[used].all()):
        return
    counts = groups_per_level(ss.group_design, lmat)
    if counts.size < 2 or counts.min() > MAX_GROUPS_WARNED:
        return
    factor = res.random.factors[0]
    per_level = " vs ".join(str(int(c)) for c in counts)
    warnings.warn(
        f"the tested effect has only {per_level} groups of {factor!r} per level; with "
        f"{MAX_GROUPS_WARNED} or fewer per level the mixed model's small-sample "
        f"reference is unreliable (docs/mixed_model.md, Limitations). Prefer "
        f"`bg.de.ql_f` on `bg.pseudobulk(adata, sample={factor!r})`.",
        FewGroupsWarning,
        stacklevel=user_stacklevel(),
    )


def warn_few_groups_lrt(full: FitResult, reduced: FitResult) -> None:
    """:func:`warn_few_groups` for the location columns a likelihood-ratio test drops.

    Parameters
    ----------
    full, reduced : FitResult
        The two fits of ``bg.de.lrt`` (nothing happens unless ``full`` is a mixed fit).

    Warns
    -----
    FewGroupsWarning
        As :func:`warn_few_groups`, when every dropped location column is group-level and a
        level of them has two or fewer groups of the first factor.
    """
    if full.small_sample is None or full.random is None:
        return
    from batchglm.nested_designs import outside_columns

    dropped = outside_columns(reduced.loc.reduced, full.loc.matrix)
    if not dropped:
        return
    lmat = np.zeros((len(dropped), full.loc.matrix.shape[1]))
    lmat[np.arange(len(dropped)), dropped] = 1.0
    warn_few_groups(full, "loc", lmat)
