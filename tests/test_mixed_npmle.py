"""Nonparametric (NPMLE) prior of group-level variances and its partially Bayes p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from batchglm.mixed.f_prior import fit_f_prior
from batchglm.mixed.variance_npmle import (
    npmle_scale_mixture,
    posterior_weights,
    scaled_chi2_logpdf,
)

D = 6.0


def _mixture_loglik(ratio: np.ndarray, support: np.ndarray, weights: np.ndarray) -> float:
    """Marginal log-likelihood of a discrete prior, from scipy's chi-squared density."""
    dens = stats.chi2.pdf(D * ratio[:, None] / support[None, :], D) * D / support[None, :]
    return float(np.log(dens @ weights).sum())


def test_scaled_chi2_logpdf_against_scipy() -> None:
    r = np.array([0.01, 0.3, 1.0, 4.0])
    rho = np.array([0.1, 1.0, 7.0])
    expect = stats.chi2.logpdf(D * r[:, None] / rho[None, :], D) + np.log(D / rho)[None, :]
    np.testing.assert_allclose(scaled_chi2_logpdf(r, D, rho), expect, rtol=1e-10, atol=1e-12)


def test_npmle_is_the_maximum_and_recovers_a_two_point_prior() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    rho = np.where(rng.random(n) < 0.6, 0.3, 3.0)
    ratio = rho * rng.chisquare(D, n) / D
    mix = npmle_scale_mixture(ratio, D)
    assert mix.weights.sum() == pytest.approx(1.0, abs=1e-12)
    # Kiefer-Wolfowitz: at the NPMLE no point mass can raise the likelihood, i.e.
    # mean_f p(r_f | rho) / p(r_f) <= 1 for every rho, with equality on the support
    # (checked with scipy's density, on the grid and between its points).
    dens = stats.chi2.pdf(D * ratio[:, None] / mix.grid[None, :], D) * D / mix.grid[None, :]
    marg = dens @ mix.weights
    between = np.sqrt(mix.grid[1:] * mix.grid[:-1])
    dens_b = stats.chi2.pdf(D * ratio[:, None] / between[None, :], D) * D / between[None, :]
    assert (dens / marg[:, None]).mean(axis=0).max() <= 1 + 1e-3
    assert (dens_b / marg[:, None]).mean(axis=0).max() <= 1 + 5e-3
    on_support = mix.weights > 1e-2
    np.testing.assert_allclose((dens / marg[:, None]).mean(axis=0)[on_support], 1.0, atol=1e-2)
    # At least the likelihood of the true prior, and close to it in mass and mean.
    truth = _mixture_loglik(ratio, np.array([0.3, 3.0]), np.array([0.6, 0.4]))
    assert mix.loglik >= truth
    assert mix.loglik == pytest.approx(_mixture_loglik(ratio, mix.grid, mix.weights), abs=1e-6)
    low = mix.weights[mix.grid < 1.0].sum()
    assert low == pytest.approx(0.6, abs=0.06)
    assert mix.weights @ mix.grid == pytest.approx(0.6 * 0.3 + 0.4 * 3.0, rel=0.1)


def _partially_bayes_p(
    est: np.ndarray, kappa: np.ndarray, s2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P-values of est ~ N(0, kappa tau^2) given s2 ~ tau^2 chi2_d / d: the posterior of
    tau^2 under the NPMLE prior (weights from scipy) mixed over normal tails; and limma's
    moderated t (scaled F prior, t(d + d0))."""
    mix = npmle_scale_mixture(s2, D)
    like = stats.chi2.pdf(D * s2[:, None] / mix.grid[None, :], D) / mix.grid[None, :]
    post = like * mix.weights
    post /= post.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(posterior_weights(mix, s2, D), post, rtol=1e-8, atol=1e-12)
    tails = 2 * stats.norm.sf(np.abs(est)[:, None] / np.sqrt(kappa[:, None] * mix.grid))
    p_np = (post * tails).sum(axis=1)
    s0, d0 = fit_f_prior(s2, D)
    s_post = (d0 * s0 + D * s2) / (d0 + D)
    p_limma = 2 * stats.t.sf(np.abs(est) / np.sqrt(kappa * s_post), D + d0)
    return p_np, p_limma


def _bh_hits(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    ok = p[order] <= 0.05 * np.arange(1, p.size + 1) / p.size
    hits = np.zeros(p.size, dtype=bool)
    if ok.any():
        hits[order[: np.flatnonzero(ok).max() + 1]] = True
    return hits


def test_partially_bayes_pvalues_uniform_under_a_non_conjugate_prior() -> None:
    # Variances uniform on [0.01, 0.25] (not inverse chi-squared), 6 df: the NPMLE p-values
    # of null features are uniform, and with 20 % effects they find at least as many as
    # limma's moderated t at BH 0.05, with the false discovery proportion below 0.05 + noise.
    rng = np.random.default_rng(11)
    n, n_alt = 6000, 1200
    tau2 = rng.uniform(0.01, 0.25, n)
    kappa = rng.uniform(0.3, 0.6, n)
    s2 = tau2 * rng.chisquare(D, n) / D
    effect = np.r_[np.zeros(n - n_alt), rng.choice([-1.0, 1.0], n_alt) * 0.6]
    est = effect + rng.normal(size=n) * np.sqrt(kappa * tau2)
    p_np, p_limma = _partially_bayes_p(est, kappa, s2)
    null = p_np[: n - n_alt]
    assert 0.04 <= (null < 0.05).mean() <= 0.06
    assert stats.kstest(null, "uniform").pvalue > 0.01
    hits_np, hits_limma = _bh_hits(p_np), _bh_hits(p_limma)
    assert hits_np[n - n_alt :].sum() >= hits_limma[n - n_alt :].sum()
    assert hits_np[: n - n_alt].sum() <= 0.07 * max(hits_np.sum(), 1)


def test_npmle_errors() -> None:
    with pytest.raises(ValueError, match=r"`ratio` must hold positive finite values, but 3"):
        npmle_scale_mixture(np.array([0.5, -1.0, 2.0]), D)
    with pytest.raises(ValueError, match=r"`ratio` must hold positive finite values, but 0"):
        npmle_scale_mixture(np.array([]), D)
