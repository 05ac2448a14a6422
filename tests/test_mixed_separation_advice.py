"""Separated features of a mixed fit that have no donor-level test: the warning's advice works."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg
from batchglm.de import CrossedGroupingWarning


def _donors_with_age(seed: int) -> tuple[ad.AnnData, np.ndarray]:
    """6 vs 6 donors, an age per donor; features 0-1 expressed only in the control donors."""
    rng = np.random.default_rng(seed)
    ncell = rng.integers(15, 40, 12)
    g = np.repeat(np.arange(12), ncell)
    stim = g >= 6
    age = rng.uniform(25, 80, 12)
    obs = pd.DataFrame(
        {
            "patient": [f"P{k}" for k in g],
            "condition": np.where(stim, "stim", "ctrl"),
            "age": age[g],
        },
        index=[f"c{i}" for i in range(g.size)],
    )
    sf = rng.lognormal(0.0, 0.3, g.size)
    n_feat = 40
    u = rng.normal(0.0, 0.3, (12, n_feat))
    mu = 3.0 * sf[:, None] * np.exp(u[g])
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(np.float64)
    y[stim, :2] = 0.0
    names = [f"zeroStim{i}" for i in range(2)] + [f"g{i}" for i in range(2, n_feat)]
    var = pd.DataFrame(index=names)
    return ad.AnnData(X=sparse.csr_matrix(y), obs=obs, var=var), sf


def test_separated_with_donor_level_covariate_warns_with_features_and_next_step() -> None:
    adata, sf = _donors_with_age(21)
    res = bg.fit(adata, "~ condition + age", random_effects="patient", size_factors=sf)
    # The fit's own status says that the two zero-in-stim features ran off (all their stim
    # cells are 0 in the data); the background does not.
    y = adata.X.toarray()
    zero_side = (y[adata.obs["condition"].to_numpy() == "stim"] == 0).all(axis=0)
    np.testing.assert_array_equal(res.status.to_numpy() == "separated", zero_side)
    assert zero_side.sum() == 2
    assert (res.coef_loc["condition[T.stim]"].iloc[:2] < -15).all()
    with pytest.warns(
        UserWarning,
        match=(
            r"2 feature\(s\) \(zeroStim0, zeroStim1\) .*donor-level covariate.*NaN p-values\. "
            r"To test them, use pseudobulk counts \(bg\.pseudobulk\(adata, "
            r"sample='patient'\), .*bg\.de\.ql_f\), or drop the donor-level covariate"
        ),
    ):
        table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert table["status"].iloc[:2].eq("separated").all()
    assert table["pvalue"].iloc[:2].isna().all()
    # The advice gives them a test: on pseudobulk counts, with the same fixed design, the
    # zero-in-stim features have finite p-values far below those of the background.
    pb = bg.pseudobulk(adata, sample="patient")
    assert pb.n_obs == 12
    pb_res = bg.fit(pb, "~ condition + age", size_factors="poscounts")
    pb_table = bg.de.ql_f(pb_res, coef="condition[T.stim]").summary()
    p = pb_table["pvalue"].to_numpy()
    assert np.isfinite(p[:2]).all()
    assert p[:2].max() < 1e-4
    assert np.nanmedian(p[2:]) > 0.1
    # Without the donor-level covariate the donor-permutation test applies: a p-value of
    # 2 / C(12, 6) = 2 / 924 for a complete separation, no warning.
    res2 = bg.fit(adata, "~ condition", random_effects="patient", size_factors=sf)
    p2 = bg.de.wald(res2, coef="condition[T.stim]").summary()["pvalue"].to_numpy()
    np.testing.assert_allclose(p2[:2], 2 / 924, rtol=1e-12)


def test_tested_combination_within_donors_warns_with_pseudobulk_advice() -> None:
    adata, sf = _donors_with_age(22)
    rng = np.random.default_rng(0)
    adata.obs["celltype"] = np.where(rng.random(adata.n_obs) < 0.5, "A", "B")
    y = adata.X.toarray()
    y[:, 0] = np.where(adata.obs["celltype"] == "A", rng.poisson(2.0, adata.n_obs), 0)
    adata.X = sparse.csr_matrix(y)
    res = bg.fit(adata, "~ condition + celltype", random_effects="patient", size_factors=sf)
    # Cell types within patients: the crossed-grouping warning fires too (its own test).
    with (
        pytest.warns(CrossedGroupingWarning),
        pytest.warns(
            UserWarning,
            match=(
                r"feature\(s\) \(zeroStim0\) .*varies within donors and has no donor-level test, "
                r"so they get NaN p-values\. To test them, aggregate to pseudobulk "
                r"\(bg\.pseudobulk\(adata, sample='patient'\), .*bg\.de\.ql_f\), or test a "
                r"donor-level coefficient"
            ),
        ),
    ):
        table = bg.de.wald(res, coef="celltype[T.B]").summary()
    assert np.isnan(table["pvalue"].iloc[0])
