"""bg.tl: marker genes in scanpy's layout and per-group pseudobulk tests."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import batchglm as bg
from table_columns import RESULTS_COLUMNS

# These tests use few replicates on purpose (small designs for per-group tests); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

sc = pytest.importorskip("scanpy")


def _cells(seed: int = 0, n: int = 240, f: int = 12) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    group = rng.choice(["B", "T", "NK", "mono"], n, p=[0.3, 0.3, 0.2, 0.2])
    mu = np.tile(rng.uniform(2, 30, f), (n, 1))
    mu[group == "T", :3] *= 5.0
    mu[group == "NK", 3:5] *= 0.2
    y = rng.negative_binomial(3, 3 / (3 + mu)).astype(np.float32)
    obs = pd.DataFrame(
        {"leiden": pd.Categorical(group, categories=["B", "NK", "T", "mono"])},
        index=[f"c{i}" for i in range(n)],
    )
    adata = ad.AnnData(y, obs=obs)
    adata.var_names = [f"gene{j}" for j in range(f)]
    return adata


def _profile_nb(y: np.ndarray, groups: list[np.ndarray]) -> tuple[float, float]:
    """Max log-likelihood and 1/r with group means at their MLE (the group averages)."""
    mu = np.empty_like(y)
    for g in groups:
        mu[g] = y[g].mean()

    def nll(log_r):
        r = np.exp(log_r)
        return -stats.nbinom.logpmf(y, r, r / (r + mu)).sum()

    opt = optimize.minimize_scalar(nll, bounds=(-5, 10), method="bounded", options={"xatol": 1e-10})
    return -opt.fun, float(np.exp(-opt.x))


@pytest.mark.parametrize("reference", ["B", "rest"])
def test_wald_markers_match_closed_form_group_means(reference):
    adata = _cells()
    y = np.asarray(adata.X, dtype=float)
    bg.tl.rank_genes_groups(adata, "leiden", reference=reference, size_factors=np.ones(adata.n_obs))
    levels = ["B", "NK", "T", "mono"]
    ranked = [g for g in levels if g != reference]
    uns = adata.uns["rank_genes_groups"]
    assert list(uns["names"].dtype.names) == ranked
    labels = adata.obs["leiden"].to_numpy()
    for gene in (0, 4, 9):
        for g in ranked:
            # With size factors 1 the group means are the MLEs of the group model; the
            # dispersion is profiled by scipy over the same groups.
            if reference == "rest":
                idx = [labels == g, labels != g]
            else:
                idx = [labels == g, labels == reference] + [
                    labels == h for h in levels if h not in (g, reference)
                ]
            _, alpha = _profile_nb(y[:, gene], idx)
            m = np.array([y[i, gene].mean() for i in idx[:2]])
            v = (1 / m + alpha) / np.array([i.sum() for i in idx[:2]])
            est, se = np.log(m[0] / m[1]), np.sqrt(v.sum())
            row = sc.get.rank_genes_groups_df(adata, group=g).set_index("names").loc[f"gene{gene}"]
            assert row["logfoldchanges"] == pytest.approx(est / np.log(2), rel=1e-5)
            assert row["scores"] == pytest.approx(est / se, rel=1e-3)
            assert row["pvals"] == pytest.approx(2 * stats.norm.sf(abs(est / se)), rel=1e-2)


def test_lrt_markers_match_profile_likelihood_ratio():
    adata = _cells(seed=1)
    y = np.asarray(adata.X, dtype=float)
    bg.tl.rank_genes_groups(
        adata,
        "leiden",
        reference="B",
        method="lrt",
        size_factors=np.ones(adata.n_obs),
        key_added="lrt",
    )
    labels = adata.obs["leiden"].to_numpy()
    for gene in (1, 7):
        full, _ = _profile_nb(y[:, gene], [labels == g for g in ["B", "NK", "T", "mono"]])
        reduced, _ = _profile_nb(
            y[:, gene], [np.isin(labels, ["B", "T"]), labels == "NK", labels == "mono"]
        )
        row = (
            sc.get.rank_genes_groups_df(adata, group="T", key="lrt")
            .set_index("names")
            .loc[f"gene{gene}"]
        )
        stat = 2 * (full - reduced)
        assert row["scores"] ** 2 == pytest.approx(stat, rel=1e-4)
        assert row["pvals"] == pytest.approx(stats.chi2.sf(stat, 1), rel=1e-3)


def test_lrt_one_vs_rest_matches_profile_likelihood_ratio():
    adata = _cells(seed=6, n=200, f=3)
    y = np.asarray(adata.X, dtype=float)[:, 0]
    labels = adata.obs["leiden"].to_numpy()
    bg.tl.rank_genes_groups(adata, "leiden", method="lrt", size_factors=np.ones(adata.n_obs))
    for g in ("T", "NK"):
        full, _ = _profile_nb(y, [labels == g, labels != g])
        reduced, _ = _profile_nb(y, [np.ones_like(y, dtype=bool)])
        row = sc.get.rank_genes_groups_df(adata, group=g).set_index("names").loc["gene0"]
        assert row["scores"] ** 2 == pytest.approx(2 * (full - reduced), rel=1e-4)


@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_groups_of_zeros_give_infinite_fold_changes_and_lrt_scores(method):
    adata = _cells(seed=7)
    x = np.asarray(adata.X, dtype=float).copy()
    labels = adata.obs["leiden"].to_numpy()
    x[labels != "T", 6] = 0.0  # a perfect marker of T
    x[labels == "T", 6] += 3.0
    x[labels == "NK", 7] = 0.0  # absent from NK only
    adata.X = x
    bg.tl.rank_genes_groups(adata, "leiden", method=method)
    t = sc.get.rank_genes_groups_df(adata, group="T")
    assert t["names"].iloc[0] == "gene6"
    assert t["logfoldchanges"].iloc[0] == np.inf and t["pvals"].iloc[0] < 1e-20
    nk = sc.get.rank_genes_groups_df(adata, group="NK").set_index("names")
    assert nk.loc["gene7", "logfoldchanges"] == -np.inf
    assert nk.loc["gene7", "scores"] < -5 and nk.loc["gene7", "pvals"] < 1e-10
    # Absent from one other group (a fifth of the cells) is no infinite marker of the rest.
    b = sc.get.rank_genes_groups_df(adata, group="B").set_index("names")
    assert 0 < b.loc["gene7", "logfoldchanges"] < 1.0
    bg.tl.rank_genes_groups(adata, "leiden", method=method, reference="NK", key_added="ref")
    vs_nk = sc.get.rank_genes_groups_df(adata, group="B", key="ref").set_index("names")
    assert vs_nk.loc["gene7", "logfoldchanges"] == np.inf
    assert vs_nk.loc["gene7", "pvals"] < 1e-10
    assert np.isnan(vs_nk.loc["gene6", "logfoldchanges"])  # zeros in both groups


def test_scanpy_layout_sorting_and_plots():
    adata = _cells(seed=2)
    bg.tl.rank_genes_groups(adata, "leiden", n_genes=5)
    uns = adata.uns["rank_genes_groups"]
    assert uns["params"] == {
        "groupby": "leiden",
        "reference": "rest",
        "method": "batchglm_wald",
        "use_raw": False,
        "layer": None,
        "corr_method": "benjamini-hochberg",
    }
    for field in ("names", "scores", "logfoldchanges", "pvals", "pvals_adj"):
        assert uns[field].shape == (5,)
    scores = pd.DataFrame(uns["scores"])
    assert (scores.diff().iloc[1:] <= 0).all().all()
    table = sc.get.rank_genes_groups_df(adata, group="T")
    assert set(table["names"].iloc[:3]) == {"gene0", "gene1", "gene2"}
    # Library-size factors absorb part of the T cells' 5-fold increase of 3 of 12 genes.
    assert (table["logfoldchanges"].iloc[:3] > 0.8).all()
    bg.tl.rank_genes_groups(adata, "leiden", key_added="all")
    nk = sc.get.rank_genes_groups_df(adata, group="NK", key="all")
    assert set(nk["names"].iloc[-2:]) == {"gene3", "gene4"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pl.rank_genes_groups_dotplot(adata, n_genes=2, show=False)


def test_integer_coded_groups_are_levels():
    adata = _cells(seed=5, n=160, f=6)
    adata.obs["code"] = adata.obs["leiden"].cat.codes.astype(int) + 1
    bg.tl.rank_genes_groups(adata, "code", reference=1, size_factors=np.ones(adata.n_obs))
    assert list(adata.uns["rank_genes_groups"]["names"].dtype.names) == ["2", "3", "4"]
    y = np.asarray(adata.X, dtype=float)[:, 0]
    code = adata.obs["code"].to_numpy()
    lfc = (
        sc.get.rank_genes_groups_df(adata, group="3")
        .set_index("names")
        .loc["gene0", "logfoldchanges"]
    )
    assert lfc == pytest.approx(np.log2(y[code == 3].mean() / y[code == 1].mean()), rel=1e-5)


def test_rank_genes_groups_errors():
    adata = _cells(seed=3, n=80, f=4)
    with pytest.raises(ValueError, match=r"`reference` must be 'rest' or a group"):
        bg.tl.rank_genes_groups(adata, "leiden", reference="DC")
    with pytest.raises(ValueError, match="`method` must be 'wald' or 'lrt'"):
        bg.tl.rank_genes_groups(adata, "leiden", method="wilcoxon")
    with pytest.raises(ValueError, match="`groupby` 'cluster' is not a column"):
        bg.tl.rank_genes_groups(adata, "cluster")
    with pytest.raises(ValueError, match="`n_genes` must be at least 1"):
        bg.tl.rank_genes_groups(adata, "leiden", n_genes=0)
    adata.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least two groups to compare, but it has 1"):
        bg.tl.rank_genes_groups(adata, "one")
    adata.obs["gap"] = pd.Series(["a", None] * 40, index=adata.obs_names)
    with pytest.raises(ValueError, match="has 40 missing values"):
        bg.tl.rank_genes_groups(adata, "gap")


def _donor_cells(seed: int = 4) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(10):
        cond = "ctl" if d < 5 else "trt"
        for ct, n in (("Tcell", 30), ("Bcell", 25)):
            rows += [(f"d{d}", cond, ct)] * n
        if cond == "ctl":
            rows += [(f"d{d}", cond, "rare")] * 5
    obs = pd.DataFrame(rows, columns=["donor", "condition", "cell_type"])
    obs.index = [f"c{i}" for i in range(len(obs))]
    donor_effect = rng.normal(0, 0.3, (10, 6))
    mu = np.full((len(obs), 6), 3.0) * np.exp(donor_effect[obs["donor"].str[1:].astype(int)])
    mu[(obs["cell_type"] == "Tcell").to_numpy() & (obs["condition"] == "trt").to_numpy(), 0] *= 3
    y = rng.poisson(mu).astype(float)
    adata = ad.AnnData(y, obs=obs)
    adata.var_names = [f"gene{j}" for j in range(6)]
    return adata


def test_per_group_pseudobulk_matches_statsmodels_nb():
    adata = _donor_cells()
    with (
        pytest.warns(UserWarning, match="group 'rare' of 'cell_type' was not tested"),
        # The rare group has only control donors, so its design drops `condition`.
        pytest.warns(bg.formula.AnnotationWarning, match="has a single level"),
    ):
        table = bg.tl.test_per_group(
            adata,
            "cell_type",
            "~ condition",
            pseudobulk_by="donor",
            coef="condition[T.trt]",
            dispersion="mle",
        )
    assert list(table.columns[:9]) == [
        "group",
        "feature",
        *RESULTS_COLUMNS,
    ]
    np.testing.assert_allclose(
        table["stat"], table["log2FoldChange"] / table["lfcSE"], rtol=1e-8
    )  # a signed z, as bg.de.wald's table
    assert sorted(table["group"].unique()) == ["Bcell", "Tcell"]
    pb = bg.pseudobulk(adata, "donor", "cell_type")
    sub = pb[(pb.obs["cell_type"] == "Tcell").to_numpy()]
    y = np.asarray(sub.X, dtype=float)
    sf = bg.size_factors(sub, "poscounts")
    x = np.column_stack([np.ones(sub.n_obs), sub.obs["condition"] == "trt"]).astype(float)
    t = table[table["group"] == "Tcell"].set_index("feature")
    for gene in (0, 2, 4):
        start = sm.GLM(y[:, gene], x, family=sm.families.Poisson(), offset=np.log(sf)).fit()
        ref = sm.NegativeBinomial(y[:, gene], x, offset=np.log(sf)).fit(
            start_params=np.append(start.params, 0.1),
            method="newton",
            maxiter=200,
            disp=0,
            tol=1e-12,
        )
        assert ref.mle_retvals["converged"]
        row = t.loc[f"gene{gene}"]
        assert row["log2FoldChange"] == pytest.approx(ref.params[1] / np.log(2), rel=1e-5)
        assert row["lfcSE"] == pytest.approx(ref.bse[1] / np.log(2), rel=1e-3)
        assert row["baseMean"] == pytest.approx((y[:, gene] / sf).mean(), rel=1e-12)
    assert t.loc["gene0", "padj"] < 0.01


def test_per_group_errors():
    adata = _donor_cells()
    with pytest.raises(ValueError, match="give `coef` or `contrast`"):
        bg.tl.test_per_group(adata, "cell_type", "~ condition", pseudobulk_by="donor")
    with pytest.raises(ValueError, match="`size_factors` must name a method"):
        bg.tl.test_per_group(
            adata,
            "cell_type",
            "~ condition",
            pseudobulk_by="donor",
            coef="condition[T.trt]",
            size_factors=np.ones(3),
        )
    only_ctl = adata[(adata.obs["condition"] == "ctl").to_numpy()].copy()
    with (
        pytest.warns(UserWarning, match="was not tested"),
        pytest.warns(bg.formula.AnnotationWarning, match="has a single level"),
        pytest.raises(ValueError, match="no group of 'cell_type' could be tested"),
    ):
        bg.tl.test_per_group(
            only_ctl, "cell_type", "~ condition", pseudobulk_by="donor", coef="condition[T.trt]"
        )
