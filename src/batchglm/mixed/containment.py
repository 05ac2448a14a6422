"""The containment rule: which further random-effect factors contain the groups.

With ``random_effects=["donor", "batch"]`` and donors nested in batches that each hold both
conditions, a group-level coefficient (the condition) is compared between donors *within*
batches. SAS PROC MIXED's containment method (``DDFM=CONTAIN``) then gives the denominator
degrees of freedom ``d = G - rank([X_b, Z])`` (``Z`` the group-level indicators of the
containing factors; 4 vs 4 donors in 4 batches: 8 - 5 = 3 instead of 6), and the
maximum-likelihood divisor of the donor variance becomes ``G - rank(Z)``. Factors crossed
with the groups (each donor's cells on several plates) are estimated within groups and
subtract nothing; factors confounded with the condition are left out. Used by
:func:`batchglm.mixed.small_sample.between_within`; see ``docs/mixed_model.md``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]

logger = logging.getLogger("batchglm")


def containing_factors(
    groups: GroupSums, others: list[GroupSums], between_means: Array
) -> tuple[Array | None, list[int]]:
    """Group-level indicators of the factors that contain the groups, crossed with ``X_b``.

    Parameters
    ----------
    groups : GroupSums
        The first factor (the replicates, e.g. donors), ``G`` groups.
    others : list of GroupSums
        The further random-effect factors.
    between_means : ndarray
        ``(G, p_b)`` the group-level columns of the design at group level, ``X_b``.

    Returns
    -------
    nested : ndarray or None
        ``(G, q)`` the indicator columns of every further factor whose level is the same
        for all observations of each group (a batch that donors are nested in) and that is
        crossed with the group-level design (``rank([X_b, Z_k]) - rank(Z_k) =
        rank(X_b) - 1``: only the constant is shared, so each group-level effect other
        than the intercept is compared within the factor's levels); ``None`` when no factor
        qualifies (one factor, or only factors crossed with the groups, whose effects are
        estimated within groups and use no group-level degrees of freedom).
    kept : list of int
        Positions in ``others`` of the factors in ``nested``.

    Notes
    -----
    A factor confounded with a group-level column (whole batches of one condition) is left
    out: the condition is then compared between batches, a stratum this rule does not
    cover (docs/mixed_model.md, Limitations). Our own rule after SAS PROC MIXED's
    containment method (``DDFM=CONTAIN``).
    """
    g = groups.n_groups
    rank_b = int(np.linalg.matrix_rank(between_means)) if between_means.size else 0
    cols = []
    kept = []
    for k, other in enumerate(others):
        level = np.zeros(g, dtype=np.intp)
        level[groups.index] = other.index
        if not np.array_equal(level[groups.index], other.index):
            continue  # crossed with the groups: estimated within them
        present = np.unique(level)
        z = (level[:, None] == present[None, :]).astype(np.float64)
        rank_z = present.size
        joint = int(np.linalg.matrix_rank(np.hstack([between_means, z])))
        if between_means.size and joint - rank_z != rank_b - 1:
            logger.info(
                "a random-effect factor with %d levels is confounded with the group-level "
                "design; the containment rule leaves it out (docs/mixed_model.md)",
                rank_z,
            )
            continue
        cols.append(z)
        kept.append(k)
    return (np.hstack(cols) if cols else None), kept


def containment(
    groups: GroupSums,
    others: list[GroupSums],
    between_means: Array,
    other_at_zero: NDArray[np.bool_] | None = None,
) -> tuple[Array | None, int, int, Array | None]:
    """Containing factors and the ranks of the containment rule.

    Parameters
    ----------
    groups : GroupSums
        The first factor (the replicates, e.g. donors), ``G`` groups.
    others : list of GroupSums
        The further random-effect factors.
    between_means : ndarray
        ``(G, p_b)`` the group-level design ``X_b``.
    other_at_zero : ndarray of bool, optional
        ``(F, len(others))`` whether each further factor's fitted variance is at 0.

    Returns
    -------
    nested : ndarray or None
        ``(G, q)`` indicators of the containing factors (:func:`containing_factors`).
    rank_nested, rank_joint : int
        ``rank(Z)`` and ``rank([X_b, Z])`` (0 and 0 without ``nested``).
    n_ml : ndarray or None
        ``(F,)`` groups in the likelihood's group stratum: ``G - rank(Z)``, or ``G`` for
        features whose containing factors' variances are all at 0; ``None`` without
        ``nested`` or ``other_at_zero``.
    """
    nested, kept = containing_factors(groups, others, between_means)
    if nested is None:
        return None, 0, 0, None
    n_groups = groups.n_groups
    rank_z = int(np.linalg.matrix_rank(nested))
    rank_joint = int(np.linalg.matrix_rank(np.hstack([between_means, nested])))
    n_ml = None
    if other_at_zero is not None:
        at_zero = np.all(other_at_zero[:, kept], axis=1)
        n_ml = np.where(at_zero, float(n_groups), float(n_groups - rank_z))
    return nested, rank_z, rank_joint, n_ml
