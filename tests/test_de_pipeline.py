"""bg.de.test: DESeq2's pipeline in one call (outliers, replacement, filtering, thresholds)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.stats import false_discovery_control

import batchglm as bg
from batchglm.dispersion.rough import rough_start
from table_columns import RESULTS_COLUMNS

# These tests use few replicates on purpose (small designs for the pipeline's options); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")


def _data(n_per_group: int, n_genes: int = 150, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    sf = rng.uniform(0.5, 2.0, n)
    base = np.exp(rng.uniform(0, 7, n_genes))
    lfc = np.where(rng.uniform(size=n_genes) < 0.3, rng.normal(0, 1.5, n_genes), 0.0)
    group = np.repeat([0, 1], n_per_group)
    mu = sf[:, None] * base[None, :] * np.exp(np.outer(group, lfc))
    y = rng.negative_binomial(10, 10 / (10 + mu)).astype(float)
    obs = pd.DataFrame(
        {"condition": np.repeat(["ctrl", "trt"], n_per_group)}, index=[f"s{i}" for i in range(n)]
    )
    return ad.AnnData(X=y, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


COEF = "condition[T.trt]"


@pytest.fixture(scope="module")
def five_vs_five():
    adata = _data(5)
    adata.X[3, 7] = 1e6 * (1 + adata.X[:, 7].max())  # one wild count in a control sample
    return adata


@pytest.fixture(scope="module")
def default_run(five_vs_five):
    return bg.de.test(five_vs_five, "~ condition", coef=COEF)


def test_single_outlier_count_is_flagged(five_vs_five, default_run):
    table = default_run.summary()
    assert list(table.columns[:10]) == [
        *RESULTS_COLUMNS,
        "maxCooks",
        "replaced",
        "filtered",
    ]
    row = table.loc["g7"]
    assert row["status"] == "outlier" and np.isnan(row["pvalue"]) and np.isnan(row["padj"])
    assert row["maxCooks"] > stats.f.ppf(0.99, 2, 8)
    # Without Cook's distances the same count makes a highly "significant" feature.
    plain = bg.de.test(five_vs_five, "~ condition", coef=COEF, cooks_cutoff=None)
    assert plain.summary().loc["g7", "pvalue"] < 1e-6
    assert (plain.summary()["status"] != "outlier").all()
    assert np.isnan(plain.summary()["maxCooks"]).all()
    # Ordinary features are untouched by the flagging.
    others = table.index != "g7"
    np.testing.assert_allclose(table["pvalue"][others], plain.summary()["pvalue"][others])


def test_base_mean_and_size_factors_are_deseq2s(five_vs_five, default_run):
    y = five_vs_five.X
    with np.errstate(divide="ignore"):
        log_geo = np.log(y).mean(axis=0)
    usable = np.isfinite(log_geo)
    sf = np.exp(np.median(np.log(y[:, usable]) - log_geo[usable], axis=1))
    np.testing.assert_allclose(default_run.size_factors, sf, rtol=1e-12)
    np.testing.assert_allclose(
        default_run.summary()["baseMean"], (y / sf[:, None]).mean(0), rtol=1e-12
    )
    assert default_run.dispersion == "map"


def test_independent_filtering_on_and_off(five_vs_five, default_run):
    table = default_run.summary()
    p = table["pvalue"].to_numpy()
    kept = ~table["filtered"].to_numpy() & np.isfinite(p)
    np.testing.assert_allclose(table["padj"][kept], false_discovery_control(p[kept]))
    assert np.isnan(table["padj"][table["filtered"]]).all()
    assert table.attrs["filterThreshold"] == default_run.filter_threshold
    off = bg.de.test(five_vs_five, "~ condition", coef=COEF, independent_filtering=False)
    p_off = off.summary()["pvalue"].to_numpy()
    ok = np.isfinite(p_off)
    np.testing.assert_allclose(off.summary()["padj"][ok], false_discovery_control(p_off[ok]))
    assert not off.summary()["filtered"].any() and np.isnan(off.filter_threshold)


def test_two_group_rule_keeps_a_low_count_in_a_high_group():
    adata = _data(5, seed=3)
    adata.X[:5, 0] = [5000, 5100, 4900, 5050, 4950]
    adata.X[5:, 0] = [20, 25, 22, 18, 3000]  # 3000 is far off its group, not the largest
    de = bg.de.test(adata, "~ condition", coef=COEF, size_factors=np.ones(10))
    row = de.summary().loc["g0"]
    assert row["maxCooks"] > stats.f.ppf(0.99, 2, 8)
    assert row["status"] != "outlier" and np.isfinite(row["pvalue"])
    # The same feature in a design with a second factor (no two-group rule) is flagged.
    adata.obs["batch"] = ["x", "y"] * 5
    de = bg.de.test(adata, "~ batch + condition", coef=COEF, size_factors=np.ones(10))
    assert de.summary().loc["g0", "status"] == "outlier"


def test_outliers_are_replaced_with_seven_or_more_replicates():
    adata = _data(8, n_genes=60, seed=4)
    y = adata.X.copy()
    y[2, 5] = 50 * y[:, 5].max() + 500
    adata.X = y
    de = bg.de.test(adata, "~ condition", coef=COEF)
    table = de.summary()
    assert table.loc["g5", "replaced"] and table.loc["g5", "status"] != "outlier"
    # Every observation is replaceable: DESeq2 reports NA, batchglm the refit's distances
    # on the replaced counts (docs/outliers.md; checked in test_cooks_after_replacement).
    assert np.isfinite(table["maxCooks"]).all()
    assert table.loc["g5", "maxCooks"] < table.attrs["cooksCutoff"]
    # Reference: the count replaced by hand with scipy's trimmed mean, no Cook's step.
    sf = de.size_factors
    assert list(table.index[table["replaced"]]) == ["g5"]
    fixed = y.copy()
    normed = y[:, 5] / sf
    fixed[2, 5] = np.trunc(stats.trim_mean(normed, 0.2) * sf[2])
    ref = bg.de.test(
        ad.AnnData(X=fixed, obs=adata.obs, var=adata.var),
        "~ condition",
        coef=COEF,
        cooks_cutoff=None,
        size_factors=sf,
    )
    # Only g5 is refitted, at the first pass's dispersion trend and prior (DESeq2's
    # refitWithoutOutliers), so it differs from a full rerun on the fixed counts by the
    # trend's move (1.3e-3 relative here); tests/test_cooks_refit.py checks it against
    # DESeq2 itself.
    np.testing.assert_allclose(
        table.loc["g5", "pvalue"], ref.summary().loc["g5", "pvalue"], rtol=1e-2
    )
    assert table.loc["g5", "pvalue"] > 1e-4
    # Without replacement, the feature is flagged instead.
    flagged = bg.de.test(adata, "~ condition", coef=COEF, min_replicates_for_replace=np.inf)
    assert flagged.summary().loc["g5", "status"] == "outlier"


def test_lfc_threshold_is_deseq2_greater_abs(default_run, five_vs_five):
    t = 0.5
    with pytest.warns(UserWarning, match=r"\(g36\) are separated in the tested direction"):
        de = bg.de.test(five_vs_five, "~ condition", coef=COEF, lfc_threshold=t)
    lfc = default_run.coef_mle / np.log(2)
    se = default_run.coef_se / np.log(2)
    expected = np.minimum(1.0, 2 * stats.norm.sf((np.abs(lfc) - t) / se))
    got = de.summary()["pvalue"].to_numpy()
    ok = np.isfinite(got)
    assert ok.sum() > 100
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-10)
    stat = de.summary()["stat"].to_numpy()
    np.testing.assert_allclose(
        stat[ok], (np.sign(lfc) * np.maximum((np.abs(lfc) - t) / se, 0))[ok], atol=1e-12
    )


@pytest.mark.parametrize("alt", ["greater", "less", "lessAbs"])
def test_alt_hypothesis_is_deseq2s(default_run, five_vs_five, alt):
    t = 0.5
    with pytest.warns(UserWarning, match=r"\(g36\) are separated in the tested direction"):
        de = bg.de.test(five_vs_five, "~ condition", coef=COEF, lfc_threshold=t, alt_hypothesis=alt)
    lfc = default_run.coef_mle / np.log(2)
    se = default_run.coef_se / np.log(2)
    # DESeq2's results(): one-sided normal tails at the shifted threshold(s).
    if alt == "greater":
        expected = stats.norm.sf((lfc - t) / se)
    elif alt == "less":
        expected = stats.norm.cdf((lfc + t) / se)
    else:
        expected = np.maximum(stats.norm.cdf((lfc - t) / se), stats.norm.sf((lfc + t) / se))
    got = de.summary()["pvalue"].to_numpy()
    ok = np.isfinite(got)
    assert ok.sum() > 100
    np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-9)


def test_ql_lfc_threshold_is_treat(five_vs_five):
    common = {"cooks_cutoff": None, "independent_filtering": False}
    de = bg.de.test(
        five_vs_five, "~ condition", method="ql", coef=COEF, lfc_threshold=0.5, **common
    )
    # The pipeline's initial fit holds DESeq2's rough dispersion (batchglm.dispersion.rough).
    res = _rough_fit(five_vs_five, "~ condition", de.size_factors)
    ref = bg.de.ql_f(res, coef=COEF, data=five_vs_five, lfc_threshold=0.5)
    np.testing.assert_allclose(de.pval, ref.pval, rtol=1e-8)
    plain = bg.de.test(five_vs_five, "~ condition", method="ql", coef=COEF, **common)
    # edgeR's default interval null averages over the window, which near p = 1 (estimate
    # near 0, where Phi is concave) can end below the plain p (0.99754 vs 0.99772 here).
    ok = np.isfinite(de.pval) & (plain.pval < 0.5)
    assert np.all(de.pval[ok] >= plain.pval[ok])
    worst = bg.de.test(
        five_vs_five,
        "~ condition",
        method="ql",
        coef=COEF,
        lfc_threshold=0.5,
        treat_null="worst.case",
        **common,
    )
    ok = np.isfinite(worst.pval)
    assert np.all(worst.pval[ok] >= plain.pval[ok] - 1e-12)


def _rough_fit(data, design, sf):
    """The pipeline's initial fit: the location at DESeq2's rough dispersion held fixed."""
    start = rough_start(data, design, obs=None, layer=None, size_factors=sf, constraints_loc=None)
    assert start is not None
    return bg.fit(data, design, size_factors=sf, fixed_scale=start.log_r)


def test_lrt_and_ql_route_to_the_tests(five_vs_five):
    sf = bg.de.test(five_vs_five, "~ condition", coef=COEF).size_factors
    common = {"cooks_cutoff": None, "independent_filtering": False}
    lrt = bg.de.test(five_vs_five, "~ condition", method="lrt", reduced="~ 1", **common)
    full = _rough_fit(five_vs_five, "~ condition", sf)
    reduced = bg.fit(five_vs_five, "~ 1", size_factors=sf)
    ref = bg.de.lrt(five_vs_five, full=full, reduced=reduced, dispersion="map")
    np.testing.assert_allclose(lrt.pval, ref.pval, rtol=1e-8)
    ql = bg.de.test(five_vs_five, "~ condition", method="ql", coef=COEF, **common)
    res = _rough_fit(five_vs_five, "~ condition", sf)
    np.testing.assert_allclose(
        ql.pval, bg.de.ql_f(res, coef=COEF, data=five_vs_five).pval, rtol=1e-8
    )
    assert ql.dispersion == "ql" and "ql_dispersion" in ql.summary().columns


def test_summary_line_and_sorting(default_run):
    line = default_run.summary_line()
    assert line.startswith("150 features, 149 tested, ")
    assert "1 Cook's outliers" in line
    table = default_run.summary(sort_by="pvalue", n_max=5)
    assert len(table) == 5 and table["pvalue"].is_monotonic_increasing
    with pytest.raises(ValueError, match="`sort_by` must be a column"):
        default_run.summary(sort_by="nope")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "anova"}, r"`method` must be one of \['wald', 'lrt', 'ql'\]"),
        ({"dispersion": "robust"}, r"`dispersion` must be 'mle', 'map' or 'ql'"),
        ({"method": "ql", "dispersion": "map"}, r"`dispersion` must be 'ql' \(or None\)"),
        ({"method": "lrt", "coef": None}, r"`method='lrt'` needs exactly one of `reduced`"),
        (
            {
                "method": "lrt",
                "coef": None,
                "reduced": "~ 1",
                "contrast": ("condition", "trt", "ctrl"),
            },
            r"exactly one of `reduced` .* both were given",
        ),
        ({"reduced": "~ 1"}, r"`reduced` is only used by method='lrt'"),
        ({"coef": None}, r"needs exactly one of `coef` and `contrast`"),
        ({"alpha": 0.0}, r"`alpha` must lie in \(0, 1\), but 0.0"),
        ({"lfc_threshold": -1.0}, r"`lfc_threshold` must be a finite number >= 0"),
        ({"alt_hypothesis": "twoSided"}, r"`alt_hypothesis` must be one of \['greaterAbs'"),
        ({"alt_hypothesis": "lessAbs"}, r"needs `lfc_threshold` > 0, but 0 was given"),
        (
            {"method": "ql", "lfc_threshold": 1.0, "alt_hypothesis": "greater"},
            r"TREAT, whose alternative is \|log2FoldChange\| > `lfc_threshold`",
        ),
        (
            {"method": "lrt", "coef": None, "reduced": "~ 1", "alt_hypothesis": "less"},
            r"another `alt_hypothesis` than 'greaterAbs' needs a Wald test",
        ),
        ({"lfc_threshold": 1.0, "dispersion": "ql"}, r"needs a Wald test with dispersion"),
        ({"cooks_cutoff": "strict"}, r"`cooks_cutoff` must be 'default', a positive number"),
        ({"cooks_cutoff": -2.0}, r"`cooks_cutoff` must be 'default', a positive number"),
        ({"min_replicates_for_replace": 2}, r"`min_replicates_for_replace` must be at least 3"),
    ],
)
def test_errors(five_vs_five, kwargs, match):
    args = {"coef": COEF, **kwargs}
    with pytest.raises(ValueError, match=match):
        bg.de.test(five_vs_five, "~ condition", **args)


def test_cooks_cutoff_needs_a_count_family():
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 4)})
    y = rng.normal(size=(8, 3))
    with pytest.raises(ValueError, match="Cook's distances are defined for NB and Poisson"):
        bg.de.test(y, "~ g", obs=obs, coef="g[T.b]", family="normal", cooks_cutoff=3.0)
    with pytest.warns(UserWarning, match=r"uses each feature's own maximum-likelihood normal"):
        de = bg.de.test(y, "~ g", obs=obs, coef="g[T.b]", family="normal")  # default: skipped
    assert de.cooks_cutoff is None and de.dispersion == "mle"


def test_sparse_input_gives_the_dense_results(five_vs_five, default_run):
    import scipy.sparse as sp

    sparse_data = ad.AnnData(
        X=sp.csr_matrix(five_vs_five.X), obs=five_vs_five.obs, var=five_vs_five.var
    )
    de = bg.de.test(sparse_data, "~ condition", coef=COEF)
    np.testing.assert_allclose(de.summary()["pvalue"], default_run.summary()["pvalue"], rtol=1e-10)
    np.testing.assert_allclose(
        de.summary()["maxCooks"], default_run.summary()["maxCooks"], rtol=1e-10
    )
