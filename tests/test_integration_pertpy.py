"""batchglm.integrations.pertpy: batchglm behind pertpy's LinearModelBase interface.

References: batchglm's own tests on the same fit (the adapter must not change a number),
pertpy's ``Statsmodels`` backend with statsmodels' maximum-likelihood ``NegativeBinomial``
(an independent NB fit per gene), statsmodels log-likelihoods for the LRT, and pertpy's
``PyDESeq2`` backend (marked slow: PyDESeq2 takes about 30 s even on 80 genes).
"""

from __future__ import annotations

import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from scipy import stats

import batchglm as bg

with warnings.catch_warnings():
    # pertpy imports jaxopt, which announces its own deprecation on import.
    warnings.simplefilter("ignore", DeprecationWarning)
    pertpy_de = pytest.importorskip(
        "pertpy.tools._differential_gene_expression",
        reason="pertpy is not importable here; `pip install 'batchglm[pertpy]'` pins its needs",
        exc_type=ImportError,
    )
    from batchglm.integrations.pertpy import RESULT_COLUMNS, BatchglmDE, NotFittedError


def _nb_counts(n_per_group, n_genes, seed, groups=("ctrl", "stim")):
    """NB counts with size factors, a third of the genes with a 'stim' effect."""
    rng = np.random.default_rng(seed)
    n = n_per_group * len(groups)
    obs = pd.DataFrame(
        {
            "condition": np.repeat(groups, n_per_group),
            "donor": np.tile([f"d{k}" for k in range(n_per_group)], len(groups)),
        },
        index=[f"s{i}" for i in range(n)],
    )
    sf = np.exp(rng.normal(0.0, 0.3, n))
    base = np.exp(rng.uniform(np.log(10), np.log(800), n_genes))
    lfc = np.where(rng.random(n_genes) < 1 / 3, rng.normal(0.0, 1.0, n_genes), 0.0)
    mu = sf[:, None] * base * np.exp(np.outer(obs["condition"].eq("stim"), lfc))
    r = rng.uniform(3.0, 30.0, n_genes)
    counts = rng.negative_binomial(r, r / (r + mu))
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    adata = ad.AnnData(X=np.log1p(counts).astype(np.float32), obs=obs, var=var)
    adata.layers["counts"] = counts
    return adata


@pytest.fixture(scope="module")
def adata():
    return _nb_counts(n_per_group=12, n_genes=40, seed=0, groups=("ctrl", "stim", "ifn"))


@pytest.fixture(scope="module")
def model(adata):
    m = BatchglmDE(adata, "~ condition", layer="counts")
    m.fit()
    return m


def test_is_a_pertpy_linear_model(model):
    assert isinstance(model, pertpy_de.LinearModelBase)
    assert model.variables == {"condition"}


