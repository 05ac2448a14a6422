"""Size factors by name: DESeq2's median ratio and poscounts, and normed sums."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg


def _counts(seed=0, n_obs=8, n_feat=300, zeros=0.0):
    rng = np.random.default_rng(seed)
    sf = np.exp(rng.normal(0.0, 0.4, n_obs))
    mean = np.exp(rng.uniform(0.0, 6.0, n_feat))
    y = rng.poisson(sf[:, None] * mean[None, :]).astype(float)
    if zeros:
        y[rng.random(y.shape) < zeros] = 0.0
    return y, sf


def _median_ratio_reference(y):
    # DESeq2's estimateSizeFactorsForMatrix written out gene by gene.
    with np.errstate(divide="ignore"):
        log_gm = np.log(y).mean(axis=0)
    use = np.isfinite(log_gm)
    return np.array([np.exp(np.median(np.log(row[use]) - log_gm[use])) for row in y])


def _poscounts_reference(y):
    n = y.shape[0]
    log_gm = np.array([np.log(c[c > 0]).sum() / n if (c > 0).any() else -np.inf for c in y.T])
    sf = []
    for row in y:
        ok = np.isfinite(log_gm) & (row > 0)
        sf.append(np.exp(np.median(np.log(row[ok]) - log_gm[ok])))
    sf = np.array(sf)
    return sf / np.exp(np.mean(np.log(sf)))


def test_median_ratio_matches_the_deseq2_formula_and_recovers_the_truth():
    y, sf = _counts()
    got = bg.size_factors(y, "median_ratio")
    np.testing.assert_allclose(got, _median_ratio_reference(y), rtol=1e-12)
    ratio = got / sf
    assert np.std(np.log(ratio)) < 0.05


def test_poscounts_matches_the_deseq2_formula_on_sparse_data():
    y, _ = _counts(1, n_obs=40, zeros=0.6)
    expected = _poscounts_reference(y)
    for data in (y, sparse.csr_array(y), sparse.csc_matrix(y)):
        np.testing.assert_allclose(bg.size_factors(data, "poscounts"), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["median_ratio", "poscounts", "normed_sum"])
def test_sparse_and_dense_agree(method):
    y, _ = _counts(2, zeros=0.0)
    dense = bg.size_factors(y, method)
    np.testing.assert_allclose(bg.size_factors(sparse.csr_matrix(y), method), dense, rtol=1e-12)


def test_normed_sum():
    y, _ = _counts(3)
    total = y.sum(axis=1)
    np.testing.assert_allclose(bg.size_factors(y, "normed_sum"), total / total.mean())


def test_fit_accepts_a_method_name():
    y, _ = _counts(4, n_feat=30)
    x = np.column_stack([np.ones(8), np.tile([0.0, 1.0], 4)])
    by_name = bg.fit(sparse.csr_matrix(y), x, size_factors="median_ratio", family="poisson")
    given = bg.fit(y, x, size_factors=bg.size_factors(y), family="poisson")
    np.testing.assert_allclose(by_name.size_factors, given.size_factors)
    np.testing.assert_allclose(by_name.coef_loc.to_numpy(), given.coef_loc.to_numpy())


def test_size_factor_errors():
    y, _ = _counts(5, n_feat=20)
    with pytest.raises(ValueError, match=r"must be an array or one of \['median_ratio'"):
        bg.size_factors(y, "rle")
    with pytest.raises(ValueError, match=r"must be an array or one of"):
        bg.fit(y, np.ones((8, 1)), size_factors="upper_quartile")
    holes = y.copy()
    holes[np.arange(20) % 8, np.arange(20)] = 0.0
    with pytest.raises(ValueError, match=r"every feature has a zero; use size_factors='poscounts'"):
        bg.size_factors(holes, "median_ratio")
    empty = y.copy()
    empty[3] = 0.0
    with pytest.raises(ValueError, match=r"observation 3 has none"):
        bg.size_factors(empty, "normed_sum")
    # An empty observation is named as such, whatever the method.
    with pytest.raises(ValueError, match=r"have no counts at all \(observation 3 first\)"):
        bg.size_factors(sparse.csr_matrix(empty), "poscounts")
    negative = y.copy()
    negative[0, 0] = -1.0
    with pytest.raises(ValueError, match=r"need finite, non-negative counts"):
        bg.size_factors(negative, "median_ratio")
    with pytest.raises(ValueError, match=r"need finite, non-negative counts"):
        bg.size_factors(sparse.csr_matrix(negative), "poscounts")


@pytest.mark.parametrize("method", ["median_ratio", "poscounts", "normed_sum"])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_invalid_counts_are_located_by_name(method: str, as_sparse: bool) -> None:
    y = np.random.default_rng(31).poisson(9.0, size=(7, 5)).astype(np.float64) + 1.0
    y[4, 2], y[5, 3], y[2, 4] = np.nan, -2.0, -1.0
    obs = pd.DataFrame(index=[f"lib{i}" for i in range(7)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(5)])
    data = ad.AnnData(sparse.csr_matrix(y) if as_sparse else y, obs=obs, var=var)
    # The first in observation order: -1 at (2, 4), before NaN at (4, 2).
    msg = (
        rf"size factors by '{method}' need finite, non-negative counts, but `data` has 3 "
        r"negative or non-finite values; the first is -1.0 at observation 2 \('lib2'\), "
        r"feature 4 \('gene4'\)\."
    )
    with pytest.raises(ValueError, match=msg):
        bg.size_factors(data, method)


@pytest.mark.parametrize("method", ["median_ratio", "poscounts", "normed_sum"])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_integer_weights_give_the_factors_of_duplicated_rows(method, as_sparse) -> None:
    # Reference: the unweighted estimator on the data with each row repeated `w` times.
    y, _ = _counts(seed=21, n_obs=9, n_feat=250, zeros=0.05 if method != "median_ratio" else 0.0)
    w = np.array([1, 3, 2, 1, 4, 1, 2, 3, 1], dtype=float)
    idx = np.repeat(np.arange(len(y)), w.astype(int))
    x = sparse.csr_matrix(y) if as_sparse else y
    got = bg.size_factors(x, method, weights=w)
    want = bg.size_factors(y[idx], method)
    first = np.searchsorted(idx, np.arange(len(y)))
    np.testing.assert_allclose(got, want[first], rtol=1e-12)
    # and the weights change them (the test can fail)
    assert np.max(np.abs(got / bg.size_factors(y, method) - 1)) > 1e-3


@pytest.mark.parametrize("method", ["median_ratio", "poscounts", "normed_sum"])
def test_weight_zero_observation_does_not_move_the_others(method) -> None:
    y, _ = _counts(seed=22, n_obs=8, n_feat=200, zeros=0.05 if method != "median_ratio" else 0.0)
    y[3] *= 7.0  # an odd observation, to make its influence visible
    y[3, :5] = 0.0  # zeros only there: features still used by median_ratio without it
    w = np.ones(len(y))
    w[3] = 0.0
    got = bg.size_factors(y, method, weights=w)
    keep = np.arange(len(y)) != 3
    want = bg.size_factors(y[keep], method)
    np.testing.assert_allclose(got[keep], want, rtol=1e-12)
    assert np.all(np.isfinite(got)) and got[3] > 0


def test_size_factor_weights_are_checked() -> None:
    y, _ = _counts(seed=23, n_obs=6, n_feat=50)
    with pytest.raises(ValueError, match=r"must have shape \(6,\).*shape \(5,\) was given"):
        bg.size_factors(y, weights=np.ones(5))
    with pytest.raises(ValueError, match="finite, non-negative and not all 0.*-1.0"):
        bg.size_factors(y, weights=np.array([1, 1, -1, 1, 1, 1.0]))
    with pytest.raises(ValueError, match="not all 0"):
        bg.size_factors(y, weights=np.zeros(6))
    with pytest.raises(ValueError, match="'tmm' cannot honour `weights` other than 1"):
        bg.size_factors(y, "tmm", weights=np.array([1, 2, 1, 1, 1, 1.0]))
    # weights of 1 are no weights, for every method
    np.testing.assert_array_equal(
        bg.size_factors(y, "tmm", weights=np.ones(6)), bg.size_factors(y, "tmm")
    )


def test_fit_estimates_named_size_factors_with_observation_weights() -> None:
    """`bg.fit(size_factors="median_ratio", weights=w)` equals the fit of duplicated rows."""
    rng = np.random.default_rng(31)
    n, g = 8, 40
    y = rng.negative_binomial(5, 5 / (5 + rng.uniform(2, 40, (n, g)))).astype(float)
    cond = np.array(["a"] * 4 + ["b"] * 4)
    w = np.array([1, 2, 1, 3, 1, 1, 2, 1], dtype=float)
    obs = pd.DataFrame({"condition": cond})
    rep = np.repeat(np.arange(n), w.astype(int))
    weighted = bg.fit(y, "~ condition", obs=obs, weights=w, size_factors="median_ratio")
    dup = bg.fit(
        y[rep], "~ condition", obs=obs.iloc[rep].reset_index(drop=True), size_factors="median_ratio"
    )
    np.testing.assert_allclose(
        weighted.coef_loc.to_numpy(), dup.coef_loc.to_numpy(), rtol=1e-7, atol=1e-9
    )
    plain = bg.fit(y, "~ condition", obs=obs, size_factors="median_ratio")
    assert not np.allclose(plain.coef_loc.to_numpy(), dup.coef_loc.to_numpy(), atol=1e-6)
