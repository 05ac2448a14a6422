"""Refit of only the features with replaced outlier counts (DESeq2's refitWithoutOutliers).

References: DESeq2 1.38.3 on a simulated 8 vs 8 table with 15 planted outliers
(``benchmarks/deseq2_replace_reference.R``, ``tests/data/deseq2_replace*.csv``), and for the
untouched features the first pass itself (a run without replacement), which they must
equal exactly.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import fields, replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm.de.degrees_of_freedom import SmallSampleWarning
from batchglm.de.outlier_refit import refit_dispersions, splice_results
from batchglm.de.result import DEResult
from batchglm.dispersion.estimate import estimate_dispersions
from batchglm.dispersion.rough import rough_start
from batchglm.inputs import data_of_fit

DATA = Path(__file__).parent / "data"
COEF = "condition[T.trt]"


@pytest.fixture(scope="module")
def table() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    counts = pd.read_csv(DATA / "deseq2_replace_counts.csv", index_col=0).T
    ref = pd.read_csv(DATA / "deseq2_replace.csv", index_col=0)
    obs = pd.DataFrame({"condition": np.repeat(["ctrl", "trt"], 8)}, index=counts.index)
    return counts, obs, ref


@pytest.fixture(scope="module")
def run(table) -> bg.de.PipelineResult:
    counts, obs, _ = table
    return bg.de.test(counts, "~ condition", obs=obs, coef=COEF)


def test_refitted_features_match_deseq2(table, run) -> None:
    counts, obs, ref = table
    rep = ref["replace"].to_numpy()
    assert rep.sum() == 15
    np.testing.assert_array_equal(run.replaced, rep)
    summary = run.summary()
    np.testing.assert_allclose(run.size_factors, ref["sizeFactor"].to_numpy()[:16], rtol=1e-8)
    # baseMean of the replaced counts, as DESeq2 reports it after the refit.
    np.testing.assert_allclose(summary["baseMean"][rep], ref["baseMean"][rep], rtol=1e-8)
    # Measured: MAP dispersions 1.1e-3 (log), fold changes 1.0e-6, lfcSE 9.7e-4 relative,
    # p-values 0.008 in log10.
    np.testing.assert_allclose(run.nb_dispersion[rep], ref["dispersion"][rep], rtol=3e-3)
    lfc = summary["log2FoldChange"].to_numpy()
    np.testing.assert_allclose(lfc[rep], ref["log2FoldChange"][rep], atol=1e-5)
    np.testing.assert_allclose(summary["lfcSE"][rep], ref["lfcSE"][rep], rtol=3e-3)
    log_p = np.log10(summary["pvalue"].to_numpy()[rep] / ref["pvalue"].to_numpy()[rep])
    assert np.max(np.abs(log_p)) < 0.02


def test_refit_dispersions_use_the_first_pass_trend_and_prior(table, run) -> None:
    """dispFit is the first pass's trend function at the new baseMean (DESeq2's dispFit of
    the refitted genes), the MAP uses its prior variance: both as DESeq2 to 3e-3."""
    counts, obs, ref = table
    rep = ref["replace"].to_numpy()
    # The pipeline's first pass: the location at DESeq2's rough dispersion, then estimates.
    start = rough_start(
        counts,
        "~ condition",
        obs=obs,
        size_factors="median_ratio",
        layer=None,
        constraints_loc=None,
    )
    assert start is not None
    res = bg.fit(
        counts,
        "~ condition",
        obs=obs,
        size_factors=start.size_factors,
        fixed_scale=start.log_r,
    )
    first = estimate_dispersions(counts, res)
    replaced = pd.DataFrame(
        np.asarray(run.fit.data.values)[:, rep], index=counts.index, columns=counts.columns[rep]
    )
    # The planted counts are gone from the refitted data.
    assert (replaced.to_numpy() < counts.to_numpy()[:, rep]).any(axis=0).all()
    sub_start = rough_start(
        replaced,
        "~ condition",
        obs=obs,
        size_factors=res.size_factors,
        layer=None,
        constraints_loc=None,
    )
    assert sub_start is not None
    sub = bg.fit(
        replaced,
        "~ condition",
        obs=obs,
        size_factors=res.size_factors,
        fixed_scale=sub_start.log_r,
    )
    disp = refit_dispersions(data_of_fit(replaced, sub), sub, first)
    assert disp.prior_var == first.prior_var and disp.trend_fit is first.trend_fit
    np.testing.assert_allclose(disp.trend, first.trend_fit(disp.base_mean), rtol=1e-12)
    np.testing.assert_allclose(disp.trend, ref["dispFit"][rep], rtol=5e-3)  # measured 3.0e-3
    np.testing.assert_allclose(disp.map, ref["dispersion"][rep], rtol=3e-3)
    np.testing.assert_array_equal(disp.map, run.nb_dispersion[rep])
    # Gene-wise estimates: DESeq2's own iteration differs at the low counts (4 % at most).
    gw = np.abs(np.log(disp.genewise / ref["dispGeneEst"][rep].to_numpy()))
    assert np.median(gw) < 0.01 and gw.max() < 0.06


@pytest.mark.parametrize("dispersion", ["map", "mle"])
@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_untouched_features_keep_their_first_pass_results(table, method, dispersion) -> None:
    counts, obs, ref = table
    counts = counts.iloc[:, :300]
    rep = ref["replace"].to_numpy()[:300]
    args = {"obs": obs, "dispersion": dispersion, "independent_filtering": False}
    args.update({"coef": COEF} if method == "wald" else {"method": "lrt", "reduced": "~ 1"})
    with pytest.warns(SmallSampleWarning) if dispersion == "mle" else nullcontext():
        de = bg.de.test(counts, "~ condition", **args)
        first = bg.de.test(counts, "~ condition", min_replicates_for_replace=np.inf, **args)
    np.testing.assert_array_equal(de.replaced, rep)
    keep = ~rep
    for name in ("pval", "stat", "coef_mle", "coef_se", "loglik"):
        np.testing.assert_array_equal(getattr(de, name)[keep], getattr(first, name)[keep])
    if dispersion == "map":
        np.testing.assert_array_equal(de.nb_dispersion[keep], first.nb_dispersion[keep])
    # The first pass flags the replaced features instead.
    assert np.isnan(first.pval[rep]).all() and np.isfinite(de.pval[rep]).all()


def test_mle_refit_equals_a_full_run_on_the_replaced_counts(table) -> None:
    """Per-feature ML dispersions share nothing: all features as a full rerun, to 1e-10."""
    counts, obs, _ = table
    counts = counts.iloc[:, :300]
    common = {"obs": obs, "coef": COEF, "dispersion": "mle", "independent_filtering": False}
    with pytest.warns(SmallSampleWarning):
        de = bg.de.test(counts, "~ condition", **common)
        replaced = pd.DataFrame(
            np.asarray(de.fit.data.values), index=counts.index, columns=counts.columns
        )
        full = bg.de.test(
            replaced, "~ condition", size_factors=de.size_factors, cooks_cutoff=None, **common
        )
    np.testing.assert_allclose(de.pval, full.pval, rtol=1e-10)
    np.testing.assert_allclose(de.coef_mle, full.coef_mle, rtol=1e-10, atol=1e-12)


def test_sparse_counts_give_the_same_refit(table, run) -> None:
    counts, obs, _ = table
    adata = ad.AnnData(
        X=sp.csr_matrix(counts.to_numpy()), obs=obs, var=pd.DataFrame(index=counts.columns)
    )
    de = bg.de.test(adata, "~ condition", coef=COEF)
    np.testing.assert_array_equal(de.replaced, run.replaced)
    np.testing.assert_allclose(de.pval, run.pval, rtol=1e-10, equal_nan=True)


def test_splice_refuses_a_different_test(run) -> None:
    base = DEResult(**{f.name: getattr(run, f.name) for f in fields(DEResult)})
    with pytest.raises(ValueError, match="the refit must be the same test as the first pass"):
        splice_results(base, replace(base, df=2), np.array([0]), None)


@pytest.mark.parametrize("method", ["wald", "lrt"])
def test_feature_left_all_zero_by_replacement(method) -> None:
    """Its only non-zero count was the outlier: refitted alone, reported as all zero."""
    rng = np.random.default_rng(5)
    obs = pd.DataFrame({"condition": np.repeat(["ctrl", "trt"], 8)})
    mu = np.exp(rng.uniform(1, 6, 40))[None, :] * np.ones((16, 1))
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(float)
    y[:, 3] = 0.0
    y[4, 3] = 500.0
    args = {"coef": COEF} if method == "wald" else {"method": "lrt", "reduced": "~ 1"}
    de = bg.de.test(y, "~ condition", obs=obs, **args)
    first = bg.de.test(y, "~ condition", obs=obs, min_replicates_for_replace=np.inf, **args)
    summary = de.summary()
    assert list(np.flatnonzero(de.replaced)) == [3]
    assert summary["status"].iloc[3] == "all_zero" and np.isnan(de.pval[3])
    keep = np.arange(40) != 3
    np.testing.assert_array_equal(de.pval[keep], first.pval[keep])
