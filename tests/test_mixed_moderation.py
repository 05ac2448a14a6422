"""Empirical-Bayes moderation of the group-level variance of mixed-model tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import batchglm as bg
from batchglm.mixed.f_prior import fit_f_prior, trigamma_inverse
from batchglm.mixed.moderation import moderated_sf, variance_prior
from batchglm.mixed.variance_npmle import npmle_scale_mixture


def test_trigamma_inverse_against_root_finding() -> None:
    x = np.array([1e-3, 0.05, 0.3, 1.0, 5.0, 100.0])
    expect = [optimize.brentq(lambda y, v=v: special.polygamma(1, y) - v, 1e-4, 1e5) for v in x]
    np.testing.assert_allclose(trigamma_inverse(x), expect, rtol=1e-8)


def test_prior_recovers_scaled_inverse_chi_square() -> None:
    # Variances tau^2 with 1 / tau^2 ~ chi2_d0 / (d0 s0^2), estimates s2 ~ tau^2 chi2_d / d.
    rng = np.random.default_rng(3)
    n, d, d0 = 40_000, 6.0, 8.0
    a = rng.uniform(-1, 2, n)
    s0 = 0.2 * np.exp(-0.4 * a)  # a trend on mean expression
    tau2 = d0 * s0 / rng.chisquare(d0, n)
    s2 = tau2 * rng.chisquare(d, n) / d
    est_s0, est_d0 = fit_f_prior(s2, d, a)
    assert est_d0 == pytest.approx(d0, rel=0.12)
    np.testing.assert_allclose(est_s0, s0, rtol=0.06)
    # Without a covariate: the closed form of the method of moments, with d0 from root
    # finding on trigamma(d0/2) = Var(e) - trigamma(d/2) and s0^2 from the mean.
    s2c = 0.3 * d0 / rng.chisquare(d0, n) * rng.chisquare(d, n) / d
    e = np.log(s2c) - special.digamma(d / 2) + np.log(d / 2)
    excess = e.var(ddof=1) - special.polygamma(1, d / 2)
    half = optimize.brentq(lambda y: special.polygamma(1, y) - excess, 1e-3, 1e4)
    ref_s0 = np.exp(e.mean() + special.digamma(half) - np.log(half))
    c_s0, c_d0 = fit_f_prior(s2c, d)
    assert c_d0 == pytest.approx(2 * half, rel=1e-8)
    np.testing.assert_allclose(c_s0, ref_s0, rtol=1e-8)
    assert c_d0 == pytest.approx(d0, rel=0.12)
    assert ref_s0 == pytest.approx(0.3, rel=0.03)
    # Equal variances: no spread beyond sampling, d0 infinite and s0^2 the common variance.
    s0_inf, d0_inf = fit_f_prior(0.3 * rng.chisquare(d, n) / d, d)
    assert np.isinf(d0_inf)
    np.testing.assert_allclose(s0_inf, 0.3, rtol=0.02)


def test_prior_errors() -> None:
    with pytest.raises(ValueError, match=r"`s2` must hold at least 3 positive finite"):
        fit_f_prior(np.array([0.1, 0.0, 0.2]), 4.0)
    with pytest.raises(ValueError, match=r"`df` must be positive, but 0.0 was given"):
        fit_f_prior(np.array([0.1, 0.3, 0.2]), 0.0)


def _donors(
    seed: int, n_null: int, n_de: int, sizes: list[int], effect: float = np.log(2.5)
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cell-level NB counts, donors nested in condition (half each), donor var 0.05-0.3."""
    rng = np.random.default_rng(seed)
    n_donors = len(sizes)
    gid = np.repeat(np.arange(n_donors), sizes)
    stim = gid >= n_donors // 2
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(stim, "stim", "ctrl")}
    )
    n = n_null + n_de
    u = rng.normal(size=(n_donors, n)) * np.sqrt(rng.uniform(0.05, 0.3, n))
    beta = np.r_[np.zeros(n_null), np.full(n_de, effect)]
    mu = np.exp(rng.uniform(-0.5, 1.5, n) + u[gid] + stim[:, None] * beta)
    size = rng.uniform(2.0, 10.0, n)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


