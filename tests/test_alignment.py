"""Labelled inputs are matched to the data by name, never silently by position.

Every reordered input is checked against the fit on correctly ordered inputs, and the
Poisson group effects against their closed form (log ratio of size-factor-scaled group
totals), which does not use batchglm at all.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import batchglm as bg
from batchglm.align import PositionalPairingWarning, positions
from cli_runner import run_cli

# These tests use few replicates on purpose (small designs for alignment); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")

N_OBS, N_FEAT = 12, 5
NAMES = [f"sample{i}" for i in range(N_OBS)]
GENES = [f"gene{j}" for j in range(N_FEAT)]
#: Shuffles: no observation keeps its place.
PERM = np.array([7, 0, 11, 3, 9, 1, 5, 10, 2, 8, 4, 6])
GENE_PERM = np.array([3, 0, 4, 2, 1])


@pytest.fixture(scope="module")
def counts() -> pd.DataFrame:
    rng = np.random.default_rng(18)
    treated = np.repeat([0.0, 1.0], N_OBS // 2)
    mu = 30.0 * np.exp(np.outer(treated, np.linspace(-1.0, 1.5, N_FEAT)))
    y = rng.negative_binomial(8, 8 / (8 + mu))
    return pd.DataFrame(y.astype(float), index=NAMES, columns=GENES)


@pytest.fixture(scope="module")
def obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "condition": np.repeat(["ctrl", "trt"], N_OBS // 2),
            "batch": np.tile(["b1", "b2", "b3"], N_OBS // 3),
        },
        index=NAMES,
    )


@pytest.fixture(scope="module")
def sf() -> pd.Series:
    return pd.Series(np.linspace(0.6, 1.8, N_OBS), index=NAMES)


@pytest.fixture(scope="module")
def ordered(counts, obs):
    return bg.fit(counts, "~ 1 + condition", obs=obs)


def _poisson_effect(counts: pd.DataFrame, obs: pd.DataFrame, sf: pd.Series) -> np.ndarray:
    """Closed-form Poisson MLE of ``condition[T.trt]`` (log rate ratio), aligned by hand."""
    y = counts.to_numpy()
    trt = (obs.loc[counts.index, "condition"] == "trt").to_numpy()
    s = sf.loc[counts.index].to_numpy()
    rate_t = y[trt].sum(axis=0) / s[trt].sum()
    rate_c = y[~trt].sum(axis=0) / s[~trt].sum()
    return np.log(rate_t / rate_c)


def _same_fit(a: bg.FitResult, b: bg.FitResult) -> None:
    pd.testing.assert_frame_equal(a.coef_loc, b.coef_loc)
    pd.testing.assert_frame_equal(a.coef_scale, b.coef_scale)
    pd.testing.assert_frame_equal(a.se_loc, b.se_loc)


def test_obs_dataframe_is_matched_by_name(counts, obs, ordered):
    res = bg.fit(counts, "~ 1 + condition", obs=obs.iloc[PERM])
    _same_fit(res, ordered)
    assert list(res.obs_names) == NAMES


def test_poisson_effect_matches_closed_form_with_shuffled_obs_and_size_factors(counts, obs, sf):
    res = bg.fit(
        counts,
        "~ 1 + condition",
        obs=obs.iloc[PERM],
        size_factors=sf.iloc[PERM[::-1]],
        family="poisson",
        tol=1e-14,
    )
    np.testing.assert_allclose(
        res.coef_loc["condition[T.trt]"].to_numpy(),
        _poisson_effect(counts, obs, sf),
        rtol=1e-8,
        atol=1e-10,
    )


def test_size_factor_series_is_matched_by_name(counts, obs, sf):
    good = bg.fit(counts, "~ 1 + condition", obs=obs, size_factors=sf.to_numpy())
    _same_fit(bg.fit(counts, "~ 1 + condition", obs=obs, size_factors=sf.iloc[::-1]), good)
    # A one-column DataFrame too.
    frame = sf.iloc[PERM].to_frame("sf")
    _same_fit(bg.fit(counts, "~ 1 + condition", obs=obs, size_factors=frame), good)


def test_design_frames_are_matched_by_name(counts, obs):
    loc = pd.DataFrame({"Intercept": 1.0, "trt": (obs["condition"] == "trt") * 1.0})
    scale = pd.DataFrame({"Intercept": 1.0, "b2": (obs["batch"] == "b2") * 1.0})
    good = bg.fit(counts, loc, scale)
    _same_fit(bg.fit(counts, loc.iloc[PERM], scale.iloc[PERM[::-1]]), good)


def test_fixed_scale_frame_is_matched_by_feature_name(counts, obs, ordered):
    known = ordered.coef_scale
    good = bg.fit(counts, "~ 1 + condition", obs=obs, fixed_scale=known.to_numpy())
    res = bg.fit(counts, "~ 1 + condition", obs=obs, fixed_scale=known.iloc[GENE_PERM])
    _same_fit(res, good)
    series = known["Intercept"].iloc[GENE_PERM]
    _same_fit(bg.fit(counts, "~ 1 + condition", obs=obs, fixed_scale=series), good)


def test_anndata_with_a_reordered_obs_table(counts, obs, ordered):
    adata = ad.AnnData(
        counts.to_numpy(), obs=pd.DataFrame(index=NAMES), var=pd.DataFrame(index=GENES)
    )
    _same_fit(bg.fit(adata, "~ 1 + condition", obs=obs.iloc[PERM]), ordered)


def test_unnamed_inputs_pair_by_position(counts, obs, ordered):
    # A default RangeIndex carries no names: paired by position, as numpy arrays are, with
    # one warning (it was silent before: names lost by reset_index went unnoticed).
    with pytest.warns(
        PositionalPairingWarning,
        match=r"`obs` has the default index 0\.\.11 \(no observation names\), so it is paired "
        r"with `data` by position.*set the index of `obs` to those names",
    ) as caught:
        fit = bg.fit(
            counts,
            "~ 1 + condition",
            obs=obs.reset_index(drop=True),
            size_factors=pd.Series(ordered.size_factors),
        )
    assert len(caught) == 1  # once per fit, for the first unnamed input
    _same_fit(fit, ordered)
    # Unnamed data: a named obs table pairs by position as it is given.
    res = bg.fit(counts.to_numpy(), "~ 1 + condition", obs=obs.iloc[PERM])
    plain = bg.fit(counts.to_numpy(), "~ 1 + condition", obs=obs.iloc[PERM].reset_index(drop=True))
    np.testing.assert_array_equal(res.coef_loc.to_numpy(), plain.coef_loc.to_numpy())
    assert not np.allclose(res.coef_loc.to_numpy(), ordered.coef_loc.to_numpy())


def test_shuffled_default_index_still_says_where_rows_came_from(counts, obs, ordered):
    # obs.sample(frac=1) of a default-indexed table keeps its labels 0..n-1 permuted.
    unnamed = counts.reset_index(drop=True)
    res = bg.fit(unnamed, "~ 1 + condition", obs=obs.reset_index(drop=True).iloc[PERM])
    np.testing.assert_array_equal(res.coef_loc.to_numpy(), ordered.coef_loc.to_numpy())


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            slice(1, None),
            r"`obs` must name the same observations as `data`, but `obs` lacks "
            r"1 observation of `data` \(e.g. \['sample0'\]\); select its rows",
        ),
        ("extra", r"but `obs` has 1 observation that `data` lacks \(e.g. \['intruder'\]\)"),
    ],
)
def test_obs_with_other_names_is_refused(counts, obs, rows, match):
    table = (
        obs.iloc[rows]
        if rows != "extra"
        else pd.concat(
            [obs, pd.DataFrame({"condition": ["ctrl"], "batch": ["b1"]}, index=["intruder"])]
        )
    )
    with pytest.raises(ValueError, match=match):
        bg.fit(counts, "~ 1 + condition", obs=table)


def test_other_named_inputs_are_refused(counts, obs, sf, ordered):
    renamed = sf.rename(lambda s: s.replace("sample", "s"))
    with pytest.raises(
        ValueError,
        match=r"`size_factors` must name the same observations as "
        r"`data`, but `size_factors` lacks 12 observations",
    ):
        bg.fit(counts, "~ 1 + condition", obs=obs, size_factors=renamed)
    design = pd.DataFrame({"Intercept": 1.0}, index=[f"x{i}" for i in range(N_OBS)])
    with pytest.raises(ValueError, match=r"`design_scale` must name the same observations"):
        bg.fit(counts, "~ 1 + condition", design, obs=obs)
    known = ordered.coef_scale.rename(index={"gene2": "GENE2"})
    with pytest.raises(
        ValueError,
        match=r"`fixed_scale` must name the same features as "
        r"`data`, but `fixed_scale` lacks 1 feature of "
        r"`data` \(e.g. \['gene2'\]\) and has 1 feature "
        r"that `data` lacks \(e.g. \['GENE2'\]\)",
    ):
        bg.fit(counts, "~ 1 + condition", obs=obs, fixed_scale=known)


def test_positions_rule():
    target = pd.Index(["a", "b", "c"])
    np.testing.assert_array_equal(
        positions(target, ["c", "a", "b"], what="x", target_what="y", axis="observation"), [1, 2, 0]
    )
    assert positions(target, ["a", "b", "c"], what="x", target_what="y", axis="observation") is None
    assert (
        positions(target, pd.RangeIndex(3), what="x", target_what="y", axis="observation") is None
    )
    assert (
        positions(
            pd.Index(["feature0", "feature1"]),
            ["g", "h"],
            what="x",
            target_what="y",
            axis="feature",
        )
        is None
    )


def _shuffled(counts: pd.DataFrame) -> pd.DataFrame:
    return counts.iloc[PERM, GENE_PERM]


@pytest.mark.parametrize("dispersion", ["map", "ql"])
def test_wald_data_is_matched_to_the_fit(counts, ordered, dispersion):
    good = bg.de.wald(ordered, "condition[T.trt]", dispersion=dispersion, data=counts)
    res = bg.de.wald(ordered, "condition[T.trt]", dispersion=dispersion, data=_shuffled(counts))
    np.testing.assert_array_equal(res.pval, good.pval)
    np.testing.assert_array_equal(res.coef_mle, good.coef_mle)
    assert list(res.feature_names) == GENES


def test_ql_f_lrt_and_dispersions_match_data_to_the_fit(counts, obs, ordered):
    good = bg.de.ql_f(ordered, "condition[T.trt]", data=counts)
    res = bg.de.ql_f(ordered, "condition[T.trt]", data=_shuffled(counts))
    np.testing.assert_array_equal(res.pval, good.pval)
    reduced = bg.fit(counts, "~ 1", obs=obs)
    lr_good = bg.de.lrt(counts, full=ordered, reduced=reduced, dispersion="map")
    lr = bg.de.lrt(_shuffled(counts), full=ordered, reduced=reduced, dispersion="map")
    np.testing.assert_array_equal(lr.pval, lr_good.pval)
    gw_good = bg.dispersion.genewise_dispersions(counts, ordered)
    gw = bg.dispersion.genewise_dispersions(_shuffled(counts), ordered)
    pd.testing.assert_frame_equal(gw.coef, gw_good.coef)
    shuffled = _shuffled(counts)
    adata = ad.AnnData(
        sparse.csr_matrix(shuffled.to_numpy()),  # reordered, kept sparse
        obs=pd.DataFrame(index=shuffled.index),
        var=pd.DataFrame(index=shuffled.columns),
    )
    est = bg.dispersion.estimate_dispersions(adata, ordered)
    est_good = bg.dispersion.estimate_dispersions(counts, ordered)
    pd.testing.assert_frame_equal(est.to_frame(), est_good.to_frame())


def test_data_with_other_names_is_refused(counts, ordered):
    other = counts.rename(columns={"gene4": "gene9"})
    with pytest.raises(
        ValueError,
        match=r"`data` must name the same features as the fit, "
        r"but `data` lacks 1 feature of the fit \(e.g. "
        r"\['gene4'\]\) and has 1 feature that the "
        r"fit lacks \(e.g. \['gene9'\]\); pass the data the "
        r"fit was made on",
    ):
        bg.de.wald(ordered, "condition[T.trt]", dispersion="map", data=other)
    with pytest.raises(ValueError, match=r"`data` must name the same observations as the fit"):
        bg.dispersion.genewise_dispersions(counts.iloc[:-1], ordered)


def test_lrt_with_reordered_designs(counts, obs):
    loc = pd.DataFrame(
        {
            "Intercept": 1.0,
            "b2": (obs["batch"] == "b2") * 1.0,
            "trt": (obs["condition"] == "trt") * 1.0,
        }
    )
    good = bg.de.lrt(counts, loc, loc[["Intercept", "b2"]])
    res = bg.de.lrt(counts, loc.iloc[PERM], loc[["Intercept", "b2"]].iloc[PERM[::-1]])
    np.testing.assert_array_equal(res.pval, good.pval)
    by_obs = bg.de.lrt(counts, "~ 1 + condition", "~ 1", obs=obs.iloc[PERM])
    np.testing.assert_array_equal(
        by_obs.pval, bg.de.lrt(counts, "~ 1 + condition", "~ 1", obs=obs).pval
    )


def test_to_anndata_matches_features_by_name(counts, ordered):
    target = ad.AnnData(
        np.zeros((N_OBS, N_FEAT)), var=pd.DataFrame(index=[GENES[j] for j in GENE_PERM])
    )
    ordered.to_anndata(target)
    pd.testing.assert_frame_equal(target.varm["batchglm_coef_loc"].loc[GENES], ordered.coef_loc)
    np.testing.assert_array_equal(
        target.var["batchglm_loglik"].loc[GENES], ordered.loglik.to_numpy()
    )


def test_cli_matches_count_table_and_obs_by_name(tmp_path, counts, obs, capsys):
    # Genes x samples with samples shuffled, and an obs table in yet another order.
    counts.iloc[PERM].T.to_csv(tmp_path / "counts.tsv", sep="\t")
    obs.iloc[PERM[::-1]].to_csv(tmp_path / "obs.csv")
    code, _, err = run_cli(
        tmp_path,
        [
            "fit",
            "counts.tsv",
            "--obs",
            "obs.csv",
            "--design-loc",
            "~ 1 + condition",
            "--out",
            "fit.csv",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "fit.csv", index_col=0)
    direct = bg.fit(counts, "~ 1 + condition", obs=obs)
    np.testing.assert_allclose(
        table["coef_loc:condition[T.trt]"].to_numpy(),
        direct.coef_loc["condition[T.trt]"].to_numpy(),
        rtol=1e-12,
    )
    adata = ad.AnnData(
        counts.iloc[PERM].to_numpy(),
        obs=pd.DataFrame(index=counts.index[PERM]),
        var=pd.DataFrame(index=GENES),
    )
    adata.write_h5ad(tmp_path / "data.h5ad")
    code, _, err = run_cli(
        tmp_path,
        [
            "fit",
            "data.h5ad",
            "--obs",
            "obs.csv",
            "--design-loc",
            "~ 1 + condition",
            "--out",
            "fit2.csv",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "fit2.csv", index_col=0)
    np.testing.assert_allclose(
        table["coef_loc:condition[T.trt]"].to_numpy(),
        direct.coef_loc["condition[T.trt]"].to_numpy(),
        rtol=1e-12,
    )


def test_cli_refuses_tables_with_other_samples(tmp_path, counts, obs, capsys):
    counts.T.to_csv(tmp_path / "counts.tsv", sep="\t")
    obs.iloc[1:].to_csv(tmp_path / "short.csv")
    code, _, err = run_cli(
        tmp_path,
        ["fit", "counts.tsv", "--obs", "short.csv", "--design-loc", "~ 1", "--out", "x.csv"],
        capsys,
    )
    assert code == 1
    assert (
        "the count table 'counts.tsv' has 1 columns that are not in the obs table: ['sample0']"
    ) in err
    assert "if they are observations, add them to the obs table" in err
    extra = pd.concat(
        [obs, pd.DataFrame({"condition": ["ctrl"], "batch": ["b1"]}, index=["intruder"])]
    )
    extra.to_csv(tmp_path / "extra.csv")
    code, _, err = run_cli(
        tmp_path,
        ["fit", "counts.tsv", "--obs", "extra.csv", "--design-loc", "~ 1", "--out", "x.csv"],
        capsys,
    )
    assert code == 1
    assert "has 1 observation that 'counts.tsv' lacks (e.g. ['intruder'])" in err


def test_fit_layer_applies_to_anndata_only() -> None:
    """A fit's layer reads an AnnData; arrays and DataFrames have none, so it is ignored."""
    rng = np.random.default_rng(41)
    obs = pd.DataFrame({"condition": np.repeat(["a", "b"], 5)}, index=[f"s{i}" for i in range(10)])
    y = rng.negative_binomial(6, 0.1, (10, 40))
    genes = [f"g{j}" for j in range(40)]
    adata = ad.AnnData(np.zeros_like(y, dtype=float), obs=obs, var=pd.DataFrame(index=genes))
    adata.layers["counts"] = y
    res = bg.fit(adata, "~ condition", layer="counts")
    frame = pd.DataFrame(y, index=obs.index, columns=genes)
    ref = bg.de.wald(res, "condition[T.b]", dispersion="map", data=adata).pval
    for data in (y, frame, frame.iloc[::-1, ::-1]):
        got = bg.de.wald(res, "condition[T.b]", dispersion="map", data=data).pval
        np.testing.assert_array_equal(got, ref)
    # The AnnData is read from the fit's layer, not from `.X` (all zeros here).
    np.testing.assert_array_equal(bg.inputs.data_of_fit(adata, res).values, y)
    with pytest.raises(ValueError, match=r"`layer` \('counts'\) selects an AnnData layer"):
        bg.inputs.data_of_fit(y, res, layer="counts")


def test_unnamed_obs_with_unnamed_counts_does_not_warn(counts, obs):
    # Neither side has names: positions are all there is, nothing to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PositionalPairingWarning)
        bg.fit(counts.to_numpy(), "~ 1 + condition", obs=obs.reset_index(drop=True))
