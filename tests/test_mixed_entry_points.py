"""Entry points that cannot honour a mixed fit's random effects refuse it (or handle it).

A cell-level test of a mixed fit that drops the donor variance is pseudoreplication: on
the null data below (condition nested in 6 donors, donor variance 0.25) such tests put
most genes at p < 0.05. Each entry point either refuses the fit with a one-line error that
names what to use, or uses the mixed fit's own reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

COEF = "condition[T.stim]"


@pytest.fixture(scope="module")
def cells() -> tuple[np.ndarray, pd.DataFrame]:
    """Null cell-level counts: 6 donors nested in condition, 25 cells each."""
    rng = np.random.default_rng(2026)
    n_donors, per, n_genes = 6, 25, 12
    gid = np.repeat(np.arange(n_donors), per)
    obs = pd.DataFrame(
        {
            "donor": [f"donor{g}" for g in gid],
            "condition": np.where(gid >= n_donors // 2, "stim", "ctrl"),
        },
        index=[f"cell{i}" for i in range(gid.size)],
    )
    u = rng.normal(size=(n_donors, n_genes)) * 0.5
    mu = np.exp(1.2 + u[gid])
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(np.float64)
    return y, obs


@pytest.fixture(scope="module")
def mixed(cells: tuple[np.ndarray, pd.DataFrame]) -> bg.FitResult:
    y, obs = cells
    return bg.fit(y, "~ condition", obs=obs, random_effects="donor")


def test_ql_f_refuses_a_mixed_fit(mixed: bg.FitResult) -> None:
    with pytest.raises(ValueError, match=r"ql_f needs a fit without random effects.*bg.de.wald"):
        bg.de.ql_f(mixed, coef=COEF)


def test_lfc_shrink_refuses_a_mixed_fit_and_its_wald_test(
    mixed: bg.FitResult, cells: tuple[np.ndarray, pd.DataFrame]
) -> None:
    y, _ = cells
    msg = r"`lfc_shrink` needs a fit without random effects.*\['donor'\].*bg.pseudobulk"
    for dispersion in ("map", "mle"):  # default 'map' no longer gives the dispersion error
        with pytest.raises(ValueError, match=msg):
            bg.de.lfc_shrink(mixed, coef=COEF, data=y, dispersion=dispersion)
    wald = bg.de.wald(mixed, coef=COEF)
    with pytest.raises(ValueError, match=msg):
        bg.de.lfc_shrink(wald, coef=COEF, data=y)


def test_thresholded_wald_refuses_a_mixed_fit(mixed: bg.FitResult) -> None:
    with pytest.raises(ValueError, match=r"`lfc_threshold`/`alt_hypothesis` need a fit without"):
        bg.de.wald(mixed, coef=COEF, lfc_threshold=0.5)
    with pytest.raises(ValueError, match=r"need a fit without random effects"):
        bg.de.wald(mixed, coef=COEF, alt_hypothesis="greater")


def test_to_anndata_stores_random_effects(
    mixed: bg.FitResult, cells: tuple[np.ndarray, pd.DataFrame], tmp_path: object
) -> None:
    import anndata as ad

    y, obs = cells
    adata = ad.AnnData(y, obs=obs)
    adata.var_names = [str(n) for n in mixed.feature_names]
    mixed.to_anndata(adata)
    path = f"{tmp_path}/mixed.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    var = back.varm["batchglm_random_var"]
    np.testing.assert_array_equal(var["donor"].to_numpy(), mixed.random_var["donor"].to_numpy())
    modes = back.varm["batchglm_random_effects_donor"]
    assert list(modes.columns) == [f"donor{g}" for g in range(6)]
    np.testing.assert_array_equal(modes.to_numpy(), mixed.random_effects("donor").to_numpy().T)
    assert list(back.uns["batchglm"]["random_effects"]) == ["donor"]


def test_rank_genes_groups_records_random_effects(cells: tuple[np.ndarray, pd.DataFrame]) -> None:
    import anndata as ad

    y, obs = cells
    adata = ad.AnnData(y, obs=obs)
    bg.tl.rank_genes_groups(adata, "condition", reference="ctrl", random_effects="donor")
    params = adata.uns["rank_genes_groups"]["params"]
    assert params["random_effects"] == ["donor"]
    ranked = adata.uns["rank_genes_groups"]
    names = np.asarray(ranked["names"]["stim"]).astype(int)
    pvals = np.asarray(ranked["pvals"]["stim"])
    # The mixed fit's own Wald test (moderated t reference over donors), not the
    # cell-level chi-squared of a fit without random effects.
    fit = bg.fit(adata, "~ 0 + condition", random_effects="donor", size_factors="poscounts")
    expect = bg.de.wald(fit, contrast="condition[stim] - condition[ctrl]").summary()["pvalue"]
    expect = expect.to_numpy()
    plain = bg.fit(adata, "~ 0 + condition", size_factors="poscounts")
    cells = bg.de.wald(plain, contrast="condition[stim] - condition[ctrl]").summary()["pvalue"]
    assert not np.allclose(expect, cells.to_numpy(), rtol=1e-3)
    np.testing.assert_allclose(pvals, expect[names], rtol=1e-6)
    bg.tl.rank_genes_groups(adata, "condition", reference="ctrl")
    assert "random_effects" not in adata.uns["rank_genes_groups"]["params"]


def test_donor_as_fixed_and_random_names_the_conflict_first(
    cells: tuple[np.ndarray, pd.DataFrame],
) -> None:
    y, obs = cells
    # Donors nested in condition: without the check this was the rank-deficiency error
    # suggesting constraints_loc={'donor': 'condition'}.
    msg = r"`random_effects` factor 'donor' is already coded by fixed effects.*drop 'donor'"
    with pytest.raises(ValueError, match=msg):
        bg.fit(y, "~ condition + donor", obs=obs, random_effects="donor")
    with pytest.raises(ValueError, match=msg):
        bg.fit(y, "~ condition + C(donor)", obs=obs, random_effects=["donor"])
