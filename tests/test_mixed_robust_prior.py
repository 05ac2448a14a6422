"""Robust moderation prior of mixed fits: outlier genes are left out (mixed/robust_prior.py)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
import batchglm.mixed.moderation as moderation
from batchglm.mixed.f_prior import fit_f_prior, trend_basis
from batchglm.mixed.robust_prior import (
    prior_outliers,
    variance_outliers,
    winsorised_f_prior,
)


def _scaled_f(rng: np.random.Generator, n: int, df: float, df_prior: float) -> np.ndarray:
    """Variances ``s0^2 chi2_d / d / (chi2_d0 / d0)`` with ``s0^2 = 0.2``."""
    return 0.2 * (rng.chisquare(df, n) / df) / (rng.chisquare(df_prior, n) / df_prior)


def test_variance_outliers_flags_planted_outliers_only() -> None:
    rng = np.random.default_rng(12)
    s2 = _scaled_f(rng, 500, 6.0, 10.0)
    s2[[3, 100, 250]] *= 1e3
    s2[400] *= 1e-5
    high, low = variance_outliers(s2, 6.0, np.ones((s2.size, 1)))
    assert np.flatnonzero(high).tolist() == [3, 100, 250]
    assert np.flatnonzero(low).tolist() == [400]
    # Bonferroni at 0.05, checked with scipy's F tail at the prior of the clean genes: the
    # planted ones are far beyond the cut, the largest clean one is not.
    clean = np.delete(s2, [3, 100, 250, 400])
    s0, d0 = winsorised_f_prior(clean, 6.0, np.ones((clean.size, 1)))
    assert stats.f.sf(s2[[3, 100, 250]].min() / s0[0], 6.0, d0) < 0.05 / 1000
    assert stats.f.sf(clean.max() / s0[0], 6.0, d0) > 0.05 / 1000


def test_variance_outliers_none_on_clean_trended_data() -> None:
    rng = np.random.default_rng(13)
    a = rng.uniform(-1, 3, 2000)
    s2 = _scaled_f(rng, a.size, 6.0, 12.0) * np.exp(0.5 * a)
    used = np.ones(a.size, dtype=bool)
    basis = trend_basis(a, a.size)
    outlier, high = prior_outliers(s2, 6.0, used, basis)
    assert not outlier.any() and not high.any()
    s2[7] *= 300.0
    outlier, high = prior_outliers(s2, 6.0, used, basis)
    assert np.flatnonzero(high).tolist() == [7] and np.flatnonzero(outlier).tolist() == [7]


def test_winsorised_prior_against_monte_carlo_moments() -> None:
    # 60 variances, constant trend: winsorising is shift invariant, so the sample side is
    # the variance and mean of log s2 clipped at its own 5 % and 95 % quantiles.
    rng = np.random.default_rng(14)
    e = np.log(_scaled_f(rng, 60, 6.0, 10.0))
    s0, d0 = winsorised_f_prior(np.exp(e), 6.0, np.ones((60, 1)))
    clipped = np.clip(e, *np.quantile(e, [0.05, 0.95]))
    z = np.log(rng.f(6.0, d0, 4_000_000))
    zc = np.clip(z, *np.quantile(z, [0.05, 0.95]))
    assert zc.var() == pytest.approx(clipped.var(ddof=1), rel=0.01)
    assert np.log(s0) == pytest.approx(clipped.mean() - zc.mean(), abs=2e-3)


def test_winsorised_prior_recovers_truth_and_ignores_outliers() -> None:
    rng = np.random.default_rng(15)
    a = rng.uniform(-1, 3, 20_000)
    s2 = _scaled_f(rng, a.size, 6.0, 8.0) * np.exp(0.5 * a)
    basis = trend_basis(a, a.size)
    s0, d0 = winsorised_f_prior(s2, 6.0, basis)
    assert d0 == pytest.approx(8.0, rel=0.1)
    assert np.median(np.abs(np.log(s0 / (0.2 * np.exp(0.5 * a))))) < 0.05
    s2[:100] *= 1e4  # 0.5 % wild genes
    s0_out, d0_out = winsorised_f_prior(s2, 6.0, basis)
    assert d0_out == pytest.approx(d0, rel=0.1)
    # limma's plain method of moments collapses on the same data.
    assert fit_f_prior(s2, 6.0, a)[1] < 0.5 * d0


def test_errors() -> None:
    with pytest.raises(ValueError, match="`basis` has 3 rows but `s2` has 4 values"):
        variance_outliers(np.ones(4), 4.0, np.ones((3, 1)))
    with pytest.raises(ValueError, match="`basis` has 2 rows but `s2` has 4 values"):
        winsorised_f_prior(np.ones(4), 4.0, np.ones((2, 1)))
    with pytest.raises(ValueError, match="one value per feature, but have shapes"):
        prior_outliers(np.ones(4), 4.0, np.ones(3, dtype=bool), np.ones((3, 1)))


def _mixed_data(seed: int, n_genes: int) -> tuple[np.ndarray, pd.DataFrame]:
    """4 vs 4 donors, 40 cells each, NB counts; the first 10 genes are DE (fold 3)."""
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(8), 40)
    stim = gid >= 4
    u = rng.normal(scale=0.3, size=(8, n_genes))
    effect = np.zeros(n_genes)
    effect[:10] = np.log(3.0)
    mu = np.exp(rng.uniform(0.0, 1.5, n_genes) + u[gid] + stim[:, None] * effect)
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(np.float64)
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(gid.size)],
    )
    return y, obs


def _pvalues(y: np.ndarray, obs: pd.DataFrame, moderate: bool = True) -> pd.Series:
    res = bg.fit(ad.AnnData(y, obs=obs), "~ condition", random_effects="donor")
    # The planted outlier gene is kept in the test (its count-outlier flag, which would
    # make its p NaN, is tested in test_mixed_count_outliers.py): this is about the prior.
    wald = bg.de.wald(res, coef="condition[T.stim]", moderate=moderate, count_outlier_alpha=None)
    return wald.summary().pvalue


def test_one_outlier_gene_does_not_move_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    y, obs = _mixed_data(21, 50)
    bad = np.zeros((y.shape[0], 1))
    bad[:, 0] = np.random.default_rng(22).poisson(3.0, y.shape[0])
    bad[5, 0] = 1e6  # one cell of one donor
    with_bad = np.hstack([y, bad])
    clean = _pvalues(y, obs).to_numpy()
    dirty_all = _pvalues(with_bad, obs)
    dirty = dirty_all.to_numpy()[:-1]
    ratio = np.abs(np.log(dirty / clean))
    assert ratio.max() < np.log(1.1)
    # The outlier gene itself is tested against its own variance (moderate=False).
    own = _pvalues(with_bad, obs, moderate=False).to_numpy()[-1]
    assert dirty_all.to_numpy()[-1] == pytest.approx(own, rel=1e-8)
    # Without the rule (the behaviour before) the same outlier moves the others' p-values.
    none = np.zeros(y.shape[1] + 1, dtype=bool)
    monkeypatch.setattr(moderation, "prior_outliers", lambda *a: (none, none.copy()))
    before = _pvalues(with_bad, obs).to_numpy()[:-1]
    assert np.abs(np.log(before / clean)).max() > np.log(1.5)
