"""A fit that estimated its scale without residual degrees of freedom is refused for tests."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.cli import main
from batchglm.de.degrees_of_freedom import check_residual_df

_MSG = r"needs residual degrees of freedom .* rank 2 with 2 observations \(0 residual df"


@pytest.fixture(scope="module")
def one_per_group():
    """One sample per condition (2 x 25 NB counts), as in a study without replicates."""
    rng = np.random.default_rng(8)
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + 40.0), size=(2, 25)).astype(float)
    obs = pd.DataFrame({"condition": ["a", "b"]}, index=["s0", "s1"])
    return y, obs, bg.fit(y, "~ 1 + condition", obs=obs)


def test_residual_df_counts_observations_minus_rank():
    x = np.column_stack([np.ones(6), [0, 0, 1, 1, 2, 2], [0, 0, 2, 2, 4, 4]])  # rank 2
    y = np.random.default_rng(0).poisson(10.0, size=(6, 3)).astype(float)
    assert check_residual_df(bg.fit(y, x[:, :2]), "t") == 4
    assert check_residual_df(bg.fit(y, x[:, :2], family="poisson"), "t") == 4
    # A scale model with 3 levels on 6 observations minus a rank-4 location design: 2 < 3.
    loc = np.column_stack([np.ones(6), np.eye(6)[:, 1:4]])
    scale = np.column_stack([np.ones(6), np.repeat([0, 1, 0], 2), np.repeat([0, 0, 1], 2)])
    with pytest.raises(
        ValueError,
        match=r"rank 4 with 6 observations \(2 residual df, 3 "
        r"needed for the scale model\)",
    ):
        check_residual_df(bg.fit(y, loc, scale), "bg.de.wald")


@pytest.mark.parametrize(
    "call",
    [
        lambda y, obs, res: bg.de.wald(res, coef="condition[T.b]"),
        lambda y, obs, res: bg.de.wald(res, coef="condition[T.b]", dispersion="map", data=y),
        lambda y, obs, res: bg.de.wald(res, coef="condition[T.b]", dispersion="ql", data=y),
        lambda y, obs, res: bg.de.ql_f(res, coef="condition[T.b]", data=y),
        lambda y, obs, res: bg.de.lrt(y, full_loc="~ 1 + condition", reduced_loc="~ 1", obs=obs),
        lambda y, obs, res: bg.de.lrt(full=res, reduced=bg.fit(y, "~ 1", obs=obs)),
        lambda y, obs, res: bg.de.lrt(
            y, full_loc="~ 1 + condition", reduced_loc="~ 1", obs=obs, dispersion="map"
        ),
    ],
)
def test_every_test_refuses_zero_residual_df(one_per_group, call):
    y, obs, res = one_per_group
    # The fit itself runs and labels every feature: the ML estimates are the two counts.
    assert (res.status == "scale_at_bound").all()
    with pytest.raises(ValueError, match=_MSG):
        call(y, obs, res)


def test_wald_names_itself(one_per_group):
    _, _, res = one_per_group
    with pytest.raises(ValueError, match=r"^`bg.de.wald` needs residual degrees of freedom"):
        bg.de.wald(res, coef="condition[T.b]")


def test_poisson_and_fixed_scale_stay_testable(one_per_group):
    y, obs, _ = one_per_group
    pois = bg.fit(y, "~ 1 + condition", obs=obs, family="poisson")
    de = bg.de.wald(pois, coef="condition[T.b]")
    # Poisson Wald test of two counts: z = log(y1 / y0) / sqrt(1 / y0 + 1 / y1).
    ok = (y > 0).all(axis=0)
    z = np.log(y[1, ok] / y[0, ok]) / np.sqrt(1 / y[0, ok] + 1 / y[1, ok])
    np.testing.assert_allclose(de.summary(sort_by=None)["stat"].to_numpy()[ok], z, rtol=1e-5)
    fixed = bg.fit(y, "~ 1 + condition", obs=obs, fixed_scale=np.full(25, np.log(5.0)))
    de_fixed = bg.de.wald(fixed, coef="condition[T.b]")
    assert np.isfinite(de_fixed.pval[ok]).all()
    # Known NB size r = 5: var(log y) ~ 1 / mu + 1 / r per sample.
    z_nb = np.log(y[1, ok] / y[0, ok]) / np.sqrt(1 / y[0, ok] + 1 / y[1, ok] + 2 / 5.0)
    np.testing.assert_allclose(
        de_fixed.summary(sort_by=None)["stat"].to_numpy()[ok], z_nb, rtol=1e-5
    )


def test_cli_refuses_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(3)
    counts = pd.DataFrame(
        rng.poisson(30.0, size=(2, 6)), index=["s0", "s1"], columns=[f"g{j}" for j in range(6)]
    )
    counts.to_csv(tmp_path / "counts.csv")
    pd.DataFrame({"condition": ["a", "b"]}, index=["s0", "s1"]).to_csv(tmp_path / "obs.csv")
    code = main(
        [
            "test",
            str(tmp_path / "counts.csv"),
            "--obs",
            str(tmp_path / "obs.csv"),
            "--design-loc",
            "~ 1 + condition",
            "--coef",
            "condition[T.b]",
            "--out",
            str(tmp_path / "de.csv"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("batchglm: error: `bg.de.wald` needs residual degrees of freedom")
    assert not (tmp_path / "de.csv").exists()


def test_mle_tests_with_few_residual_df_warn_and_point_to_shrinkage():
    rng = np.random.default_rng(21)
    n = 8
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n // 2)])
    y = rng.negative_binomial(5, 5 / (5 + 20.0), size=(n, 10)).astype(float)
    res = bg.fit(y, x)
    with pytest.warns(
        bg.de.SmallSampleWarning,
        match=r"bg.de.wald with dispersion='mle' .* 6 residual df "
        r".*dispersion='map' \(DESeq2\) or 'ql'",
    ):
        bg.de.wald(res, coef="p1")
    with pytest.warns(bg.de.SmallSampleWarning, match=r"bg.de.lrt with dispersion='mle'"):
        bg.de.lrt(y, x, x[:, :1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bg.de.wald(res, coef="p1", dispersion="map")  # shrunken: no warning
        bg.de.wald(bg.fit(y, x, family="poisson"), coef="p1")  # no scale: no warning
        big = rng.negative_binomial(5, 5 / (5 + 20.0), size=(40, 10)).astype(float)
        xb = np.column_stack([np.ones(40), np.repeat([0.0, 1.0], 20)])
        bg.de.wald(bg.fit(big, xb), coef="p1")  # 38 residual df: no warning