@pytest.mark.parametrize("dispersion", ["mle", "map"])
def test_pvalues_equal_bg_wald_on_the_same_fit(model, dispersion):
    c = model.contrast(column="condition", baseline="ctrl", group_to_compare="stim")
    out = model.test_contrasts({"stim": c}, dispersion=dispersion)
    assert list(out.columns) == [*RESULT_COLUMNS, "contrast"]
    assert (out["contrast"] == "stim").all()
    assert out["p_value"].is_monotonic_increasing
    got = out.set_index("variable").loc[model.adata.var_names]
    ref = bg.de.wald(model.fit_result, contrast=c, dispersion=dispersion).summary()
    np.testing.assert_allclose(got["p_value"], ref["pvalue"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(got["adj_p_value"], ref["padj"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(got["log_fc"], ref["log2FoldChange"], rtol=1e-10)
    np.testing.assert_allclose(got["lfcSE"], ref["lfcSE"], rtol=1e-10)


def test_fit_is_bg_fit_of_the_formula_with_median_ratio_size_factors(adata, model):
    ref = bg.fit(adata, "~ condition", layer="counts", size_factors="median_ratio")
    np.testing.assert_allclose(model.fit_result.size_factors, ref.size_factors, rtol=1e-12)
    np.testing.assert_allclose(model.fit_result.coef_loc, ref.coef_loc, rtol=1e-8, atol=1e-10)
    assert list(model.fit_result.coef_loc.columns) == list(model.design.columns)


def test_contrast_forms_agree(model):
    vector = model.contrast(column="condition", baseline="ctrl", group_to_compare="ifn")
    by_vector = model.test_contrasts(vector.to_numpy())
    by_levels = model.test_contrasts(["condition", "ifn", "ctrl"])
    by_cond = model.test_contrasts(model.cond(condition="ifn") - model.cond(condition="ctrl"))
    for other in (by_levels, by_cond):
        pd.testing.assert_frame_equal(by_vector, other)


def test_agrees_with_pertpy_statsmodels_nb_backend():
    # statsmodels' discrete NegativeBinomial is an independent ML fit of the same model
    # (NB2, per-gene dispersion, log link); the size factors enter both as offsets.
    adata = _nb_counts(n_per_group=15, n_genes=60, seed=1)
    ours = BatchglmDE(adata, "~ condition", layer="counts")
    ours.fit()
    c = ours.contrast(column="condition", baseline="ctrl", group_to_compare="stim")
    res = ours.test_contrasts(c, dispersion="mle").set_index("variable")

    theirs = pertpy_de.Statsmodels(adata, "~ condition", layer="counts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence chatter, tqdm
        theirs.fit(sm.NegativeBinomial, offset=np.log(ours.fit_result.size_factors))
        # sm.NegativeBinomial appends alpha to the coefficients: weigh it 0
        ref = theirs.test_contrasts(np.append(c.to_numpy(), 0.0)).set_index("variable")
    ref = ref.loc[res.index]
    p_ref = ref["p_value"].astype(float)
    rho = stats.spearmanr(res["p_value"], p_ref).statistic
    assert rho >= 0.99, rho
    # statsmodels' coefficient is natural log; ours log2
    np.testing.assert_allclose(res["log_fc"], ref["log_fc"].astype(float) / np.log(2), atol=1e-3)
    np.testing.assert_allclose(np.log10(res["p_value"]), np.log10(p_ref), atol=0.02)


def test_compare_groups_matches_bg_formula_fit(adata):
    out = BatchglmDE.compare_groups(
        adata,
        "condition",
        "ctrl",
        ["stim", "ifn"],
        layer="counts",
        test_kwargs={"dispersion": "mle"},
    )
    assert set(out["contrast"]) == {"stim", "ifn"}
    assert len(out) == 2 * adata.n_vars
    ref_fit = bg.fit(adata, "~ condition", layer="counts", size_factors="median_ratio")
    for group in ("stim", "ifn"):
        got = out[out["contrast"] == group].set_index("variable").loc[adata.var_names]
        ref = bg.de.wald(ref_fit, contrast=("condition", group, "ctrl")).summary()
        np.testing.assert_allclose(got["p_value"], ref["pvalue"], rtol=1e-7)
        np.testing.assert_allclose(got["log_fc"], ref["log2FoldChange"], rtol=1e-7)


def test_compare_groups_paired_by_donor():
    adata = _nb_counts(n_per_group=12, n_genes=20, seed=4)
    out = BatchglmDE.compare_groups(
        adata, "condition", "ctrl", "stim", paired_by="donor", layer="counts"
    )
    ref_fit = bg.fit(adata, "~ condition + donor", layer="counts", size_factors="median_ratio")
    ref = bg.de.wald(ref_fit, coef="condition[T.stim]", dispersion="map").summary()
    got = out.set_index("variable").loc[adata.var_names]
    np.testing.assert_allclose(got["p_value"], ref["pvalue"], rtol=1e-7)


def test_test_reduced_is_the_likelihood_ratio_of_statsmodels_fits():
    adata = _nb_counts(n_per_group=15, n_genes=12, seed=2)
    full = BatchglmDE(adata, "~ condition", layer="counts")
    reduced = BatchglmDE(adata, "~ 1", layer="counts")
    full.fit()
    reduced.fit()
    out = full.test_reduced(reduced, dispersion="mle").set_index("variable")
    assert list(out.reset_index().columns) == list(RESULT_COLUMNS)
    offset = np.log(full.fit_result.size_factors)
    counts = adata.layers["counts"]
    x_full = np.column_stack([np.ones(adata.n_obs), adata.obs["condition"].eq("stim")])
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(adata.n_vars):
            ll = [
                sm.NegativeBinomial(counts[:, j], x, offset=offset)
                .fit(method="bfgs", maxiter=500, disp=0)
                .llf
                for x in (x_full, x_full[:, :1])
            ]
            expected.append(stats.chi2.sf(2 * (ll[0] - ll[1]), 1))
    got = out.loc[adata.var_names, "p_value"].to_numpy()
    np.testing.assert_allclose(np.log10(got), np.log10(expected), atol=1e-4)
    # the one coefficient the reduced model drops is reported as the fold change
    wald = full.test_contrasts(np.array([0.0, 1.0]), dispersion="mle").set_index("variable")
    np.testing.assert_allclose(out["log_fc"], wald.loc[out.index, "log_fc"], rtol=1e-10)


def test_test_reduced_map_matches_bg_lrt(adata, model):
    reduced = BatchglmDE(adata, "~ 1", layer="counts")
    reduced.fit()
    out = model.test_reduced(reduced).set_index("variable").loc[adata.var_names]
    ref = bg.de.lrt(
        adata,
        "~ condition",
        "~ 1",
        layer="counts",
        size_factors=model.fit_result.size_factors,
        dispersion="map",
    ).summary()
    np.testing.assert_allclose(out["p_value"], ref["pvalue"], rtol=1e-6)
    assert out["log_fc"].isna().all()  # two coefficients dropped: no single fold change


def test_sparse_layer_and_mask_give_the_dense_results(adata, model):
    sparse = adata.copy()
    sparse.layers["counts"] = sp.csr_matrix(adata.layers["counts"])
    sparse.var["keep"] = np.arange(adata.n_vars) % 2 == 0
    m = BatchglmDE(sparse, "~ condition", layer="counts", mask="keep")
    m.fit(size_factors=model.fit_result.size_factors)
    assert sp.issparse(m.data)
    assert list(m.fit_result.feature_names) == list(adata.var_names[::2])
    c = np.array([0.0, 0.0, 1.0])
    got = m.test_contrasts(c, dispersion="mle").set_index("variable")
    ref = model.test_contrasts(c, dispersion="mle").set_index("variable").loc[got.index]
    np.testing.assert_allclose(got["p_value"], ref["p_value"], rtol=1e-8)


def test_errors(adata, model):
    with pytest.raises(ValueError, match=r"`adata.X` must hold non-negative integer counts.*"):
        BatchglmDE(adata, "~ condition")  # X holds log1p values
    negative = adata.copy()
    negative.layers["counts"] = adata.layers["counts"] - 5
    with pytest.raises(ValueError, match=r"`adata.layers\['counts'\]` .* negative values"):
        BatchglmDE(negative, "~ condition", layer="counts")
    unfitted = BatchglmDE(adata, "~ condition", layer="counts")
    with pytest.raises(NotFittedError, match=r"has not been fitted yet; call `.fit\(\)`"):
        unfitted.test_contrasts(np.array([0.0, 1.0, 0.0]))
    with pytest.raises(NotFittedError, match=r"has not been fitted yet"):
        model.test_reduced(unfitted)
    assert issubclass(NotFittedError, ValueError)
    with pytest.raises(TypeError, match=r"`modelB` must be a fitted BatchglmDE model"):
        model.test_reduced("~ 1")
    bigger = BatchglmDE(adata, "~ condition + donor", layer="counts")
    bigger.fit(size_factors=model.fit_result.size_factors)
    with pytest.raises(ValueError, match=r"nested"):
        model.test_reduced(bigger, dispersion="mle")
    with pytest.raises(ValueError, match=r"'condition\[T.nope\]', which is not a coefficient"):
        model.test_contrasts("condition[T.nope]")
    missing = adata.copy()
    missing.obs["age"] = np.r_[np.nan, np.arange(1.0, adata.n_obs)]
    with pytest.raises(ValueError, match=r"the design has 35 rows but `adata` has 36 obs"):
        BatchglmDE(missing, "~ condition + age", layer="counts").fit()


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "batchglm.integrations.pertpy")
    monkeypatch.setitem(sys.modules, "pertpy.tools._differential_gene_expression", None)
    with pytest.raises(ImportError, match=r'pip install "batchglm\[pertpy\]"'):
        import batchglm.integrations.pertpy  # noqa: F401


@pytest.mark.slow
def test_agrees_with_pertpy_pydeseq2_backend():
    # 4 vs 4 pseudobulk-sized data: PyDESeq2's MAP dispersions against ours (slow: ~30 s).
    adata = _nb_counts(n_per_group=4, n_genes=80, seed=3)
    adata.X = adata.layers["counts"]  # pertpy's PyDESeq2 backend reads X whatever `layer` is
    ours = BatchglmDE.compare_groups(adata, "condition", "ctrl", "stim", layer="counts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pertpy_de.PyDESeq2.compare_groups(
            adata,
            "condition",
            "ctrl",
            "stim",
            layer="counts",
            fit_kwargs={"n_cpus": 1, "quiet": True},
            test_kwargs={"quiet": True},
        )
    j = theirs.set_index("variable").join(ours.set_index("variable"), rsuffix="_bg")
    ok = j["p_value"].notna()  # PyDESeq2 drops Cook's outliers
    assert ok.sum() >= 70
    rho = stats.spearmanr(j.loc[ok, "p_value"], j.loc[ok, "p_value_bg"]).statistic
    assert rho >= 0.99, rho
    np.testing.assert_allclose(j["log_fc"], j["log_fc_bg"], atol=0.05)


def test_unused_category_levels_are_dropped_as_by_bg_fit():
    """After subsetting, an unused level must not make the design rank-deficient."""
    full = _nb_counts(n_per_group=6, n_genes=25, seed=8, groups=("ctrl", "stim", "ifn"))
    full.obs["condition"] = pd.Categorical(full.obs["condition"])
    full.obs["batch"] = pd.Categorical(np.tile(["b1", "b2", "b3"], 6))
    sub = full[full.obs["condition"] != "ifn"].copy()
    # As pandas' own subsetting leaves it: 'ifn' a category that no observation has.
    sub.obs["condition"] = pd.Categorical(
        sub.obs["condition"].astype(str), categories=["ctrl", "stim", "ifn"]
    )
    with pytest.warns(bg.formula.AnnotationWarning, match=r"'condition'.*\['ifn'\].*remove_unused"):
        m = BatchglmDE(sub, "~ condition + batch", layer="counts")
    assert "ifn" in sub.obs["condition"].cat.categories  # the user's AnnData is unchanged
    m.fit()
    with pytest.warns(bg.formula.AnnotationWarning, match=r"\['ifn'\]"):
        ref = bg.fit(sub, "~ condition + batch", layer="counts", size_factors="median_ratio")
    assert list(m.fit_result.coef_loc.columns) == list(ref.coef_loc.columns)
    np.testing.assert_allclose(m.fit_result.coef_loc, ref.coef_loc, rtol=1e-10)
    # Contrasts are built on the reduced levels; the test is bg's Wald test of that fit.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)  # 8 residual df
        out = m.test_contrasts(m.contrast("condition", "ctrl", "stim"), dispersion="mle")
        wald = bg.de.wald(ref, contrast=("condition", "stim", "ctrl")).summary()
    got = out.set_index("variable").loc[sub.var_names]
    np.testing.assert_allclose(got["p_value"], wald["pvalue"], rtol=1e-7)


def test_mixed_fit_is_tested_at_mle_by_default():
    """`fit(random_effects=...)` then `test_contrasts()` with no `dispersion` runs the mixed
    Wald test (t reference with between-donor df) instead of refusing a 'map' never given."""
    rng = np.random.default_rng(77)
    n_donors, per, n_genes = 6, 20, 8
    gid = np.repeat(np.arange(n_donors), per)
    obs = pd.DataFrame(
        {"donor": [f"p{g}" for g in gid], "condition": np.where(gid >= 3, "stim", "ctrl")},
        index=[f"cell{i}" for i in range(gid.size)],
    )
    mu = np.exp(1.0 + rng.normal(size=(n_donors, n_genes))[gid] * 0.4)
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float64)
    adata = ad.AnnData(y, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    m = BatchglmDE(adata, "~ condition")
    m.fit(size_factors="poscounts", random_effects="donor")
    c = m.contrast(column="condition", baseline="ctrl", group_to_compare="stim")
    got = m.test_contrasts(c).set_index("variable").loc[adata.var_names]
    # The mixed fit's own Wald test (moderated t reference over donors).
    expect = bg.de.wald(m.fit_result, coef="condition[T.stim]").summary()["pvalue"].to_numpy()
    np.testing.assert_allclose(got["p_value"].to_numpy(), expect, rtol=1e-8)
    with pytest.raises(ValueError, match=r"`dispersion` must be 'mle' for fits with random"):
        m.test_contrasts(c, dispersion="map")
