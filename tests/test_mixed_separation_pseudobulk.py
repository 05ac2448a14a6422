"""Separated features of random-intercept fits: the donor-level pseudobulk QL F test.

References are independent of the mixed fit: an explicit ``bg.pseudobulk`` + ``bg.fit`` +
``bg.de.ql_f`` run on the same cells, and closed-form counts of the data.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg
from batchglm.de import pseudobulk_ql

N_ONOFF = 4
N_SPARSE = 6


def _cells(per_side: int, n_feat: int, seed: int) -> tuple[ad.AnnData, np.ndarray]:
    """``per_side`` vs ``per_side`` donors of 20-300 cells, donor SD 0.3.

    Features ``0 .. N_ONOFF-1`` are expressed in every control donor and zero in every
    stimulated cell; the next ``N_SPARSE`` are null features with 1-5 reads, all in control
    cells (separated, no effect); the rest are null background.
    """
    rng = np.random.default_rng(seed)
    n_donors = 2 * per_side
    ncell = rng.integers(20, 301, n_donors)
    g = np.repeat(np.arange(n_donors), ncell)
    stim = g >= per_side
    obs = pd.DataFrame(
        {"donor": [f"D{k}" for k in g], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(g.size)],
    )
    sf = rng.lognormal(0.0, 0.3, g.size)
    base = np.exp(rng.uniform(np.log(0.05), np.log(3.0), n_feat))
    u = rng.normal(0.0, 0.3, (n_donors, n_feat))
    mu = sf[:, None] * base * np.exp(u[g])
    y = rng.negative_binomial(4, 4 / (4 + mu)).astype(np.float64)
    y[stim, :N_ONOFF] = 0.0
    ctrl_cells = np.flatnonzero(~stim)
    for j in range(N_ONOFF, N_ONOFF + N_SPARSE):
        y[:, j] = 0.0
        reads = rng.choice(ctrl_cells, int(rng.integers(1, 6)))
        np.add.at(y[:, j], reads, 1.0)
    names = [f"f{j}" for j in range(n_feat)]
    return ad.AnnData(X=sparse.csr_matrix(y), obs=obs, var=pd.DataFrame(index=names)), sf


@pytest.fixture(scope="module")
def four_vs_four() -> tuple[ad.AnnData, np.ndarray, bg.FitResult, bg.de.DEResult]:
    adata, sf = _cells(4, 80, 7)
    res = bg.fit(adata, "~ condition", random_effects="donor", size_factors=sf)
    de = bg.de.wald(res, coef="condition[T.stim]")
    return adata, sf, res, de


def test_on_off_features_get_small_p_values_at_4_vs_4(four_vs_four) -> None:
    adata, _, _, de = four_vs_four
    y = adata.X.toarray()
    stim = adata.obs["condition"].to_numpy() == "stim"
    # Closed-form check of the data: expressed in every control donor, zero in stim.
    assert (y[stim, :N_ONOFF] == 0).all()
    ctrl_sums = pd.DataFrame(y[~stim, :N_ONOFF]).groupby(adata.obs["donor"][~stim].to_numpy()).sum()
    assert (ctrl_sums.to_numpy() > 0).all()
    table = de.summary()
    assert table["status"].iloc[:N_ONOFF].eq("separated").all()
    assert (de.kind[:N_ONOFF] == "pseudobulk_ql_f").all()
    # The randomization test could not go below 2 / C(8, 4) = 2 / 70.
    assert table["pvalue"].iloc[:N_ONOFF].max() < 1e-3


def test_sparse_separated_null_features_are_not_called(four_vs_four) -> None:
    _, _, _, de = four_vs_four
    sel = slice(N_ONOFF, N_ONOFF + N_SPARSE)
    table = de.summary()
    assert table["status"].iloc[sel].eq("separated").all()
    assert (de.kind[sel] == "pseudobulk_ql_f").all()
    assert table["pvalue"].iloc[sel].min() > 0.05


def test_equals_an_explicit_pseudobulk_ql_f_run(four_vs_four) -> None:
    adata, sf, _, de = four_vs_four
    pb = bg.pseudobulk(adata, sample="donor")
    donor_sf = pd.Series(sf, index=adata.obs_names).groupby(adata.obs["donor"].to_numpy()).sum()
    pb_res = bg.fit(pb, "~ condition", size_factors=donor_sf.loc[pb.obs["donor"]].to_numpy())
    ref = bg.de.ql_f(pb_res, coef="condition[T.stim]")
    sep = np.flatnonzero(de.kind == "pseudobulk_ql_f")
    assert sep.size >= N_ONOFF + N_SPARSE
    np.testing.assert_allclose(de.pval[sep], ref.pval[sep], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(de.stat[sep], ref.stat[sep], rtol=1e-6)


def test_few_features_keep_the_randomization_test(four_vs_four) -> None:
    adata, sf, _, _ = four_vs_four
    small = adata[:, : pseudobulk_ql.MIN_FEATURES_QL - 1].copy()
    res = bg.fit(small, "~ condition", random_effects="donor", size_factors=sf)
    de = bg.de.wald(res, coef="condition[T.stim]")
    assert (de.kind[:N_ONOFF] == "donor_permutation").all()
    # All expressing donors on one side: 2 of the C(8, 4) = 70 assignments are as extreme.
    np.testing.assert_allclose(de.pval[:N_ONOFF], 2 / 70, rtol=1e-12)


def test_donor_level_covariate_without_reassignment_uses_pseudobulk_ql() -> None:
    # 6 vs 6 donors, an age per donor: no reassignment of donors keeps the reduced design,
    # so the randomization test has none; the pseudobulk QL test of ~ condition + age does.
    adata, sf = _cells(6, 60, 3)
    rng = np.random.default_rng(4)
    age = pd.Series(rng.uniform(25, 80, 12), index=[f"D{k}" for k in range(12)])
    adata.obs["age"] = age.loc[adata.obs["donor"]].to_numpy()
    res = bg.fit(adata, "~ condition + age", random_effects="donor", size_factors=sf)
    de = bg.de.wald(res, coef="condition[T.stim]")  # no warning: all separated are tested
    sep = np.flatnonzero(de.kind == "pseudobulk_ql_f")
    assert set(range(N_ONOFF + N_SPARSE)) <= set(sep.tolist())
    pb = bg.pseudobulk(adata, sample="donor")
    donor_sf = pd.Series(sf, index=adata.obs_names).groupby(adata.obs["donor"].to_numpy()).sum()
    pb_res = bg.fit(pb, "~ condition + age", size_factors=donor_sf.loc[pb.obs["donor"]].to_numpy())
    ref = bg.de.ql_f(pb_res, coef="condition[T.stim]")
    np.testing.assert_allclose(de.pval[sep], ref.pval[sep], rtol=1e-6, atol=1e-300)
    assert de.pval[:N_ONOFF].max() < 1e-3


def test_poisson_boundary_features_are_not_more_significant_than_pseudobulk() -> None:
    # Sparse null features (2-12 reads in ~1,000 cells) end with both variance components
    # on their bounds (NB scale at the Poisson end, donor variance 0): a cell-level Poisson
    # test. Their p-value is raised to the donor-level pseudobulk QL test's.
    rng = np.random.default_rng(21)
    n_donors, n_feat = 8, 90
    g = np.repeat(np.arange(n_donors), rng.integers(40, 200, n_donors))
    stim = g >= 4
    obs = pd.DataFrame(
        {"donor": [f"D{k}" for k in g], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(g.size)],
    )
    sf = rng.lognormal(0.0, 0.3, g.size)
    base = np.exp(rng.uniform(np.log(0.05), np.log(2.0), n_feat))
    base[:40] = rng.uniform(2.0, 12.0, 40) / g.size
    u = rng.normal(0.0, 0.3, (n_donors, n_feat))
    mu = sf[:, None] * base * np.exp(u[g])
    y = rng.negative_binomial(4, 4 / (4 + mu)).astype(np.float64)
    keep = y.sum(axis=0) > 0
    adata = ad.AnnData(
        X=sparse.csr_matrix(y[:, keep]),
        obs=obs,
        var=pd.DataFrame(index=[f"f{j}" for j in np.flatnonzero(keep)]),
    )
    res = bg.fit(adata, "~ condition", random_effects="donor", size_factors=sf)
    de = bg.de.wald(res, coef="condition[T.stim]")
    raised = (de.kind == "pseudobulk_ql_f") & (res.status == "scale_at_bound").to_numpy()
    assert raised.sum() >= 5
    pb = bg.pseudobulk(adata, sample="donor")
    donor_sf = pd.Series(sf, index=adata.obs_names).groupby(adata.obs["donor"].to_numpy()).sum()
    pb_res = bg.fit(pb, "~ condition", size_factors=donor_sf.loc[pb.obs["donor"]].to_numpy())
    ref = bg.de.ql_f(pb_res, coef="condition[T.stim]")
    # Both are iterative fits (the QL trend runs over all features, separated ones
    # included) at different size-factor scales: they agree to 3.8e-6 relative, within the
    # chain's precision (both differ from fits at tol=1e-13 by 6e-5; 3.7e-5 before the
    # scale-free location start).
    np.testing.assert_allclose(de.pval[raised], ref.pval[raised], rtol=2e-5)
    # Every doubly bounded feature is at least as large as its pseudobulk p-value.
    at_bounds = (res.random_var.iloc[:, 0].to_numpy() < 1e-6) & (
        res.status == "scale_at_bound"
    ).to_numpy()
    assert np.all(de.pval[at_bounds] >= ref.pval[at_bounds] * (1 - 2e-5))
