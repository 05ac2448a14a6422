"""Separated features and runaway donor variances in tests of random-intercept fits.

A random-intercept fit (``bg.fit(..., random_effects="donor")``) of a gene whose counts
all sit on one side of the tested contrast (one cell with counts, or only the donors of one
condition) has no finite fixed-effect estimate, as a plain GLM: the estimate runs off
(``log2FoldChange`` of +-40) and the fit usually puts the donor variance at 0. Its model
Wald and likelihood-ratio tests are then wrong in both directions: the Wald statistic
collapses (Hauck & Donner 1977, JASA 72: 851-853), and the donor-level reference of
variances at 0 (:func:`batchglm.mixed.small_sample.donor_level_sf`) builds each donor's
level from the runaway estimate (``z_g = x_g a + log((S_g + 1/2) / (M_g + 1/2))`` is
``x_g a`` when the fitted donor sum ``M_g`` is 0), so a single cell with 5 counts got
``p = 3e-5`` from both tests. Genes whose donor variance runs off (counts in the cells of
one or two donors) are the mirror case: the Laplace approximation with a few donors and a
huge variance does not carry the donor-level evidence either.

:func:`donor_level_fallback` finds such features and tests them at the level of the
donors, the unit the condition is replicated over, by a pseudobulk quasi-likelihood F
test or a randomization (permutation) test:

* **Detection** (:func:`separated_mixed`): the rules of the plain fit
  (:mod:`batchglm.de.separation`): a tested combination that leaves the row space of the
  design rows whose fixed-effect fitted mean is not 0 (the estimate ran off), or, from the
  counts, of the design rows with some count (all zeros on one side). Such features get
  status ``separated`` in the test's table, and their ``log2FoldChange`` is capped at
  ``+-max_lfc`` as for plain fits.
* **Donor-level statistic**: each donor's log level ``z_g = log(S_g + c_g) - log N_g`` with
  ``S_g`` its count sum and ``N_g = sum_j s_j exp(x_j,w a_w)`` its size (size factors ``s_j``
  and the fitted within-donor effects; ``N_g`` does not involve the tested, donor-level
  coefficients, so a runaway estimate cannot enter), regressed on the donor-level design by
  unweighted least squares; ``F = (L b)' (L (X'X)^- L')^- (L b) / (r s^2)`` with
  ``s^2 = max(RSS / (G - p_b), mean_g 1 / (S_g + c_g))`` (the floor is the Poisson
  variance of a log sum and keeps ``F`` finite when all donors of a side are 0). The
  pseudocount ``c_g = 1/2 N_g / mean_h N_h`` is scaled to the donor's size, as edgeR scales
  its prior count to library sizes: donors without counts then share one level whatever
  their number of cells (with an unscaled 1/2, zeros of 300-cell control donors and of
  30-cell stimulated donors differed by log 10, and a gene seen in one donor got the
  smallest possible p-value when donor sizes differed between conditions).
* **Reference: the randomization distribution** of ``F`` over the reassignments of the
  donor-level design rows to donors (within strata of equal rows of the reduced design,
  so nuisance factors such as batch stay fixed): all distinct assignments when there are
  at most 5,000, else 1,999 random ones (seeded, ``p = (1 + #) / (1 + B)``). Under the
  null of no effect and random assignment of conditions to donors this p-value is valid
  whatever the distribution of the counts (Fisher's randomization test; e.g. Ernst 2004,
  *Statistical Science* 19: 676-685), and discrete: with 3 vs 3 donors the smallest
  two-sided p-value is ``2 / 20 = 0.1``, with 4 vs 4 ``2 / 70``, with 6 vs 6 ``2 / 924``.
  A gene with counts in one donor gets ``p = 1``: every assignment puts that donor on some
  side.

* **Parametric donor-level test: pseudobulk + QL F** (:func:`pseudobulk_ql`). The
  randomization p-value ignores how many reads the donors of one side have: a gene with
  hundreds of reads in every control donor and none in any stimulated cell gets the same
  ``2 / 70`` at 4 vs 4 donors as one with a read in each control donor, so at 4 vs 4 the
  clearest DE genes were never called at ``q < 0.05``. The pseudobulk test sums every
  feature's counts per donor (``G x F``, cheap), fits them by a plain NB GLM on the
  donor-level columns of the fixed design (size factors: the donors' sums of cell size
  factors) and takes :func:`batchglm.de.ql_f`'s p-value: its dispersion trend and QL prior
  borrow from all features, and its conditional NB floor for a zero side
  (:func:`batchglm.de.separation.ql_floor`) keeps separated features with few reads
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
  which had NaN p-values. Runaway-variance features (below) keep the randomization bound.

Separated features without the pseudobulk test get the randomization p-value
(``stat_kind == "donor_permutation"``, ``stat`` the donor-level ``F``). In tests of
donor-level coefficients, features whose donor variance is above :data:`VAR_RUNAWAY`
keep their model test, but their p-value is raised to the randomization p-value where
that is larger (then ``stat_kind == "donor_permutation"`` too). Separated features whose
tested combination varies within donors, or whose design leaves no reassignment (and
that have no pseudobulk test), cannot be tested at the donor level: they get ``NaN``
p-values and a warning.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from itertools import product
from math import comb
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from batchglm.de.result import DEResult
from batchglm.de.separation import outside_kept_rows
from batchglm.inputs import data_of_fit
from batchglm.mixed.fit import VAR_AT_BOUND
from batchglm.obs_weights import counted_offsets, is_weighted
from batchglm.result import FitResult
from batchglm.solvers.objective import unique_rows
from batchglm.solvers.status import Status

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Donor variances (natural-log scale) above this count as running off: a donor-to-donor
#: standard deviation of 2, donors 7.4-fold apart at one SD. Genes with counts in the
#: cells of one donor reach 5-7 here.
VAR_RUNAWAY = 4.0

#: Fewest features for the pseudobulk QL test of separated features: its mean-dispersion
#: trend and QL prior are estimated across features.
MIN_FEATURES_QL = 50

#: Fewest residual donor degrees of freedom (donors minus donor-level coefficients) for the
#: pseudobulk QL test; below this the randomization test stays.
MIN_DONOR_DF = 3

#: Enumerate all distinct assignments of the donor-level design up to this many.
MAX_EXACT = 5000

#: Random assignments when there are more.
N_RANDOM = 1999

#: Fitted log-means below the family's ``separated_eta`` plus this count as zero (as in
#: :mod:`batchglm.de.separation`).
_ETA_MARGIN = 3.0

#: Elements of one block of (observations or assignments x donors) x features.
_CHUNK_ELEMENTS = 1 << 22

#: Relative tolerance for ties of the randomization statistic.
_TIE_RTOL = 1e-7


def donor_level_fallback(
    de: DEResult, lmat: Array | None, data: Any, layer: str | None = None
) -> DEResult:
    """Donor-level randomization p-values for separated and runaway-variance features.

    Parameters
    ----------
    de : DEResult
        A Wald or likelihood-ratio test of a fit; returned as it is unless the fit has
        random effects and the test is of the location model.
    lmat : ndarray or None
        Tested rows ``L`` over the tested model's coefficients, shape ``(r, p)``; ``None``
        for a likelihood-ratio test (the rows are derived from ``de.fit`` and
        ``de.reduced``, see :func:`lrt_rows`).
    data : array_like, scipy.sparse, pandas.DataFrame, AnnData or None
        The counts of the fit, ``(n_obs, n_features)``; ``None`` uses ``de.fit.data``.
    layer : str, optional
        AnnData layer of ``data``.

    Returns
    -------
    DEResult
        With status ``separated`` (in ``de.fit``, a copy of the fit) and a donor-level
        p-value for separated features: the pseudobulk QL F test (``stat_kind ==
        "pseudobulk_ql_f"``, :func:`pseudobulk_ql`) where it applies, else the
        randomization p-value (``"donor_permutation"``); p-values raised to the
        randomization p-value for features whose donor variance exceeds
        :data:`VAR_RUNAWAY`. See the module notes.

    Raises
    ------
    ValueError
        When ``data`` is not the fit's data (see :func:`batchglm.inputs.data_of_fit`).

    Warns
    -----
    UserWarning
        For separated features that cannot be tested at the donor level (the tested
        combination varies within donors, the design leaves no reassignment of donors, or
        no data are available): their p-values are ``NaN``.
    """
    res = de.fit
    if res.random is None or res.random.index is None or de.model != "loc":
        return de
    if lmat is not None:
        l_free = lmat @ res.loc.constraints
    elif de.reduced is not None:
        l_free = lrt_rows(res, de.reduced)
    else:
        return de
    basis = _row_basis(l_free)
    if basis.shape[0] == 0:
        return de
    cand = np.flatnonzero(de.converged & (res.status_codes != Status.ALL_ZERO))
    if cand.size == 0:
        return de
    if data is None:
        data, layer = res.data, None
    groups = res.random.index[0]
    between = group_level_columns(res.loc.reduced, groups)
    group_level = bool(np.all(np.abs(basis[:, ~between]) <= 1e-10 * np.abs(basis).max()))
    if data is None:
        sep = separated_mixed(res, basis, cand, None)
        return _untestable(de, cand[sep], "the fit has no data", "pass the fit's counts as `data=`")
    d = data_of_fit(data, res, layer=layer)
    sep = separated_mixed(res, basis, cand, d)
    runaway = ~sep & (res.random.variance[cand, 0] > VAR_RUNAWAY)
    if not group_level:
        return _untestable(
            de,
            cand[sep],
            "their tested combination varies within donors and has no donor-level test",
            f"aggregate to pseudobulk (bg.pseudobulk(adata, sample={res.random.factors[0]!r}), "
            "a fit without random_effects, then bg.de.ql_f), or test a donor-level coefficient",
        )
    # Both variance components on their bounds (NB scale at its Poisson end, donor
    # variance 0): the model is a cell-level Poisson GLM, which treats cells as
    # independent replicates of the condition. Sparse genes end there (a handful of reads);
    # their Wald p-values rejected 0.14 (4 vs 4) and 0.26 (6 vs 6) of null genes in
    # benchmarks/mixed_separation_pseudobulk.py. They are never more significant than the
    # donor-level pseudobulk QL test of the same contrast.
    poisson = cand[
        ~sep
        & ~runaway
        & (res.random.variance[cand, 0] < VAR_AT_BOUND)
        & (res.status_codes[cand] == Status.SCALE_AT_BOUND)
    ]
    pb = pseudobulk_ql(res, d, basis, groups, between) if sep.any() or poisson.size else None
    if pb is not None and poisson.size:
        de = _raised_to_pseudobulk(de, poisson, pb[0][poisson], pb[1][poisson])
    todo = cand[sep | runaway]
    if todo.size == 0:
        return de
    stat_obs, pval_perm = donor_randomization(res, d, basis, todo, groups, between)
    if pval_perm is None and pb is not None:
        # No reassignment (a donor-level covariate with a value per donor): the pseudobulk
        # QL test still applies; runaway-variance features keep their model test.
        hit = cand[sep]
        return _with_donor_test(de, hit, pb[0][hit], pb[1][hit], "pseudobulk_ql_f", hit.size, 0)
    if pval_perm is None:
        return _untestable(
            de,
            cand[sep],
            "no reassignment of donors to the tested design rows leaves the reduced design "
            "unchanged (each donor has its own nuisance row, e.g. a donor-level covariate "
            "such as age with a value per donor; the donor-level permutation test needs such "
            "reassignments)",
            f"use pseudobulk counts (bg.pseudobulk(adata, sample="
            f"{res.random.factors[0]!r}), bg.fit of the same fixed design without "
            "random_effects, then bg.de.ql_f), or drop the donor-level covariate (or coarsen "
            "it so that donors share its values)",
        )
    stat, pval = de.stat.copy(), de.pval.copy()
    kind = de.kind.astype(object).copy()
    is_sep = np.isin(todo, cand[sep])
    hit = todo[is_sep]
    stat[hit], pval[hit], kind[hit] = stat_obs[is_sep], pval_perm[is_sep], "donor_permutation"
    if pb is not None:
        stat[hit], pval[hit], kind[hit] = pb[0][hit], pb[1][hit], "pseudobulk_ql_f"
    high = todo[~is_sep]
    raise_p = pval_perm[~is_sep] > pval[high]
    pval[high[raise_p]] = pval_perm[~is_sep][raise_p]
    kind[high[raise_p]] = "donor_permutation"
    route = "donor_permutation" if pb is None else "pseudobulk_ql_f"
    return _with_donor_test(
        replace(de, stat=stat, pval=pval, stat_kind=kind.astype(str)),
        hit,
        stat[hit],
        pval[hit],
        route,
        hit.size,
        int(raise_p.sum()),
    )


def _raised_to_pseudobulk(
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
            "variance 0) raised to the pseudobulk QL p-value (see batchglm.de.mixed_separation)",
            int(raise_p.sum()),
        )
    return replace(de, stat=stat, pval=pval, stat_kind=kind.astype(str))


def _with_donor_test(
    de: DEResult,
    hit: NDArray[np.intp],
    stat_hit: Array,
    pval_hit: Array,
    route: str,
    n_sep: int,
    n_raised: int,
) -> DEResult:
    """Status ``separated``, the donor-level statistic and p-value for the features ``hit``."""
    res = de.fit
    stat, pval = de.stat.copy(), de.pval.copy()
    kind = de.kind.astype(object).copy()
    stat[hit], pval[hit], kind[hit] = stat_hit, pval_hit, route
    codes = res.status_codes.copy()
    codes[hit] = Status.SEPARATED
    if n_sep or n_raised:
        logger.info(
            "%d separated feature(s) tested at the donor level (%s) and %d with donor "
            "variance above %g raised to the randomization p-value (see "
            "batchglm.de.mixed_separation)",
            n_sep,
            route,
            n_raised,
            VAR_RUNAWAY,
        )
    return replace(
        de,
        fit=replace(res, status_codes=codes),
        stat=stat,
        pval=pval,
        stat_kind=kind.astype(str),
    )


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
    zero-side floor, :func:`batchglm.de.separation.ql_floor`, use every feature). This
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
    counts = _dense(ind @ d.values)  # (G, F): donors x features, small
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


def lrt_rows(full: FitResult, reduced: FitResult) -> Array:
    """Return the tested rows of a likelihood-ratio test over the free location parameters.

    Parameters
    ----------
    full, reduced : FitResult
        The nested fits.

    Returns
    -------
    ndarray
        ``(r, k)``: a basis of the directions ``d`` of the free location parameters whose
        fitted values ``X C d`` leave the reduced model's column space (``r`` the location
        degrees of freedom of the test). Computed from ``(I - Q Q') X C`` with ``Q`` an
        orthonormal basis of the reduced design, ``(n_obs, k)`` memory.
    """
    xf, xr = full.loc.reduced, reduced.loc.reduced
    q, s, _ = np.linalg.svd(xr, full_matrices=False)
    q = q[:, s > 1e-10 * max(s.max(initial=0.0), 1e-300)]
    resid = xf - q @ (q.T @ xf)
    return _row_basis(resid, rtol=1e-8)


def group_level_columns(x: Array, groups: NDArray[np.intp]) -> NDArray[np.bool_]:
    """Columns of a design that are constant within groups.

    Parameters
    ----------
    x : ndarray
        ``(n_obs, k)`` design.
    groups : ndarray of int
        ``(n_obs,)`` group of each observation.

    Returns
    -------
    ndarray of bool
        ``(k,)``.
    """
    n_groups = int(groups.max()) + 1
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    means = np.zeros((n_groups, x.shape[1]))
    np.add.at(means, groups, x)
    means /= sizes[:, None]
    return np.all(np.isclose(means[groups], x, rtol=1e-10, atol=1e-12), axis=0)


def separated_mixed(
    res: FitResult, l_free: Array, features: NDArray[np.intp], d: Any
) -> NDArray[np.bool_]:
    """Features of a mixed fit separated in the tested direction.

    Parameters
    ----------
    res : FitResult
        A random-intercept fit.
    l_free : ndarray
        ``(r, k)`` tested rows over the free location parameters (a basis).
    features : ndarray of int
        Candidate features (converged, not all zero).
    d : Data or None
        The fit's data; ``None`` uses the fit-based rule only.

    Returns
    -------
    ndarray of bool
        One value per entry of ``features``: True where some tested row leaves the row
        space of the distinct design rows that keep a non-zero fixed-effect fitted mean
        (``x a + log s`` above the family's ``separated_eta + 3``, random intercepts at 0:
        the estimate ran off), or that keep some count (all zeros on one side). These are
        the rules of :func:`batchglm.de.separation.separated_in_direction`, applied to
        every converged feature: the fit's own ``separated`` status (fixed-effect fitted
        mean below ``separated_eta``, without the margin) does not catch all of them.
    """
    out = np.zeros(features.size, dtype=bool)
    eta_sep = res.family.separated_eta
    if eta_sep is None or features.size == 0:
        return out
    rows, inverse = unique_rows(res.loc.reduced)
    n_obs = len(res.obs_names)
    ind = sparse.csr_array((np.ones(n_obs), (inverse, np.arange(n_obs))), shape=(len(rows), n_obs))
    k = res.loc.n_free
    step = max(1, _CHUNK_ELEMENTS // n_obs)
    cache: dict[bytes, bool] = {}
    for start in range(0, features.size, step):
        part = features[start : start + step]
        offsets = counted_offsets(res, part)
        max_offset = np.full((rows.shape[0], offsets.shape[1]), -np.inf)
        np.maximum.at(max_offset, inverse, offsets)
        zero = rows @ res.theta_free[part, :k].T + max_offset < eta_sep + _ETA_MARGIN
        if d is not None:
            zero |= _dense(ind @ _columns(d, part)) <= 0
        out[start : start + part.size] = outside_kept_rows(l_free, rows, zero, cache)
    return out


def donor_randomization(
    res: FitResult,
    d: Any,
    l_free: Array,
    features: NDArray[np.intp],
    groups: NDArray[np.intp],
    between: NDArray[np.bool_],
) -> tuple[Array, Array | None]:
    """Donor-level F statistic and its randomization p-value.

    Parameters
    ----------
    res : FitResult
        The random-intercept fit.
    d : Data
        Its data.
    l_free : ndarray
        ``(r, k)`` tested rows (a basis), zero on columns that vary within donors.
    features : ndarray of int
        Features to test.
    groups : ndarray of int
        ``(n_obs,)`` donor of each observation (the first random-effects factor).
    between : ndarray of bool
        ``(k,)`` free location columns constant within donors.

    Returns
    -------
    stat : ndarray
        ``(len(features),)`` observed donor-level F statistic (see the module notes).
    pvalue : ndarray or None
        Its randomization p-value (two-sided through ``F``); ``None`` when the design
        admits no reassignment other than the observed one.
    """
    n_obs = len(res.obs_names)
    n_groups = int(groups.max()) + 1
    ind = sparse.csr_array((np.ones(n_obs), (groups, np.arange(n_obs))), shape=(n_groups, n_obs))
    xc = res.loc.reduced
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    xb = (ind @ xc[:, between]) / sizes[:, None]
    lb = l_free[:, between]
    assignments = _assignments(xb, lb)
    if assignments.shape[0] < 2:
        return np.full(features.size, np.nan), None
    exact = assignments.shape[0] <= MAX_EXACT
    if not exact:
        assignments = _random_assignments(xb, lb, N_RANDOM)
    designs = xb[assignments]  # (P, G, kb); row 0 is the observed assignment
    pinv = np.linalg.pinv(designs)  # (P, kb, G)
    hat_l = lb @ pinv  # (P, r, G)
    m = hat_l @ hat_l.transpose(0, 2, 1)  # (P, r, r)
    m_inv = np.linalg.pinv(m)
    rank = max(int(np.linalg.matrix_rank(m[0])), 1)
    df = max(n_groups - int(np.linalg.matrix_rank(xb)), 1)
    within = np.flatnonzero(~between)
    n_assign = designs.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(n_obs, n_assign * n_groups))
    stat = np.empty(features.size)
    pval = np.empty(features.size)
    for start in range(0, features.size, step):
        part = features[start : start + step]
        counts = _dense(ind @ _columns(d, part))  # (G, F)
        eta_w = counted_offsets(res, part) + xc[:, within] @ res.theta_free[part][:, within].T
        top = eta_w.max(axis=0, keepdims=True)
        log_n = np.log(_dense(ind @ np.exp(eta_w - top))) + top
        # Pseudocount 1/2 scaled to each donor's size (relative to the mean donor), as
        # edgeR scales prior counts to library sizes: donors with no counts then all have
        # the same level whatever their number of cells, so donor sizes that differ
        # between conditions cannot make an effect out of zeros.
        rel = np.exp(log_n - log_n.max(axis=0, keepdims=True))
        prior = 0.5 * rel / rel.mean(axis=0, keepdims=True)
        z = np.log(counts + prior) - log_n  # (G, F)
        floor = (1.0 / (counts + prior)).mean(axis=0)
        beta = pinv @ z  # (P, kb, F)
        rss = ((z - designs @ beta) ** 2).sum(axis=1)  # (P, F)
        est = lb @ beta  # (P, r, F)
        quad = np.einsum("pif,pij,pjf->pf", est, m_inv, est)
        f_stat = quad / (rank * np.maximum(rss / df, floor))
        observed = f_stat[0]
        ge = f_stat >= observed * (1.0 - _TIE_RTOL)
        stat[start : start + part.size] = observed
        if exact:
            pval[start : start + part.size] = ge.mean(axis=0)
        else:
            pval[start : start + part.size] = ge.sum(axis=0) / n_assign
    return stat, pval


def _assignments(xb: Array, lb: Array) -> NDArray[np.intp]:
    """All distinct reassignments of donor-level design rows within nuisance strata.

    Row 0 is the identity. Returns at most ``MAX_EXACT + 1`` rows; more means "too many".
    """
    labels, strata = _labels_and_strata(xb, lb)
    n_groups = xb.shape[0]
    per_stratum: list[list[tuple[NDArray[np.intp], tuple[int, ...]]]] = []
    total = 1
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        _, counts = np.unique(labels[members], return_counts=True)
        total *= _multinomial(counts)
        if total > MAX_EXACT:
            return np.zeros((MAX_EXACT + 1, n_groups), dtype=np.intp)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        per_stratum.append(
            [(members, arr) for arr in _multiset_permutations(tuple(labels[members]))]
        )
    # A representative donor for each design label: assigning label l to donor g gives g
    # the design row of that representative.
    rep = {int(lab): int(np.flatnonzero(labels == lab)[0]) for lab in np.unique(labels)}
    out = [np.arange(n_groups)]
    identity = tuple(labels.tolist())
    for combo in product(*per_stratum):
        lab = np.array(labels)
        for members, arr in combo:
            lab[members] = arr
        if tuple(lab.tolist()) == identity:
            continue
        assign = np.array([rep[int(v)] for v in lab])
        out.append(assign)
    return np.asarray(out, dtype=np.intp)


def _random_assignments(xb: Array, lb: Array, n: int) -> NDArray[np.intp]:
    """Return the identity and ``n`` random permutations of donors within nuisance strata."""
    _, strata = _labels_and_strata(xb, lb)
    rng = np.random.default_rng(0)
    n_groups = xb.shape[0]
    out = np.tile(np.arange(n_groups), (n + 1, 1))
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        out[1:, members] = rng.permuted(np.tile(members, (n, 1)), axis=1)
    return out


def _labels_and_strata(xb: Array, lb: Array) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Distinct donor-level design rows (labels) and distinct reduced-design rows (strata)."""
    _, s, vt = np.linalg.svd(lb, full_matrices=True)
    rank = int((s > 1e-10 * max(s.max(initial=0.0), 1e-300)).sum())
    reduced = xb @ vt[rank:].T
    labels = np.unique(np.round(xb, 10), axis=0, return_inverse=True)[1].ravel()
    if reduced.shape[1] == 0:
        strata = np.zeros(xb.shape[0], dtype=np.intp)
    else:
        strata = np.unique(np.round(reduced, 10), axis=0, return_inverse=True)[1].ravel()
    return labels.astype(np.intp), strata.astype(np.intp)


