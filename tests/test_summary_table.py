"""The results table users read: layout, units, sorting and the deprecated old names."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import batchglm as bg
from batchglm.de.table import DERow, DETable

MAIN = ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "status"]


@pytest.fixture(scope="module")
def poisson_de():
    """Poisson counts, 2 groups of 8, named features; statsmodels fits each one as reference."""
    rng = np.random.default_rng(12)
    f = 12
    cond = np.repeat([0.0, 1.0], 8)
    x = pd.DataFrame({"Intercept": 1.0, "treated": cond})
    mu = np.exp(rng.uniform(1.0, 4.0, f)[None, :] + np.outer(cond, rng.normal(0, 0.8, f)))
    y = pd.DataFrame(rng.poisson(mu).astype(float), columns=[f"gene{j}" for j in range(f)])
    res = bg.fit(y, x, family="poisson")
    return y, x, res, bg.de.wald(res, coef="treated")


def test_columns_units_and_values_match_statsmodels(poisson_de):
    y, x, _, de = poisson_de
    tab = de.summary(sort_by=None)
    assert isinstance(tab, DETable) and list(tab.columns[:7]) == MAIN
    assert tab.index.name == "feature" and list(tab.index) == list(y.columns)
    ln2 = np.log(2.0)
    for name in y.columns:
        ref = sm.GLM(y[name], x, family=sm.families.Poisson()).fit(tol=1e-12)
        row = tab.loc[name]
        assert row["log2FoldChange"] == pytest.approx(ref.params["treated"] / ln2, rel=1e-6)
        assert row["lfcSE"] == pytest.approx(ref.bse["treated"] / ln2, rel=1e-5)
        assert row["stat"] == pytest.approx(ref.tvalues["treated"], rel=1e-5)  # signed z
        assert row["pvalue"] == pytest.approx(ref.pvalues["treated"], rel=1e-4)
        assert row["baseMean"] == pytest.approx(ref.fittedvalues.mean(), rel=1e-6)
        assert row["loglik"] == pytest.approx(ref.llf, rel=1e-9)
        assert row["coef_se"] == pytest.approx(ref.bse["treated"], rel=1e-5)
    np.testing.assert_allclose(tab["padj"], stats.false_discovery_control(tab["pvalue"]))
    assert (tab["status"] == "converged").all() and (tab["stat_kind"] == "wald").all()


def test_sorting_and_n_max(poisson_de):
    _, _, _, de = poisson_de
    assert list(de.summary().index) == list(de.feature_names)  # default: the fit's order
    tab = de.summary(sort_by="pvalue")
    assert tab["pvalue"].is_monotonic_increasing
    by_lfc = de.summary(sort_by="log2FoldChange", n_max=3)
    assert len(by_lfc) == 3
    assert list(by_lfc.index) == list(
        de.summary(sort_by=None)["log2FoldChange"].sort_values().index[:3]
    )
    with pytest.raises(
        ValueError,
        match=r"`sort_by` must be a column of the table or None, "
        r"but 'pval' was given",
    ):
        de.summary(sort_by="pval")
    with pytest.raises(ValueError, match=r"`n_max` must be at least 0, but -1 was given"):
        de.summary(n_max=-1)


def test_stat_is_chi2_for_joint_and_lrt_tests():
    rng = np.random.default_rng(3)
    x = np.column_stack([np.ones(30), np.repeat([0.0, 1.0, 0.0], 10), np.repeat([0, 0, 1.0], 10)])
    y = rng.poisson(20.0, size=(30, 5)).astype(float)
    res = bg.fit(y, x, family="poisson")
    joint = bg.de.wald(res, coef=["p1", "p2"])
    np.testing.assert_array_equal(joint.summary(sort_by=None)["stat"], joint.stat)
    lrt = bg.de.lrt(y, x, x[:, :1], family="poisson")
    tab = lrt.summary(sort_by=None)
    np.testing.assert_array_equal(tab["stat"], lrt.stat)
    assert (tab["stat"] >= 0).all() and (tab["stat_kind"] == "lrt").all()


def test_old_names_warn_and_keep_their_values(poisson_de):
    _, _, _, de = poisson_de
    tab = de.summary(sort_by=None)
    pairs = {
        "pval": "pvalue",
        "qval": "padj",
        "log2fc": "log2FoldChange",
        "mean": "baseMean",
        "ll": "loglik",
        "coef_sd": "coef_se",
    }
    for old, new in pairs.items():
        with pytest.warns(DeprecationWarning, match=rf"column '{old}' .* use column '{new}'"):
            np.testing.assert_array_equal(tab[old], tab[new])
    with pytest.warns(DeprecationWarning, match=r"column 'pval'"):
        np.testing.assert_array_equal(tab.pval, tab["pvalue"])
    # coef_sd kept its natural-log units: lfcSE * ln 2.
    with pytest.warns(DeprecationWarning):
        np.testing.assert_allclose(tab.coef_sd, tab["lfcSE"] * np.log(2.0))
    with pytest.warns(DeprecationWarning, match=r"'feature' .* use the index"):
        assert list(tab["feature"]) == list(tab.index)
    row = tab.iloc[1]
    assert isinstance(row, DERow)
    with pytest.warns(DeprecationWarning, match=r"column 'pval'"):
        assert row.pval == row["pvalue"]
    with pytest.warns(DeprecationWarning):
        legacy = row[["feature", "pval", "log2fc", "converged"]].to_dict()
    assert legacy == {
        "feature": tab.index[1],
        "pval": row["pvalue"],
        "log2fc": row["log2FoldChange"],
        "converged": True,
    }
    with pytest.warns(DeprecationWarning):
        sub = tab[["feature", "pval"]]
    assert list(sub.columns) == ["feature", "pval"]
    np.testing.assert_array_equal(sub["pval"], tab["pvalue"])
    with pytest.warns(
        DeprecationWarning,
        match=r"`DEResult.coef_sd` is deprecated; use "
        r"`coef_se`",
    ):
        np.testing.assert_array_equal(de.coef_sd, de.coef_se)
    # A column of the table maps nothing: its labels are features.
    with pytest.raises(KeyError):
        tab["pvalue"]["pval"]


def test_all_zero_feature_row_is_consistently_untested() -> None:
    rng = np.random.default_rng(12)
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + 30.0), size=(10, 4)).astype(np.float64)
    y[:, 1] = 0.0
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 5)})
    res = bg.fit(y, "~ g", obs=obs, size_factors=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)
        table = bg.de.wald(res, coef="g[T.b]").summary()
    row = table.iloc[1]
    assert row["status"] == "all_zero" and row["stat_kind"] == "none"
    assert np.isnan(row["log2FoldChange"]) and np.isnan(row["coef_mle"])
    assert np.isnan(row["pvalue"])
    # The other features keep their Wald rows; estimates are the closed form (no offsets).
    others = table.drop(index=table.index[1])
    assert (others["stat_kind"] == "wald").all()
    keep = [0, 2, 3]
    expect = np.log(y[5:, keep].mean(axis=0) / y[:5, keep].mean(axis=0))
    np.testing.assert_allclose(others["coef_mle"], expect, rtol=1e-6)
