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
    de = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()
    z = res.coef_loc["condition[T.stim]"] / res.se_loc["condition[T.stim]"]
    # 8 donors, group-level rank 2: t with 6 df on the ML-to-REML rescaled statistic.
    expect = 2 * stats.t.sf(np.abs(z) * np.sqrt(6 / 8), 6)
    np.testing.assert_allclose(de["pvalue"], expect, rtol=1e-8)


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


def _unequal_donors(seed: int, n_genes: int, sd: float) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = [250, 15, 15, 15] * 2
    donor = np.repeat([f"d{i}" for i in range(8)], sizes)
    obs = pd.DataFrame({"donor": donor, "condition": np.repeat(["ctl"] * 4 + ["stim"] * 4, sizes)})
    u = rng.normal(0, sd, (8, n_genes))
    mu = np.exp(0.8 + u[pd.factorize(donor)[0]])
    return rng.negative_binomial(4, 4 / (4 + mu)).astype(float), obs


def test_variance_at_zero_with_unequal_groups_is_tested_at_group_level() -> None:
    import statsmodels.api as sm

    y, obs = _unequal_donors(5, 30, 0.3)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    at_zero = np.flatnonzero((res.status == "random_var_at_bound").to_numpy())
    assert at_zero.size >= 2
    de = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()
    lrt = bg.de.lrt(
        full=res, reduced=bg.fit(y, "~ 1", obs=obs, random_effects="donor"), moderate=False
    )
    # Reference: ordinary least squares (statsmodels) of each donor's log level on the
    # condition, with the residual variance floored at the mean delta-method variance.
    mu = res.fitted().to_numpy()
    r = np.exp(res.coef_scale.to_numpy()[:, 0])
    donors = obs.donor.to_numpy()
    levels = np.unique(donors)
    stim = np.array([obs.condition[donors == d].iloc[0] == "stim" for d in levels], float)
    xg = sm.add_constant(stim)
    for f in at_zero:
        ys = np.array([y[donors == d, f].sum() for d in levels])
        ms = np.array([mu[donors == d, f].sum() for d in levels])
        vs = np.array(
            [(mu[donors == d, f] * (1 + mu[donors == d, f] / r[f])).sum() for d in levels]
        )
        coef = res.coef_loc.to_numpy()[f]
        z = np.log((ys + 0.5) / (ms + 0.5)) + coef[0] + coef[1] * stim
        ols = sm.OLS(z, xg).fit()
        assert res.small_sample is not None
        prior = res.random_var.to_numpy()[:, 0].mean() * 8 / 6
        assert res.small_sample.prior_var == pytest.approx(prior, rel=1e-12)
        s2 = max(ols.scale, prior + (vs / (ms + 0.5) ** 2).mean())
        t = ols.params[1] / np.sqrt(s2 * ols.normalized_cov_params[1, 1])
        expect = 2 * stats.t.sf(abs(t), 6)
        assert de["pvalue"].iloc[f] == pytest.approx(expect, rel=1e-8)
        assert lrt.summary()["pvalue"].iloc[f] == pytest.approx(expect, rel=1e-8)
    # Interior features keep the model-based t reference.
    inner = np.setdiff1d(np.flatnonzero(res.converged.to_numpy()), at_zero)
    z = res.coef_loc["condition[T.stim]"] / res.se_loc["condition[T.stim]"]
    expect = 2 * stats.t.sf(np.abs(z.to_numpy()[inner]) * np.sqrt(6 / 8), 6)
    np.testing.assert_allclose(de["pvalue"].to_numpy()[inner], expect, rtol=1e-8)


def test_unequal_groups_calibrated_where_variances_are_at_zero() -> None:
    y, obs = _unequal_donors(6, 240, 0.35)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    p = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()["pvalue"].to_numpy()
    at_zero = (res.status == "random_var_at_bound").to_numpy()
    assert at_zero.sum() >= 20
    # The cell-level test rejected 9-11 % of these null features; now near 0.05 overall.
    assert (p[at_zero] < 0.05).mean() <= 0.08
    assert 0.02 <= (p[np.isfinite(p)] < 0.05).mean() <= 0.08