def _multinomial(counts: NDArray[np.intp]) -> int:
    n = int(counts.sum())
    out = 1
    for c in counts:
        out *= comb(n, int(c))
        n -= int(c)
    return out


def _multiset_permutations(items: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Distinct orderings of a multiset (few: bounded by ``MAX_EXACT``)."""
    if len(items) <= 1:
        return [items]
    out: list[tuple[int, ...]] = []
    for v in sorted(set(items)):
        rest = list(items)
        rest.remove(v)
        out.extend((v, *tail) for tail in _multiset_permutations(tuple(rest)))
    return out


def _row_basis(mat: Array, rtol: float = 1e-10) -> Array:
    """Orthonormal basis of the row space of ``mat`` (right singular vectors)."""
    if mat.size == 0:
        return np.zeros((0, mat.shape[1]))
    _, s, vt = np.linalg.svd(mat, full_matrices=False)
    return vt[s > rtol * max(s.max(initial=0.0), 1e-300)]


def _columns(d: Any, part: NDArray[np.intp]) -> Any:
    """Columns of the data (dense array or scipy.sparse), without densifying sparse data."""
    values = d.values[:, part]
    return values.tocsc() if sparse.issparse(values) else np.asarray(values, dtype=np.float64)


def _dense(value: Any) -> Array:
    return np.asarray(value.toarray() if sparse.issparse(value) else value, dtype=np.float64)


def _untestable(de: DEResult, features: NDArray[np.intp], why: str, todo: str) -> DEResult:
    """Status ``separated`` and NaN p-values, with one warning naming the features.

    The warning names the first 5 features, says why they have no test (``why``) and what to
    do (``todo``).
    """
    if features.size == 0:
        return de
    res = de.fit
    names = ", ".join(str(n) for n in res.feature_names[features[:5]])
    more = f" and {features.size - 5} more" if features.size > 5 else ""
    warnings.warn(
        f"{features.size} feature(s) ({names}{more}) of the random-effects fit are separated "
        f"in the tested direction ({de.tested}): their fixed-effect estimate runs off and "
        f"their model tests are invalid; {why}, so they get NaN p-values. To test them, "
        f"{todo}.",
        UserWarning,
        stacklevel=4,
    )
    codes = res.status_codes.copy()
    codes[features] = Status.SEPARATED
    stat, pval = de.stat.copy(), de.pval.copy()
    kind = de.kind.astype(object).copy()
    stat[features], pval[features], kind[features] = np.nan, np.nan, "none"
    return replace(
        de,
        fit=replace(res, status_codes=codes),
        stat=stat,
        pval=pval,
        stat_kind=kind.astype(str),
    )
