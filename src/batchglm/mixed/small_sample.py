"""Denominator degrees of freedom of fixed effects in a random-intercept model.

The "between-within" rule (SAS PROC MIXED ``DDFM=BETWITHIN``; Pinheiro and Bates 2000,
*Mixed-Effects Models in S and S-PLUS*, section 2.4.2, as nlme computes it): a coefficient
whose design column is constant within every group (a condition that donors are nested in,
the intercept) is estimated from group-to-group contrasts and gets
``n_groups - rank(group-level design)`` degrees of freedom; a coefficient that varies
within groups (a cell-level covariate) gets the within-group residual degrees of freedom
``n_obs - n_groups - (rank(X) - rank(group-level design))``. With 4 vs 4 donors a condition
effect is then referred to a t distribution with 6 degrees of freedom instead of the
normal distribution, which is what keeps the Wald test calibrated with few donors.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]


def between_within_df(x: Array, groups: GroupSums) -> Array:
    """Denominator degrees of freedom per design column.

    Parameters
    ----------
    x : ndarray
        Full location design ``(n_obs, p)``.
    groups : GroupSums
        Random-intercept group of each observation.

    Returns
    -------
    ndarray
        ``(p,)`` degrees of freedom (at least 1).
    """
    n_obs = x.shape[0]
    n_groups = groups.n_groups
    sizes = np.bincount(groups.index, minlength=n_groups).astype(np.float64)[:, None]
    means = groups(x) / sizes
    between = np.all(np.isclose(groups.expand(means), x, rtol=1e-10, atol=1e-12), axis=0)
    rank_b = np.linalg.matrix_rank(x[:, between]) if between.any() else 0
    rank_x = np.linalg.matrix_rank(x)
    df_between = max(n_groups - rank_b, 1)
    df_within = max(n_obs - n_groups - (rank_x - rank_b), 1)
    return np.where(between, float(df_between), float(df_within))
