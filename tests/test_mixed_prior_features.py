"""Features without a group-level variance estimate stay out of the moderation prior.

Genes expressed in one condition only (the fixed effect runs off) and genes with a handful
of reads (NB scale at its Poisson end and donor variance at 0) have a group-level variance
``s_f^2`` that estimates nothing (1e10 times the trend, or the pseudocount's spread). In a
user's layout they put limma's prior df at 0.7-2.6 instead of 9-31 and stretched the
nonparametric prior's grid, which cost the moderated Wald test a sixth of its power at 4 vs
4 donors. See docs/mixed_model.md, "Power against pseudobulk, fourth round".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats

import batchglm as bg
from batchglm.mixed.moderation import variance_prior
from batchglm.mixed.prior_features import prior_features

COEF = "condition[T.stim]"
N_ORDINARY = 110
N_ONOFF = 6
N_SPARSE = 6


def _layout(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """4 vs 4 donors of 30-80 cells; ordinary genes (20 % DE at +-log 2.5), then on/off
    genes (zero in every stimulated cell) and nearly all-zero genes."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(30, 81, size=8)
    gid = np.repeat(np.arange(8), cells)
    stim = gid >= 4
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(gid.size)],
    )
    n = N_ORDINARY + N_ONOFF + N_SPARSE
    log_mean = rng.uniform(-0.5, 1.5, n)
    log_mean[N_ORDINARY + N_ONOFF :] = np.log(rng.uniform(0.001, 0.004, N_SPARSE))
    effect = np.zeros(n)
    n_de = N_ORDINARY // 5
    effect[:n_de] = rng.choice([-1.0, 1.0], n_de) * np.log(2.5)
    u = rng.normal(size=(8, n)) * np.sqrt(rng.uniform(0.05, 0.3, n))
    sf = np.exp(rng.normal(0.0, 0.2, gid.size))
    mu = sf[:, None] * np.exp(log_mean + u[gid] + stim[:, None] * effect)
    size = rng.uniform(3.0, 10.0, n)
    y = rng.negative_binomial(size, size / (size + mu)).astype(np.float64)
    y[np.ix_(stim, np.arange(N_ORDINARY, N_ORDINARY + N_ONOFF))] = 0.0
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(n)])
    return counts, obs, sf, effect != 0


@pytest.fixture(scope="module")
def fits() -> tuple[bg.FitResult, bg.FitResult, np.ndarray]:
    counts, obs, sf, is_de = _layout(3)
    kw = {"size_factors": sf, "random_effects": "donor", "progress": False}
    full = bg.fit(counts, "~ condition", obs=obs, **kw)
    ordinary = bg.fit(counts.iloc[:, :N_ORDINARY], "~ condition", obs=obs, **kw)
    return full, ordinary, is_de


def test_separated_and_doubly_bounded_features_are_left_out(fits) -> None:
    full, _, _ = fits
    prior = variance_prior(full)
    assert prior.used is not None
    onoff = slice(N_ORDINARY, N_ORDINARY + N_ONOFF)
    assert not prior.used[onoff].any()
    # Their s_f^2 is no variance estimate: far above the trend.
    assert np.all(prior.s2[onoff] > 1e4 * np.nanmedian(prior.s2))
    sparse = np.arange(N_ORDINARY + N_ONOFF, N_ORDINARY + N_ONOFF + N_SPARSE)
    status = full.status.to_numpy()[sparse]
    bounded = (full.random.variance[sparse, 0] < 1e-6) & (status == "scale_at_bound")
    assert bounded.any()
    assert not prior.used[sparse[bounded]].any()
    assert prior.used[:N_ORDINARY].mean() > 0.9
    # prior_features is the whole rule (together with a finite trend covariate).
    at_zero = np.isfinite(full.small_sample.donor_resid).all(axis=0)
    np.testing.assert_array_equal(prior_features(full, prior.s2, at_zero), prior.used)


