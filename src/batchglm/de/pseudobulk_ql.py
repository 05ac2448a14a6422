"""Pseudobulk quasi-likelihood F test of donor-level contrasts inside a random-intercept fit.

Used by :mod:`batchglm.de.mixed_separation` for the features of a random-intercept fit
whose model test is invalid (separated features) or anti-conservative (both variance
components on their bounds).

Why not the randomization test alone (:mod:`batchglm.de.donor_randomization`): its
p-value ignores how many reads the donors of one side have: a gene with
hundreds of reads in every control donor and none in any stimulated cell gets the same
``2 / 70`` at 4 vs 4 donors as one with a read in each control donor, so at 4 vs 4 the
clearest DE genes were never called at ``q < 0.05``. The pseudobulk test sums every
feature's counts per donor (``G x F``, cheap), fits them by a plain NB GLM on the
donor-level columns of the fixed design (size factors: the donors' sums of cell size
factors) and takes :func:`batchglm.de.ql_f`'s p-value: its dispersion trend and QL prior
borrow from all features, and its conditional NB floor for a zero side
(:func:`batchglm.de.separated_tests.ql_floor`) keeps separated features with few reads
calibrated. Columns that vary within donors (e.g. a cell-level covariate) are left out,
as in the pseudobulk a user would run; the p-value equals ``bg.pseudobulk(adata,
sample=<factor>)`` + ``bg.fit(pb, <donor-level formula>, size_factors=<sums>)`` +
``bg.de.ql_f``.

Decision: for separated features this p-value **replaces** the randomization p-value
(``stat_kind == "pseudobulk_ql_f"``, ``stat`` the QL F) whenever it is available: at
least :data:`MIN_FEATURES_QL` features (the trend and prior are estimated across
features) and :data:`MIN_DONOR_DF` residual donor degrees of freedom, NB family, no
observation weights or offsets. Combining (e.g. the larger of the two) would keep the
``2 / 70`` floor that made these genes invisible. On simulations (4 vs 4 and 6 vs 6
donors, 20-500 cells, donor SD 0.2-0.4, 6 seeds each; ``docs/mixed_separation.md``)
separated null features were rejected at 0.05 in 1/100 (4 vs 4) and 0/88 (6 vs 6)
cases, on/off genes at ``q < 0.05`` in 48/48 and 48/48 (randomization: 0/48 and 46/48).
Otherwise the randomization test stays. The pseudobulk test also covers designs that
leave no reassignment of donors (a donor-level covariate with a value per donor),
which had NaN p-values. Runaway-variance features keep the randomization bound.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from batchglm.de.result import DEResult
from batchglm.obs_weights import is_weighted
from batchglm.result import FitResult

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Fewest features for the pseudobulk QL test of separated features: its mean-dispersion
#: trend and QL prior are estimated across features.
MIN_FEATURES_QL = 50

#: Fewest residual donor degrees of freedom (donors minus donor-level coefficients) for the
#: pseudobulk QL test; below this the randomization test stays.
MIN_DONOR_DF = 3


def pseudobulk_ql(
    res: FitResult,
    d: Any,
    l_free: Array,
    groups: NDArray[np.intp],
    between: NDArray[np.bool_],
) -> tuple[Array, Array] | None:
    """Quasi-likelihood F test of the donor sums of every feature on the donor-level design.

    The pseudobulk route (edgeR's ``glmQLFit`` + ``glmQLFTest`` on donor sums; Crowell et
    al. 2020, *Nat. Commun.* 11: 6077; Squair et al. 2021, *Nat. Commun.* 12: 5692), run
    inside the test of a random-intercept fit: each feature's counts are summed per donor
    (the first random-effects factor), the sums are fitted by a plain NB GLM on the
    donor-level columns of the fixed design with size factors ``sum_j s_j`` per donor, and
    :func:`batchglm.de.ql_f` tests the same combination (its dispersion trend, QL prior and
    zero-side floor, :func:`batchglm.de.separated_tests.ql_floor`, use every feature). This
    equals ``bg.pseudobulk`` + ``bg.fit`` of the donor-level design + ``bg.de.ql_f``.

    Parameters
    ----------
    res : FitResult
        The random-intercept fit (NB family).
    d : Data
        Its data, ``(n_obs, n_features)``.
    l_free : ndarray
        ``(r, k)`` tested rows over the free location parameters (a basis), zero on the
        columns that vary within donors.
    groups : ndarray of int
        ``(n_obs,)`` donor of each observation.
    between : ndarray of bool
        ``(k,)`` free location columns constant within donors.

    Returns
    -------
    tuple of ndarray or None
        ``(stat, pvalue)``, each ``(n_features,)``: the QL F statistic and its p-value (natural
        scale). ``None`` when the route does not apply (see :data:`MIN_FEATURES_QL` and
        :data:`MIN_DONOR_DF`): not an NB fit, observation weights or offsets, fewer than
        :data:`MIN_FEATURES_QL` features, a rank-deficient donor-level design, or fewer
        than :data:`MIN_DONOR_DF` residual donor degrees of freedom.
    """
    # Imported here: de.ql imports de.wald, which imports this module.
    from batchglm.de.ql import ql_f
    from batchglm.fit import fit

    if res.family != "nb" or len(res.feature_names) < MIN_FEATURES_QL or is_weighted(res):
        return None
    n_obs = len(res.obs_names)
    n_groups = int(groups.max()) + 1
    ind = sparse.csr_array((np.ones(n_obs), (groups, np.arange(n_obs))), shape=(n_groups, n_obs))
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    xb = (ind @ res.loc.reduced[:, between]) / sizes[:, None]
    rank = int(np.linalg.matrix_rank(xb))
    if rank < xb.shape[1] or n_groups - rank < MIN_DONOR_DF:
        return None
    summed = ind @ d.values  # (G, F): donors x features, small
    counts = np.asarray(summed.toarray() if sparse.issparse(summed) else summed, dtype=np.float64)
    # Each donor's size factor is the sum of its cells' (not rescaled: the QL trend's
    # abundance covariate depends on their scale, and this is what a user would pass).
    donor_sf = np.bincount(groups, weights=res.size_factors, minlength=n_groups)
    names = [f"x{i}" for i in range(xb.shape[1])]
    pb_fit = fit(
        pd.DataFrame(counts, columns=list(res.feature_names)),
        pd.DataFrame(xb, columns=names),
        size_factors=donor_sf,
        progress=False,
    )
    out = ql_f(pb_fit, contrast=l_free[:, between], progress=False)
    return out.stat, out.pval


def raised_to_pseudobulk(
    de: DEResult, hit: NDArray[np.intp], stat_pb: Array, pval_pb: Array
) -> DEResult:
    """Raise the p-values of ``hit`` to the pseudobulk QL test's where that is larger.

    Where raised, ``stat`` is the pseudobulk F statistic and ``stat_kind`` says so.
    """
    stat, pval = de.stat.copy(), de.pval.copy()
    kind = de.kind.astype(object).copy()
    with np.errstate(invalid="ignore"):
        raise_p = pval_pb > pval[hit]
    pval[hit[raise_p]] = pval_pb[raise_p]
    stat[hit[raise_p]] = stat_pb[raise_p]
    kind[hit[raise_p]] = "pseudobulk_ql_f"
    if raise_p.any():
        logger.info(
            "%d feature(s) with both variance components on their bounds (Poisson, donor "
            "variance 0) raised to the pseudobulk QL p-value (see batchglm.de.pseudobulk_ql)",
            int(raise_p.sum()),
        )
    return replace(de, stat=stat, pval=pval, stat_kind=kind.astype(str))