def test_moderated_wald_calibrated_and_more_powerful() -> None:
    n_null, n_de = 400, 100
    y, obs = _donors(31, n_null, n_de, [30] * 8)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    prior = variance_prior(res)
    assert 2 < prior.df_prior < 60
    mod = bg.de.wald(res, coef="condition[T.stim]").summary()
    plain = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()
    p = mod["pvalue"].to_numpy()
    null = p[:n_null][np.isfinite(p[:n_null])]
    assert 0.03 <= (null < 0.05).mean() <= 0.07
    assert stats.kstest(null, "uniform").pvalue > 0.01
    # Power: strictly more DE genes found, at p < 0.05 and at q < 0.05.
    p0 = plain["pvalue"].to_numpy()
    assert (p[n_null:] < 0.05).sum() > (p0[n_null:] < 0.05).sum()
    q, q0 = mod["padj"].to_numpy(), plain["padj"].to_numpy()
    assert (q[n_null:] < 0.05).sum() > (q0[n_null:] < 0.05).sum()
    assert (q[:n_null] < 0.05).sum() <= 0.1 * max((q < 0.05).sum(), 1)
    # The moderated statistic rescales the ML Wald variance se^2 by the ML-to-REML factor
    # G / d (G = 8, d = 6) and by s~^2 / s2, s2 = tr(X_b^T X_b V_b) / p_b * G / d from the
    # ML covariance V_b of (intercept, condition) (X_b^T X_b = [[8, 4], [4, 4]]) and
    # s~^2 = (d0 s0^2 + d s2) / (d0 + d); the reference is t(d + d0).
    inner = (res.status == "converged").to_numpy()
    v_b = np.asarray(res.covariance())[:, :2, :2]
    s2 = np.einsum("ij,fji->f", [[8.0, 4.0], [4.0, 4.0]], v_b) / 2 * 8 / 6
    np.testing.assert_allclose(prior.s2[inner], s2[inner], rtol=1e-10)
    se = res.se_loc["condition[T.stim]"].to_numpy()
    coef = res.coef_loc["condition[T.stim]"].to_numpy()
    # limma's prior (`moderate="limma"`; the default before the nonparametric prior).
    p_limma = bg.de.wald(res, coef="condition[T.stim]", moderate="limma").pval
    post = (prior.df_prior * prior.s2_prior + 6 * s2) / (prior.df_prior + 6)
    t = np.abs(coef) / (se * np.sqrt(8 / 6 * post / s2))
    expect = 2 * stats.t.sf(t, 6 + prior.df_prior)
    np.testing.assert_allclose(p_limma[inner], expect[inner], rtol=1e-6)
    # The default: the NPMLE prior of r = s2 / s0^2 and the posterior mixture of normal
    # tails, 2 sum_k pi_k Phi(-|coef| / (se sqrt(8/6 rho_k / r))) (posterior from scipy).
    assert prior.used is not None
    r = prior.s2 / prior.s2_prior
    mix = npmle_scale_mixture(r[prior.used], 6.0)
    like = stats.chi2.pdf(6 * r[inner, None] / mix.grid, 6) / mix.grid * mix.weights
    pik = like / like.sum(axis=1, keepdims=True)
    z = np.abs(coef[inner, None]) / (se[inner, None] * np.sqrt(8 / 6 * mix.grid / r[inner, None]))
    np.testing.assert_allclose(p[inner], (pik * 2 * stats.norm.sf(z)).sum(axis=1), rtol=1e-6)


def test_moderated_wald_calibrated_where_variances_are_at_zero() -> None:
    # Unequal donors: one large donor per condition; many features have variance at 0 and
    # are tested at the level of the donors with the moderated variance.
    y, obs = _donors(32, 400, 0, [100, 8, 8, 8] * 2)
    res = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    at_zero = (res.status == "random_var_at_bound").to_numpy()
    assert at_zero.sum() >= 50
    p = bg.de.wald(res, coef="condition[T.stim]").summary()["pvalue"].to_numpy()
    assert (p[at_zero] < 0.05).mean() <= 0.08
    ok = np.isfinite(p)
    assert 0.03 <= (p[ok] < 0.05).mean() <= 0.07


def test_moderation_errors() -> None:
    y, obs = _donors(33, 10, 0, [10] * 4)
    plain = bg.fit(y, "~ condition", obs=obs)
    with pytest.raises(ValueError, match=r"`moderate=True` needs a fit with `random_effects`"):
        bg.de.wald(plain, coef="condition[T.stim]", moderate=True)
    with pytest.raises(ValueError, match=r"`moderate='limma'` needs a fit with `random_eff"):
        bg.de.wald(plain, coef="condition[T.stim]", moderate="limma")
    with pytest.raises(ValueError, match=r"`moderate` must be True, False or one of"):
        bg.de.wald(plain, coef="condition[T.stim]", moderate="robust")
    x = np.random.default_rng(0).normal(size=y.shape[0])
    mixed = bg.fit(y, "~ 0 + x", obs=obs.assign(x=x), random_effects="donor")
    with pytest.raises(ValueError, match=r"column constant within the groups"):
        variance_prior(mixed)
    with pytest.raises(ValueError, match=r"column constant within the groups"):
        variance_prior(replace(mixed, small_sample=None))
    nested = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    with pytest.raises(ValueError, match=r"moderation method must be one of \('npmle', 'limma'\)"):
        moderated_sf(nested, np.array([[0.0, 1.0]]), 1, method="robust")