def test_prior_and_p_values_of_ordinary_genes_do_not_see_the_left_out_ones(fits) -> None:
    # Per-gene fits are independent, so the ordinary genes' s_f^2 are the same in both fits;
    # with the left-out features kept out, so are the prior and every moderated p-value.
    full, ordinary, _ = fits
    p_full, p_ord = variance_prior(full), variance_prior(ordinary)
    used = p_ord.used
    assert used is not None and p_full.used is not None
    np.testing.assert_array_equal(p_full.used[:N_ORDINARY], used)
    np.testing.assert_allclose(p_full.s2[:N_ORDINARY], p_ord.s2, rtol=1e-8)
    np.testing.assert_allclose(p_full.df_prior, p_ord.df_prior, rtol=1e-8)
    np.testing.assert_allclose(p_full.s2_prior[:N_ORDINARY], p_ord.s2_prior, rtol=1e-8)
    for method in ("npmle", "limma"):
        de_full = bg.de.wald(full, coef=COEF, moderate=method)
        de_ord = bg.de.wald(ordinary, coef=COEF, moderate=method)
        np.testing.assert_allclose(de_full.pval[:N_ORDINARY], de_ord.pval, rtol=1e-6)


def _natural_cubic_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Natural cubic spline basis by truncated powers (Hastie, Tibshirani and Friedman,
    *Elements of Statistical Learning*, eqs. 5.4-5.5)."""

    def dk(k: int) -> np.ndarray:
        last = knots[-1]
        return (np.maximum(x - knots[k], 0) ** 3 - np.maximum(x - last, 0) ** 3) / (last - knots[k])

    cols = [np.ones_like(x), x] + [dk(k) - dk(knots.size - 2) for k in range(knots.size - 2)]
    return np.column_stack(cols)


def test_prior_df_matches_the_method_of_moments_on_the_kept_genes(fits) -> None:
    # limma's fitFDist written out (scipy's digamma / trigamma, a root finder, a spline basis
    # of our own) on the kept genes alone: trend of e = log s2 - digamma(d/2) + log(d/2) on
    # the mean log expression, excess residual variance = trigamma(d0 / 2).
    full, _, _ = fits
    prior = variance_prior(full)
    d = prior.df
    used = prior.used
    assert used is not None
    e = np.log(prior.s2[used]) - special.digamma(d / 2) + np.log(d / 2)
    x = prior.log_mean[used]
    knots = np.quantile(x, [0.0, 1 / 3, 2 / 3, 1.0])
    basis = _natural_cubic_basis(x, knots)
    resid = e - basis @ np.linalg.lstsq(basis, e, rcond=None)[0]
    excess = (resid**2).sum() / (used.sum() - basis.shape[1]) - special.polygamma(1, d / 2)
    d0 = 2 * optimize.brentq(lambda v: special.polygamma(1, v) - excess, 1e-3, 1e4)
    # The prior itself is now estimated by winsorised moments (mixed/robust_prior.py, tested
    # against Monte Carlo in tests/test_mixed_robust_prior.py); on these clean kept genes it
    # estimates the same d0 as the plain method of moments (measured 15.5 against 18.1).
    np.testing.assert_allclose(prior.df_prior, d0, rtol=0.2)
    # The left-out genes would have swamped it: with them, the spread is many times larger.
    all_ok = np.isfinite(prior.s2) & (prior.s2 > 0)
    e_all = np.log(prior.s2[all_ok]) - np.log(prior.s2_prior[all_ok])
    assert e_all.var() > 5 * resid.var()


def test_calibrated_and_powered_with_on_off_and_sparse_genes(fits) -> None:
    full, _, is_de = fits
    de = bg.de.wald(full, coef=COEF)
    p = de.pval[:N_ORDINARY]
    null = ~is_de[:N_ORDINARY]
    assert stats.kstest(p[null], "uniform").pvalue > 0.01
    assert (p[null] < 0.05).mean() <= 0.1
    # The moderated test finds more DE genes than the per-gene reference.
    p0 = bg.de.wald(full, coef=COEF, moderate=False).pval[:N_ORDINARY]
    de_genes = is_de[:N_ORDINARY]
    assert (p[de_genes] < 0.01).sum() > (p0[de_genes] < 0.01).sum()
