"""Donor-level randomization test of separated features of random-intercept fits.

The fallback of :mod:`batchglm.de.mixed_separation` when the pseudobulk QL test
(:mod:`batchglm.de.pseudobulk_ql`) does not apply, and the bound of runaway-variance
features.

**Statistic.** Each donor's log level ``z_g = log(S_g + c_g) - log N_g`` with
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
**Reference: the randomization distribution** of ``F`` over the reassignments of the
donor-level design rows to donors (within strata of equal rows of the reduced design,
so nuisance factors such as batch stay fixed): all distinct assignments when there are
at most 5,000, else 1,999 random ones (seeded, ``p = (1 + #) / (1 + B)``). Under the
null of no effect and random assignment of conditions to donors this p-value is valid
whatever the distribution of the counts (Fisher's randomization test; e.g. Ernst 2004,
*Statistical Science* 19: 676-685), and discrete: with 3 vs 3 donors the smallest
two-sided p-value is ``2 / 20 = 0.1``, with 4 vs 4 ``2 / 70``, with 6 vs 6 ``2 / 924``.
A gene with counts in one donor gets ``p = 1``: every assignment puts that donor on some
side.
"""

from __future__ import annotations

from itertools import product
from math import comb
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.obs_weights import counted_offsets
from batchglm.result import FitResult

Array = NDArray[np.float64]

#: Enumerate all distinct assignments of the donor-level design up to this many.
MAX_EXACT = 5000

#: Random assignments when there are more.
N_RANDOM = 1999

#: Elements of one block of (observations or assignments x donors) x features.
CHUNK_ELEMENTS = 1 << 22

#: Relative tolerance for ties of the randomization statistic.
TIE_RTOL = 1e-7


def donor_sums(ind: Any, d: Any, part: NDArray[np.intp]) -> Array:
    """Count sums of the features ``part`` per row of the indicator ``ind``, dense.

    Parameters
    ----------
    ind : scipy.sparse array
        ``(G, n_obs)`` 0/1 indicator of each group's observations.
    d : Data
        The counts, ``(n_obs, n_features)``, dense or scipy.sparse (not densified).
    part : ndarray of int
        Features.

    Returns
    -------
    ndarray
        ``(G, len(part))`` sums.
    """
    return _dense(ind @ _columns(d, part))


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
    step = max(1, CHUNK_ELEMENTS // max(n_obs, n_assign * n_groups))
    stat = np.empty(features.size)
    pval = np.empty(features.size)
    for start in range(0, features.size, step):
        part = features[start : start + step]
        counts = donor_sums(ind, d, part)  # (G, F)
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
        ge = f_stat >= observed * (1.0 - TIE_RTOL)
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


def _columns(d: Any, part: NDArray[np.intp]) -> Any:
    """Columns of the data (dense array or scipy.sparse), without densifying sparse data."""
    values = d.values[:, part]
    return values.tocsc() if sparse.issparse(values) else np.asarray(values, dtype=np.float64)


def _dense(value: Any) -> Array:
    return np.asarray(value.toarray() if sparse.issparse(value) else value, dtype=np.float64)
