"""Tests of mixed fits: calibration with few donors, and the pseudoreplication warning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg


def _cells(
    seed: int, n_genes: int, cells: int, n_donors: int = 8, effect: float = 0.0
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cell-level NB counts, donors nested in condition, donor variance 0.05-0.3."""
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(n_donors), cells)
    stim = gid >= n_donors // 2
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(gid.size)],
    )
    var = rng.uniform(0.05, 0.3, n_genes)
    u = rng.normal(size=(n_donors, n_genes)) * np.sqrt(var)
    mu = np.exp(rng.uniform(-0.5, 1.5, n_genes) + u[gid] + effect * stim[:, None])
    size = rng.uniform(2.0, 10.0, n_genes)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


def test_wald_and_lrt_calibrated_with_four_vs_four_donors() -> None:
    y, obs = _cells(21, n_genes=300, cells=40)
    full = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    reduced = bg.fit(y, "~ 1", obs=obs, random_effects="donor")
    assert full.converged.all() and reduced.converged.all()
    # Between-within df: 8 donors, group-level design of rank 2.
    assert full.small_sample is not None
    np.testing.assert_array_equal(full.small_sample.df, [6.0, 6.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pseudoreplication warning for a mixed fit
        wald = bg.de.wald(full, coef="condition[T.stim]").summary()["pvalue"]
        lrt = bg.de.lrt(full=full, reduced=reduced).summary()["pvalue"]
    for p in (wald, lrt):
        assert p.notna().all()
        assert 0.03 <= (p < 0.05).mean() <= 0.07
        assert stats.kstest(p, "uniform").pvalue > 0.01
    # The same fits with the normal / chi-squared reference are anti-conservative: the
    # small-sample reference is what calibrates them.
    se = full.se_loc["condition[T.stim]"]
    z = full.coef_loc["condition[T.stim]"] / se
    assert (2 * stats.norm.sf(np.abs(z)) < 0.05).mean() > 0.08
    chi2 = stats.chi2.sf(2 * (full.loglik - reduced.loglik), 1)
    assert (chi2 < 0.05).mean() >= 0.075


def test_wald_small_sample_reference_is_t_with_between_df() -> None:
    y, obs = _cells(22, n_genes=20, cells=20, effect=0.5)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    de = bg.de.wald(res, coef="condition[T.stim]").summary()
    z = res.coef_loc["condition[T.stim]"] / res.se_loc["condition[T.stim]"]
    # 8 donors, group-level rank 2: t with 6 df on the ML-to-REML rescaled statistic.
    expect = 2 * stats.t.sf(np.abs(z) * np.sqrt(6 / 8), 6)
    np.testing.assert_allclose(de.pval, expect, rtol=1e-8)


def test_wald_warns_about_pseudoreplication() -> None:
    y, obs = _cells(23, n_genes=10, cells=30)
    fixed = bg.fit(y, "~ condition + donor", obs=obs, constraints_loc={"donor": "condition"})
    with pytest.warns(
        UserWarning,
        match=r"`condition\[T.stim\]` is constant within the "
        r"levels of 'donor'.*random_effects='donor'.*bg.pseudobulk",
    ):
        bg.de.wald(fixed, coef="condition[T.stim]")
    with pytest.warns(
        UserWarning, match=r"`condition: stim vs ctrl` is constant.*'donor'.*pseudoreplication"
    ):
        bg.de.wald(fixed, contrast=("condition", "stim", "ctrl"))
    reduced = bg.fit(y, "~ donor", obs=obs, constraints_loc={"donor": "condition"})
    with pytest.warns(
        UserWarning,
        match=r"`condition\[T.stim\]` is constant within the "
        r"levels of 'donor'",
    ):
        bg.de.lrt(full=fixed, reduced=reduced)
    # No warning where each observation is its own donor (pseudobulk) or the factor is
    # the tested one, or without a nested fixed factor.
    pb = pd.DataFrame(y).groupby(obs.donor.to_numpy()).sum()
    pb_obs = obs.groupby("donor").first()
    plain = bg.fit(y, "~ condition", obs=obs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", bg.de.SmallSampleWarning)  # 6 pseudobulk samples
        bg.de.wald(bg.fit(pb.to_numpy(), "~ condition", obs=pb_obs), coef="condition[T.stim]")
        bg.de.wald(plain, coef="condition[T.stim]")
        bg.de.wald(fixed, coef="donor[d1]")


def test_group_level_test_warns_about_variances_at_zero():
    rng = np.random.default_rng(2)
    sizes = [300, 20, 20, 20] * 2
    donor = np.repeat([f"d{i}" for i in range(8)], sizes)
    obs = pd.DataFrame({"donor": donor, "condition": np.repeat(["ctl"] * 4 + ["stim"] * 4, sizes)})
    u = rng.normal(0, 0.4, (8, 40))
    mu = np.exp(1.0 + u[pd.factorize(donor)[0]])
    y = rng.negative_binomial(5, 5 / (5 + mu)).astype(float)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    n_zero = int((res.status == "random_var_at_bound").sum())
    assert n_zero > 0
    with pytest.warns(
        UserWarning,
        match=rf"{n_zero} feature\(s\) .* random-intercept variance "
        r"estimated at 0",
    ):
        bg.de.wald(res, coef="condition[T.stim]")
