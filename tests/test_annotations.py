"""Annotations that are probably a mistake: unused levels, integer-coded groups, one-level factors.

References are closed forms: for a Poisson GLM with one factor (and an intercept) the MLE of
each group's log mean is the log of the group's sample mean, so coefficients are log ratios
of group means.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.cli import main
from batchglm.design import build_design
from batchglm.formula import AnnotationWarning, integer_codes

# These tests use few replicates on purpose (small designs for annotations); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

N = 24


@pytest.fixture(scope="module")
def tissue_data() -> tuple[np.ndarray, pd.DataFrame]:
    """Counts for three tissues (8 samples each) and a categorical with an unused level."""
    rng = np.random.default_rng(2024)
    tissue = np.repeat(["kidney", "lung", "heart"], N // 3)
    mean = np.where(tissue == "lung", 30.0, np.where(tissue == "heart", 5.0, 12.0))
    y = rng.poisson(mean[:, None], size=(N, 4)).astype(float)
    obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(tissue, categories=["kidney", "liver", "lung", "heart"]),
            # Not in any formula below: its unused level must not be reported.
            "sex": pd.Categorical(np.tile(["f", "m"], N // 2), categories=["f", "m", "u"]),
        },
        index=pd.Index([f"s{i}" for i in range(N)]),
    )
    return y, obs


def _group_log_ratio(y: np.ndarray, groups: np.ndarray, level: object, ref: object) -> np.ndarray:
    return np.log(y[groups == level].mean(axis=0) / y[groups == ref].mean(axis=0))


# --- unused categorical levels ------------------------------------------------------------


def test_unused_level_is_dropped_with_a_warning(tissue_data):
    y, obs = tissue_data
    with pytest.warns(
        AnnotationWarning,
        match=r"column 'tissue' .*\['liver'\].*dropped"
        r".*remove_unused_categories",
    ) as record:
        res = bg.fit(y, "~ 1 + tissue", obs=obs, family="poisson")
    assert not any("'sex'" in str(w.message) for w in record)
    assert list(res.coef_loc.columns) == ["Intercept", "tissue[T.lung]", "tissue[T.heart]"]
    groups = np.asarray(obs["tissue"])
    np.testing.assert_allclose(
        res.coef_loc["Intercept"], np.log(y[groups == "kidney"].mean(0)), rtol=1e-6
    )
    np.testing.assert_allclose(
        res.coef_loc["tissue[T.heart]"], _group_log_ratio(y, groups, "heart", "kidney"), atol=1e-6
    )
    # The user's table is left as it was.
    assert list(obs["tissue"].cat.categories) == ["kidney", "liver", "lung", "heart"]
    # Level contrasts use the remaining levels; the dropped one is not a level any more.
    w = bg.de.wald(res, contrast=("tissue", "heart", "lung"))
    np.testing.assert_allclose(w.coef_mle, _group_log_ratio(y, groups, "heart", "lung"), atol=1e-6)
    with pytest.raises(ValueError, match=r"'liver' is not a level of 'tissue'"):
        bg.de.wald(res, contrast=("tissue", "liver", "kidney"))


def test_unused_level_in_anndata_obs_and_scale_formula(tissue_data):
    y, obs = tissue_data
    adata = ad.AnnData(X=y, obs=obs)
    with pytest.warns(AnnotationWarning, match=r"'tissue' used in `design_scale`.*\['liver'\]"):
        res = bg.fit(adata, "~ 1", "~ 1 + tissue")
    assert list(res.coef_scale.columns) == ["Intercept", "tissue[T.lung]", "tissue[T.heart]"]


def test_unused_level_with_nested_constraints():
    rng = np.random.default_rng(5)
    cond = np.repeat(["ctl", "trt"], 12)
    rep = np.repeat(["r1", "r2", "r3", "r4"], 6)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(cond, categories=["ctl", "none", "trt"]), "replicate": rep}
    )
    y = rng.poisson(10.0, size=(24, 2)).astype(float)
    with pytest.warns(AnnotationWarning, match=r"'condition'.*\['none'\]"):
        d = build_design(
            "~ 1 + condition + replicate", {"replicate": "condition"}, 24, "loc", obs=obs
        )
    assert d.names[:2] == ["Intercept", "condition[T.trt]"]
    with pytest.warns(AnnotationWarning, match="'condition'"):
        res = bg.fit(
            y,
            "~ 1 + condition + replicate",
            obs=obs,
            family="poisson",
            constraints_loc={"replicate": "condition"},
        )
    # Saturated in the replicates, with replicate effects summing to zero within each
    # condition: the condition effect is the mean of the replicates' log means.
    log_means = {r: np.log(y[rep == r].mean(axis=0)) for r in ("r1", "r2", "r3", "r4")}
    expected = (log_means["r3"] + log_means["r4"]) / 2 - (log_means["r1"] + log_means["r2"]) / 2
    np.testing.assert_allclose(res.coef_loc["condition[T.trt]"], expected, atol=1e-6)


def test_no_warning_without_unused_levels(tissue_data):
    y, obs = tissue_data
    clean = obs.assign(tissue=obs["tissue"].cat.remove_unused_categories())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        res = bg.fit(y, "~ 1 + tissue", obs=clean, family="poisson")
    assert res.obs is clean


# --- integer-coded groups ---------------------------------------------------------------


def _integer_obs() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(31)
    batch = np.repeat([1, 2, 3, 4], N // 4)
    mean = np.array([8.0, 40.0, 8.0, 20.0])[batch - 1]
    y = rng.poisson(mean[:, None], size=(N, 3)).astype(float)
    obs = pd.DataFrame(
        {
            "batch": batch,
            "dose": np.round(np.random.default_rng(1).uniform(0, 2.5, N), 3),  # continuous
            "pair": np.repeat([0, 1], N // 2),  # two values: same model either way
            "age": np.arange(30, 30 + N),  # many distinct integers
        },
        index=[f"s{i}" for i in range(N)],
    )
    return y, obs


def test_integer_codes_rule():
    assert integer_codes(pd.Series([1, 2, 3, 1, 2, 3])) == [1.0, 2.0, 3.0]
    assert integer_codes(pd.Series([1.0, 2.0, 5.0, 5.0])) == [1.0, 2.0, 5.0]
    assert integer_codes(pd.Series([0, 1, 0, 1])) is None  # two values
    assert integer_codes(pd.Series([1, 2, 3])) is None  # no value repeats
    assert integer_codes(pd.Series(np.repeat(np.arange(11), 2))) is None  # over 10 values
    assert integer_codes(pd.Series([1.5, 2.0, 3.0, 3.0])) is None  # not integers
    assert integer_codes(pd.Series([True, False, True])) is None  # boolean
    assert integer_codes(pd.Series(["1", "2", "3", "1"])) is None  # strings are factors


def test_integer_coded_column_warns_and_wrapping_silences_it():
    y, obs = _integer_obs()
    with pytest.warns(
        AnnotationWarning,
        match=r"column 'batch' in `design_loc`.*4 distinct "
        r"integer values \[1, 2, 3, 4\].*slope.*C\(batch\).*astype\('category'\)",
    ):
        res = bg.fit(y, "~ 1 + batch", obs=obs, family="poisson")
    assert list(res.coef_loc.columns) == ["Intercept", "batch"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        wrapped = bg.fit(y, "~ 1 + C(batch)", obs=obs, family="poisson")
        bg.fit(y, "~ 1 + dose + pair + age", obs=obs, family="poisson")
        bg.fit(y, "~ 1 + np.log1p(batch)", obs=obs, family="poisson")
        as_category = bg.fit(
            y,
            "~ 1 + batch",
            obs=obs.assign(batch=obs["batch"].astype("category")),
            family="poisson",
        )
    np.testing.assert_allclose(
        wrapped.coef_loc["C(batch)[T.2]"],
        _group_log_ratio(y, obs["batch"].to_numpy(), 2, 1),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        as_category.coef_loc["batch[T.4]"],
        _group_log_ratio(y, obs["batch"].to_numpy(), 4, 1),
        atol=1e-6,
    )


def test_integer_coded_column_in_an_interaction_warns():
    y, obs = _integer_obs()
    obs = obs.assign(cond=np.tile(["a", "b"], N // 2))
    with pytest.warns(AnnotationWarning, match=r"column 'batch'"):
        build_design("~ 1 + cond + cond:batch", None, N, "loc", obs=obs)


def test_level_contrast_on_a_numeric_column_is_refused():
    y, obs = _integer_obs()
    with pytest.warns(AnnotationWarning):
        res = bg.fit(y, "~ 1 + batch", obs=obs, family="poisson")
    with pytest.raises(
        ValueError,
        match=r"needs 'batch' to be a factor, but it is a numeric "
        r"column.*\['batch'\].*C\(batch\).*coef='batch'",
    ):
        bg.de.wald(res, contrast=("batch", "3", "1"))
    dose = bg.fit(y, "~ 1 + np.log1p(dose)", obs=obs, family="poisson")
    with pytest.raises(ValueError, match=r"numeric column.*\['np.log1p\(dose\)'\]"):
        bg.de.wald(dose, contrast=("dose", str(obs["dose"].iloc[0]), str(obs["dose"].iloc[1])))
    # As a factor the same comparison is a log ratio of group means.
    wrapped = bg.fit(y, "~ 1 + C(batch)", obs=obs, family="poisson")
    w = bg.de.wald(wrapped, contrast=("batch", "4", "2"))
    np.testing.assert_allclose(
        w.coef_mle, _group_log_ratio(y, obs["batch"].to_numpy(), 4, 2), atol=1e-6
    )


# --- single-level factors -----------------------------------------------------------------


def test_single_level_factor_warns():
    rng = np.random.default_rng(8)
    obs = pd.DataFrame({"cond": np.tile(["a", "b"], N // 2), "site": ["s1"] * N})
    with pytest.warns(
        AnnotationWarning,
        match=r"column 'site' in `design_loc`.*single level "
        r"\('s1'\).*\['site'\] drop out",
    ):
        d = build_design("~ 1 + cond + site", None, N, "loc", obs=obs)
    assert d.names == ["Intercept", "cond[T.b]"]
    with pytest.warns(AnnotationWarning, match=r"factor 'C\(site\)'.*single level"):
        build_design("~ 1 + cond + C(site)", None, N, "loc", obs=obs)
    # Kept as a column (no intercept): it is the intercept then, nothing drops out.
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)
        d0 = build_design("~ 0 + site + cond", None, N, "loc", obs=obs)
    assert d0.names == ["site[s1]", "cond[T.b]"]
    # A level left alone after dropping unused categories: both are reported.
    obs2 = obs.assign(site=pd.Categorical(obs["site"], categories=["s0", "s1"]))
    y = rng.poisson(5.0, size=(N, 2)).astype(float)
    with pytest.warns(AnnotationWarning) as record:
        bg.fit(y, "~ 1 + cond + site", obs=obs2, family="poisson")
    messages = " | ".join(str(w.message) for w in record)
    assert "['s0']" in messages and "single level ('s1')" in messages


# --- the command line ---------------------------------------------------------------------


# The CLI prints each warning as a `batchglm: warning:` line, as users see it; this test
# reads those lines, so warnings keep their default action instead of becoming errors.
@pytest.mark.filterwarnings("always::UserWarning")
def test_cli_contrast_on_an_integer_column(tmp_path: Path, capsys):
    y, obs = _integer_obs()
    names = list(obs.index)
    pd.DataFrame(y.T, index=[f"g{j}" for j in range(y.shape[1])], columns=names).to_csv(
        tmp_path / "counts.csv"
    )
    obs[["batch"]].rename_axis("sample").to_csv(tmp_path / "obs.csv")
    base = [
        "test",
        "counts.csv",
        "--obs",
        "obs.csv",
        "--design-loc",
        "~ 1 + batch",
        "--out",
        "de.csv",
    ]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main([*base, "--contrast", "batch", "3", "1"])
        err = capsys.readouterr().err
        assert code == 1
        lines = err.strip().splitlines()
        assert lines[-1].startswith(
            "batchglm: error: a level contrast ('batch', '3', '1') needs 'batch' to be a factor"
        )
        assert lines[0].startswith("batchglm: warning: `obs` column 'batch'")
        assert len(lines) == 2
        assert not (tmp_path / "de.csv").exists()
        # Raw group means: `batchglm test` now estimates median-ratio size factors by default.
        code = main(
            [
                *base[:5],
                "~ 1 + C(batch)",
                "--out",
                "de.csv",
                "--contrast",
                "batch",
                "3",
                "1",
                "--size-factors",
                "none",
            ]
        )
        assert code == 0, capsys.readouterr().err
    finally:
        os.chdir(cwd)
    de = pd.read_csv(tmp_path / "de.csv", index_col=0)
    np.testing.assert_allclose(
        de["log2FoldChange"].to_numpy(),
        _group_log_ratio(y, obs["batch"].to_numpy(), 3, 1) / np.log(2),
        atol=1e-5,
    )


# The CLI prints each warning as a `batchglm: warning:` line, as users see it; this test
# reads those lines, so warnings keep their default action instead of becoming errors.
@pytest.mark.filterwarnings("always::UserWarning")
def test_cli_unused_level_in_h5ad_is_dropped(tmp_path: Path, tissue_data, capsys):
    y, obs = tissue_data
    ad.AnnData(X=y, obs=obs).write_h5ad(tmp_path / "d.h5ad")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(
            [
                "fit",
                "d.h5ad",
                "--design-loc",
                "~ 1 + tissue",
                "--family",
                "poisson",
                "--out",
                "fit.csv",
            ]
        )
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "batchglm: warning: `obs` column 'tissue' used in `design_loc` "
        "has categories that no observation has: ['liver']"
    )
    fit = pd.read_csv(tmp_path / "fit.csv", index_col=0)
    groups = np.asarray(obs["tissue"])
    np.testing.assert_allclose(
        fit["coef_loc:tissue[T.heart]"].to_numpy(),
        _group_log_ratio(y, groups, "heart", "kidney"),
        atol=1e-6,
    )


def test_level_contrast_accepts_integer_levels_of_an_integer_coded_factor():
    rng = np.random.default_rng(11)
    grp = np.repeat([1, 2, 3], 4)
    mu = np.where(grp == 3, 80.0, 20.0)[:, None]
    y = rng.negative_binomial(5, 5 / (5 + mu), size=(12, 6)).astype(float)
    obs = pd.DataFrame({"grp": grp}, index=[f"s{i}" for i in range(12)])
    res = bg.fit(pd.DataFrame(y, index=obs.index), "~ 1 + C(grp)", obs=obs)
    by_int = bg.de.wald(res, contrast=("grp", 3, 1))
    by_str = bg.de.wald(res, contrast=("grp", "3", "1"))
    np.testing.assert_array_equal(by_int.pval, by_str.pval)
    np.testing.assert_allclose(by_int.coef_mle, res.coef_loc["C(grp)[T.3]"], rtol=1e-12)
