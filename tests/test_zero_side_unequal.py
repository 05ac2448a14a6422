"""The zero-side floor with very unequal null means within a side, and large totals.

Covariates in the design make the reduced (null) fit's means of the zero side very unequal
(a user's on/off gene: 16 to 2839 over five all-zero samples). The floor used to replace
each side's sum of gamma intensities by one moment-matched gamma, whose left tail is far
too heavy there: it overstated the probability of "no read on the zero side" by up to 1e5
and capped totals at 2000. References here are independent of the library: the exact
convolution of per-sample NB probabilities (scipy.stats.nbinom), scipy's beta-binomial
and a Monte Carlo of the NB null. Data are simulated here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
import batchglm.de.zero_side as zs
from batchglm.de.zero_side import EXACT_TOTAL_MAX, zero_side_floor
from nb_reference import no_read_probability


def _half_floor(total: int, mu: np.ndarray, alpha: np.ndarray, zero: np.ndarray) -> float:
    mu_full = np.where(zero, 1e-12, mu)[:, None]
    return float(zero_side_floor(np.array([total]), mu_full, mu[:, None], alpha[:, None])[0]) / 2


def _unequal_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_zero, n_other = int(rng.integers(2, 7)), int(rng.integers(3, 9))
    n = n_zero + n_other
    # Means spread over two orders of magnitude within each side, per-sample dispersions.
    mu = np.exp(rng.uniform(np.log(0.5), np.log(3.0)) + rng.normal(0.0, 1.5, n))
    alpha = rng.uniform(0.3, 3.0) * np.exp(rng.normal(0.0, 0.3, n))
    return mu, alpha, np.arange(n) < n_zero


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_exact_against_the_convolution_with_very_unequal_means(seed):
    mu, alpha, zero = _unequal_case(seed)
    checked = 0
    for total in (1, 3, 12, 60, EXACT_TOTAL_MAX):
        exact = no_read_probability(total, mu, alpha, zero)
        if 1e-250 < exact < 0.5:  # below 0.5: 2 P is not clipped at 1
            got = _half_floor(total, mu, alpha, zero)
            np.testing.assert_allclose(got, exact, rtol=1e-8)
            checked += 1
    assert checked >= 3


def test_saddlepoint_against_the_convolution_for_large_totals():
    ratios, heavy = [], []
    for seed in range(7, 13):
        mu, alpha, zero = _unequal_case(seed)
        mu = mu * 200.0  # hundreds of reads per sample
        for total in (EXACT_TOTAL_MAX + 1, int(mu.sum() / 2), 1500):
            for a, out in ((np.minimum(alpha, 1.0), ratios), (alpha, heavy)):
                exact = no_read_probability(total, mu, a, zero)
                if 1e-250 < exact < 0.5:
                    out.append(_half_floor(total, mu, a, zero) / exact)
    # Measured over 150 random layouts (docs/validation.md): 0.985-1.014 for dispersions
    # up to 1, 0.95-1.05 up to 2 and 0.78-1.16 up to 6 (NB shapes below 0.5).
    assert len(ratios) >= 10
    assert 0.98 < min(ratios) and max(ratios) < 1.02, ratios
    assert 0.75 < min(heavy) and max(heavy) < 1.25, heavy


def test_many_observations_take_the_saddlepoint_and_agree_with_the_recursion(monkeypatch):
    # Single-cell sized: 3000 cells with small means, 12 features. The recursion would cost
    # n_obs * T per feature; past EXACT_WORK_MAX the saddlepoint is used. Both against each
    # other (the recursion forced by raising the budget) and against the convolution.
    rng = np.random.default_rng(33)
    n, f = 3000, 12
    mu = np.exp(rng.normal(-2.0, 1.0, (n, f)))
    zero = np.zeros((n, f), dtype=bool)
    zero[: n // 4] = True
    alpha = np.full((n, f), 0.5)
    total = np.round(mu[~zero[:, 0]].sum(0) * rng.uniform(0.8, 1.2, f))
    assert np.all(n * (total + 1) > zs.EXACT_WORK_MAX)
    mu_full = np.where(zero, 1e-12, mu)
    saddle = zero_side_floor(total, mu_full, mu, alpha)
    monkeypatch.setattr(zs, "EXACT_WORK_MAX", 1 << 40)
    exact = zero_side_floor(total, mu_full, mu, alpha)
    assert np.all((exact > 1e-250) & (exact < 1.0))
    np.testing.assert_allclose(saddle, exact, rtol=0.02)
    np.testing.assert_allclose(
        exact[0] / 2,
        no_read_probability(int(total[0]), mu[:, 0], alpha[:, 0], zero[:, 0]),
        rtol=1e-5,
    )


def test_the_on_off_regime_of_the_report():
    # Five all-zero samples whose null means a covariate bends to 16-2800, ten others with
    # hundreds to thousands, one NB dispersion 1.5 and 10^4 reads (the old closed form: a
    # floor of 0.012 where the exact value is about 1e-7).
    mu = np.array([130.0, 2800.0, 16.0, 150.0, 30.0])
    mu = np.concatenate([mu, [1600, 4700, 260, 1800, 140, 3000, 760, 1750, 370, 2400.0]])
    zero = np.arange(15) < 5
    alpha = np.full(15, 1.5)
    total = 4000
    exact = no_read_probability(total, mu, alpha, zero)
    assert exact < 1e-6
    np.testing.assert_allclose(_half_floor(total, mu, alpha, zero), exact, rtol=0.02)
    # The moment-matched gamma of the zero side: k = (sum mu)^2 / (alpha sum mu^2) = 0.82
    # instead of the 5 / alpha = 3.3 that governs a sum of gammas near zero; its zero
    # probability (1 + theta)^-k is 4e4 times the exact prod (1 + alpha mu)^(-1 / alpha).
    k = mu[zero].sum() ** 2 / (1.5 * (mu[zero] ** 2).sum())
    theta = 1.5 * (mu[zero] ** 2).sum() / mu[zero].sum()
    exact_zero = np.exp(-np.log1p(1.5 * mu[zero]).sum() / 1.5)
    assert (1 + theta) ** -k > 1e4 * exact_zero


def test_monte_carlo_of_the_nb_null_with_unequal_means():
    rng = np.random.default_rng(21)
    mu = np.array([0.05, 0.4, 2.0, 0.1, 0.6, 3.0])
    zero = np.arange(6) < 3
    alpha = np.full(6, 2.0)
    r = 1.0 / alpha
    y = rng.negative_binomial(r, r / (r + mu), size=(300_000, 6))
    total = y.sum(axis=1)
    none = y[:, zero].sum(axis=1) == 0
    for t in (3, 8, 20):
        at = total == t
        p_mc = none[at].mean()
        se = np.sqrt(p_mc * (1 - p_mc) / at.sum())
        assert abs(_half_floor(t, mu, alpha, zero) - p_mc) < 4 * se + 0.02 * p_mc, (t, p_mc)


def test_equal_means_large_totals_are_the_beta_binomial():
    zero = np.arange(9) < 4
    mu = np.full(9, 300.0)
    for alpha, total in [(0.5, 300), (1.5, 2700), (3.0, 30000)]:
        got = _half_floor(total, mu, np.full(9, alpha), zero)
        ref = stats.betabinom.pmf(0, total, 4 / alpha, 5 / alpha)
        np.testing.assert_allclose(got, ref, rtol=0.01)


def _covariate_table() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 15
    cond = np.repeat(["ctrl", "A", "B"], 5)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(cond, categories=["ctrl", "A", "B"]),
            "batch": ["x"] * 4 + ["y", "x", "x"] + ["y"] * 8,
            "RIN": rng.uniform(5.0, 9.5, n).round(1),
            "age": rng.integers(25, 75, n).astype(float),
        },
        index=[f"p{i}" for i in range(n)],
    )
    sf = np.exp(rng.normal(0.0, 0.3, n))
    base = np.exp(rng.uniform(np.log(5), np.log(3000), 250))
    disp = 0.05 + 1.0 / base
    background = rng.negative_binomial(1 / disp, 1 / (1 + disp * sf[:, None] * base))
    # 20 on/off genes: A all zero; ctrl and B NB with mean 300-1500, dispersion 1/3.
    mean = np.exp(rng.uniform(np.log(300), np.log(1500), 20))
    on_off = rng.negative_binomial(3, 3 / (3 + sf[:, None] * mean))
    on_off[cond == "A"] = 0
    # 300 null genes with a handful of reads (mean 0.1-1.5), the same in every group.
    low_mean = np.exp(rng.uniform(np.log(0.1), np.log(1.5), 300))
    low_disp = rng.uniform(0.5, 1.5, 300)
    low = rng.negative_binomial(1 / low_disp, 1 / (1 + low_disp * sf[:, None] * low_mean))
    y = np.hstack([background, on_off, low]).astype(float)
    is_on_off = np.r_[np.zeros(250, bool), np.ones(20, bool), np.zeros(300, bool)]
    is_low = np.r_[np.zeros(270, bool), np.ones(300, bool)]
    return pd.DataFrame(y, index=obs.index), obs, is_on_off, is_low


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_on_off_genes_with_covariates_are_called_and_few_reads_are_not():
    counts, obs, is_on_off, is_low = _covariate_table()
    counts.columns = [f"g{j}" for j in range(counts.shape[1])]
    y = counts.to_numpy()
    design = "~ batch + RIN + age + condition"
    cond = obs["condition"].to_numpy()
    for level, ref in [("A", "ctrl"), ("B", "A")]:
        de = bg.de.test(counts, design, obs=obs, contrast=("condition", level, ref))
        p = de.summary()["pvalue"].to_numpy(dtype=float)
        # Before: largest p 1.3e-5 (B vs A); with the exact floor 3.7e-10.
        assert np.all(p[is_on_off] < 1e-6), p[is_on_off]
        tested = (cond == level) | (cond == ref)
        total = y.sum(axis=0)
        one_side = (y[cond == level].sum(0) == 0) | (y[cond == ref].sum(0) == 0)
        few = is_low & one_side & (y[tested].sum(0) > 0) & (total >= 1) & (total <= 5)
        assert few.sum() >= 40
        assert np.mean(p[few] < 0.05) <= 0.05, np.sort(p[few])[:5]


def test_compiled_saddlepoint_equals_the_numpy_reference():
    pytest.importorskip("numba")
    from batchglm.de.zero_side_compiled import log_saddlepoint_pmf

    rng = np.random.default_rng(5)
    n, f = 400, 30
    mu = np.exp(rng.normal(0.0, 1.5, (n, f)))
    alpha = np.exp(rng.normal(-1.0, 0.5, (n, f)))
    r, q = 1.0 / alpha, alpha * mu / (1.0 + alpha * mu)
    mask = rng.random((n, f)) < 0.7
    t = np.round(mu.sum(0) * 0.6) + 300.0
    compiled = np.empty(f)
    log_saddlepoint_pmf(t, r, q, mask, zs._NEWTON_STEPS, compiled)
    np.testing.assert_allclose(compiled, zs._log_saddlepoint_pmf(t, r, q, mask), rtol=1e-11)
