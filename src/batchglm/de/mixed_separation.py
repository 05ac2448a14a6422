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
* **Donor-level randomization test** (:mod:`batchglm.de.donor_randomization`): an F
  statistic of the donors' log levels referred to its distribution over reassignments of
  the donor-level design rows to donors (Fisher's randomization test).
* **Parametric donor-level test: pseudobulk + QL F**
  (:mod:`batchglm.de.pseudobulk_ql`). For separated features its p-value **replaces** the
  randomization p-value (``stat_kind == "pseudobulk_ql_f"``) whenever it is available; see
  that module for the test, the decision and its numbers. Runaway-variance features (below)
  keep the randomization bound.

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
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.de.donor_randomization import CHUNK_ELEMENTS, donor_randomization, donor_sums
from batchglm.de.pseudobulk_ql import pseudobulk_ql, raised_to_pseudobulk
from batchglm.de.result import DEResult
from batchglm.de.separation import outside_kept_rows
from batchglm.inputs import data_of_fit
from batchglm.mixed.fit import VAR_AT_BOUND
from batchglm.obs_weights import counted_offsets
from batchglm.result import FitResult
from batchglm.solvers.objective import unique_rows
from batchglm.solvers.status import Status

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

#: Donor variances (natural-log scale) above this count as running off: a donor-to-donor
#: standard deviation of 2, donors 7.4-fold apart at one SD. Genes with counts in the
#: cells of one donor reach 5-7 here.
VAR_RUNAWAY = 4.0

#: Fitted log-means below the family's ``separated_eta`` plus this count as zero (as in
#: :mod:`batchglm.de.separation`).
_ETA_MARGIN = 3.0


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
        "pseudobulk_ql_f"``, :mod:`batchglm.de.pseudobulk_ql`) where it applies, else the
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
        de = raised_to_pseudobulk(de, poisson, pb[0][poisson], pb[1][poisson])
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
    step = max(1, CHUNK_ELEMENTS // n_obs)
    cache: dict[bytes, bool] = {}
    for start in range(0, features.size, step):
        part = features[start : start + step]
        offsets = counted_offsets(res, part)
        max_offset = np.full((rows.shape[0], offsets.shape[1]), -np.inf)
        np.maximum.at(max_offset, inverse, offsets)
        zero = rows @ res.theta_free[part, :k].T + max_offset < eta_sep + _ETA_MARGIN
        if d is not None:
            zero |= donor_sums(ind, d, part) <= 0
        out[start : start + part.size] = outside_kept_rows(l_free, rows, zero, cache)
    return out


def _row_basis(mat: Array, rtol: float = 1e-10) -> Array:
    """Orthonormal basis of the row space of ``mat`` (right singular vectors)."""
    if mat.size == 0:
        return np.zeros((0, mat.shape[1]))
    _, s, vt = np.linalg.svd(mat, full_matrices=False)
    return vt[s > rtol * max(s.max(initial=0.0), 1e-300)]


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
