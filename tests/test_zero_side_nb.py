"""The conditional negative binomial floor of separated features (de/zero_side.py).

References are independent of the library: the exact convolution of per-sample NB
probabilities (scipy.stats.nbinom), scipy's beta-binomial, a Monte Carlo of the NB null,
and closed forms. Data are simulated here, not taken from the case scripts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.de.separated_tests import null_dispersion
from batchglm.de.zero_side import zero_side_floor

pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")


def _exact(total: int, mu: np.ndarray, alpha: float, zero: np.ndarray) -> float:
    """P(no read on the zero side | total) by convolving per-sample NB probabilities."""
    r = 1.0 / alpha
    k = np.arange(total + 1)

    def side(idx: np.ndarray) -> np.ndarray:
        out = np.zeros(total + 1)
        out[0] = 1.0
        for j in idx:
            out = np.convolve(out, stats.nbinom.pmf(k, r, r / (r + mu[j])))[: total + 1]
        return out

    off, on = side(np.flatnonzero(zero)), side(np.flatnonzero(~zero))
    return float(off[0] * on[total] / np.convolve(off, on)[total])


def _floor(total: int, mu: np.ndarray, alpha: float, zero: np.ndarray) -> float:
    mu_full = np.where(zero, 1e-12, mu)[:, None]
    return float(zero_side_floor(np.array([total]), mu_full, mu[:, None], alpha)[0])


@pytest.mark.parametrize(
    ("n_zero", "n_other", "ratio"), [(3, 3, 1.0), (5, 5, 0.5), (2, 8, 2.0), (10, 10, 1.5)]
)
def test_floor_against_the_exact_convolution(n_zero, n_other, ratio):
    rng = np.random.default_rng(100 + n_zero + n_other)
    n = n_zero + n_other
    zero = np.arange(n) < n_zero
    # Unequal size factors, and the zero side's mean `ratio` times the other's (a nuisance
    # effect or a confounded library size): the moment-matched case.
    mu = np.exp(rng.normal(0.0, 0.3, n)) * np.where(zero, ratio, 1.0) * 0.4
    ratios = []
    for alpha in (0.05, 0.5, 3.0):
        for total in (1, 3, 8, 15):
            exact = _exact(total, mu, alpha, zero)
            if 1e-4 <= exact < 0.5:  # below 0.5: 2 P is not clipped at 1
                ratios.append(_floor(total, mu, alpha, zero) / (2 * exact))
    # The moment-matched closed form (docs/validation.md): measured within 0.83-1.08 of
    # the exact value for size factors exp(N(0, 0.2^2)) and 0.3-1.5 for exp(N(0, 0.5^2)).
    assert len(ratios) >= 5
    assert 0.7 < min(ratios) and max(ratios) < 1.3, ratios
    assert 0.9 < np.median(ratios) < 1.1, ratios


def test_equal_means_are_the_beta_binomial():
    # Equal size factors and one dispersion: the zero side's share of the gamma
    # intensities is Beta(n_zero / alpha, n_other / alpha) exactly.
    for n_zero, n_other, alpha in [(3, 3, 0.7), (4, 6, 2.5), (10, 10, 0.1)]:
        n = n_zero + n_other
        zero = np.arange(n) < n_zero
        totals = np.arange(1, 30)
        mu = np.full(n, 0.8)
        mu_full = np.where(zero, 1e-12, mu)[:, None] * np.ones((1, totals.size))
        got = zero_side_floor(totals, mu_full, mu[:, None] * np.ones((1, totals.size)), alpha)
        p0 = stats.betabinom.pmf(0, totals, n_zero / alpha, n_other / alpha)
        np.testing.assert_allclose(got, np.minimum(1.0, 2 * p0), rtol=1e-9)


def test_floor_against_a_monte_carlo_of_the_nb_null():
    rng = np.random.default_rng(7)
    draws = 400_000
    for n_zero, n_other, alpha in [(3, 3, 1.5), (5, 5, 0.8), (4, 8, 3.0)]:
        n = n_zero + n_other
        zero = np.arange(n) < n_zero
        mu = np.exp(rng.normal(0.0, 0.4, n)) * 0.6  # unequal size factors
        r = 1.0 / alpha
        y = rng.negative_binomial(r, r / (r + mu), size=(draws, n))
        total = y.sum(axis=1)
        none = y[:, zero].sum(axis=1) == 0
        for t in (2, 4, 7):
            at = total == t
            p_mc = none[at].mean()
            se = np.sqrt(p_mc * (1 - p_mc) / at.sum())
            got = _floor(t, mu, alpha, zero) / 2
            assert abs(got - p_mc) < 4 * se + 0.1 * p_mc, (n_zero, n_other, t, got, p_mc)


def test_poisson_limit_and_monotone_in_the_total():
    mu = np.array([0.3, 0.5, 0.4, 1.0, 0.7, 0.9])
    zero = np.arange(6) < 3
    q = mu[zero].sum() / mu.sum()
    for t in (1, 5, 12):
        assert _floor(t, mu, 1e-9, zero) == pytest.approx(min(1.0, 2 * (1 - q) ** t), rel=1e-6)
        assert _floor(t, mu, 0.0, zero) == pytest.approx(min(1.0, 2 * (1 - q) ** t), rel=1e-12)
    # Over-dispersion makes "all reads on one side" likelier: never below Poisson.
    assert _floor(5, mu, 2.0, zero) > min(1.0, 2 * (1 - q) ** 5)
    # Equal means: the beta-binomial, which decreases with the total; large totals are
    # evaluated at the total itself (no cap), by the saddlepoint above 256 reads. (With
    # unequal means P need not decrease: a huge total most likely comes from the one
    # sample with the heaviest tail, tests/test_zero_side_unequal.py.)
    flat = np.full(6, 0.6)
    totals = (5, 50, 300, 2000, 20000)
    values = [_floor(t, flat, 2.0, zero) for t in totals]
    assert all(a > b > 0 for a, b in zip(values[:-1], values[1:], strict=True))
    p0 = stats.betabinom.pmf(0, np.array(totals), 3 / 2.0, 3 / 2.0)
    np.testing.assert_allclose(values, 2 * p0, rtol=1e-2)


def test_no_zero_side_no_floor_and_bad_dispersion():
    mu = np.ones((4, 1))
    assert zero_side_floor(np.array([5.0]), mu, mu, 0.5)[0] == 0.0
    with pytest.raises(ValueError, match=r"`dispersion` must be finite and non-negative"):
        zero_side_floor(np.array([5.0]), mu, mu, -0.1)


def test_ql_inflation_matches_the_ql_variance():
    rng = np.random.default_rng(3)
    n, f = 8, 5
    obs = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4}, index=[f"s{i}" for i in range(n)])
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + 5.0), size=(n, f)).astype(float)
    res = bg.fit(y, "~ g", obs=obs)
    alpha = np.exp(-res.coef_scale.to_numpy()[:, 0])
    mu = np.abs(rng.normal(1.0, 0.3, (n, f))) + 0.1
    phi = np.array([0.5, 1.0, 1.3, 2.0, np.nan])
    got = null_dispersion(res, np.arange(f), mu, phi)
    # NB variance at alpha_eff equals phi times the NB variance at alpha (phi >= 1).
    eff = np.maximum(np.nan_to_num(phi, nan=1.0), 1.0)
    np.testing.assert_allclose(mu + got * mu**2, eff * (mu + alpha * mu**2), rtol=1e-12)


def _null_table(seed: int, nrep: int, n_genes: int) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2 * nrep
    obs = pd.DataFrame({"c": ["A"] * nrep + ["B"] * nrep}, index=[f"s{i}" for i in range(n)])
    mean = np.exp(rng.uniform(np.log(0.2), np.log(50.0), n_genes))
    alpha = (0.05 + 1.0 / mean) * np.exp(rng.normal(0.0, 0.3, n_genes))
    sf = np.exp(rng.normal(0.0, 0.4, n))
    mu = sf[:, None] * mean[None, :]
    r = 1.0 / alpha[None, :]
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    # Three on/off genes: on in A only (their floor must not remove their significance).
    y[:, :3] = 0.0
    y[:nrep, 0] = [50, 80, 60, 70, 55][:nrep]
    y[:nrep, 1] = [12, 20, 15, 9, 14][:nrep]
    y[:nrep, 2] = [30, 5, 40, 22, 18][:nrep]
    return y, obs, sf


@pytest.mark.parametrize(("seed", "nrep"), [(41, 3), (42, 5)])
def test_separated_null_genes_are_calibrated_and_on_off_genes_keep_power(seed, nrep):
    y, obs, sf = _null_table(seed, nrep, 700)
    res = bg.fit(y, "~ c", obs=obs, size_factors=sf)
    grp = (obs["c"] == "B").to_numpy()
    sep = ((y[grp].sum(0) == 0) | (y[~grp].sum(0) == 0)) & (y.sum(0) > 0)
    sep[:3] = False
    null = np.ones(y.shape[1], dtype=bool)
    null[:3] = False
    for de in (
        bg.de.ql_f(res, coef="c[T.B]", data=y),
        bg.de.wald(res, coef="c[T.B]", dispersion="map", data=y),
        bg.de.wald(res, coef="c[T.B]", dispersion="ql", data=y),
    ):
        p = de.pval
        assert sep.sum() >= 50
        # Measured (3 vs 3, 5 vs 5): 0.000-0.017 of 99 / 60 separated null genes and
        # 0.030-0.047 of all null genes at p < 0.05; ql_f without the floor rejected 0.061
        # and 0.117 of the separated ones.
        assert np.mean(p[sep] < 0.05) <= 0.05, (de.test, de.dispersion)
        assert np.nanmean(p[null] < 0.05) <= 0.06, (de.test, de.dispersion)
        # A gene with one or two reads against zeros is never significant.
        assert np.all(p[sep & (y.sum(0) <= 2)] > 0.4)
        # On/off genes (e.g. 50, 80, 60 vs 0, 0, 0) stay clearly significant.
        assert np.all(p[:3] < 1e-3), (de.test, de.dispersion, p[:3])


def test_weight_zero_observations_do_not_count():
    # A fit with 0/1 weights tests like the fit without the weight-0 observations, floor
    # included (other weights get no floor: the conditional test does not cover them).
    rng = np.random.default_rng(12)
    n = 8
    obs = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4}, index=[f"s{i}" for i in range(n)])
    y = rng.negative_binomial(3.0, 3.0 / (3.0 + 4.0), size=(n, 6)).astype(float)
    y[:4, :2] = 0.0
    y[4:, 0] = [3, 0, 0, 1]  # few reads against zeros: the floor binds
    y[4:, 1] = [0, 3, 0, 0]
    sf = np.exp(rng.normal(0.0, 0.2, n))
    w = np.ones(n)
    w[5] = 0.0  # drops the 0 of feature 0 and the 3 reads of feature 1 from group b
    weighted = bg.fit(y, "~ g", obs=obs, size_factors=sf, weights=w)
    keep = w == 1
    dropped = bg.fit(y[keep], "~ g", obs=obs[keep], size_factors=sf[keep])
    p_w = bg.de.wald(weighted, coef="g[T.b]", data=y).pval
    p_d = bg.de.wald(dropped, coef="g[T.b]", data=y[keep]).pval
    lrt = bg.de.lrt(y[keep], "~ g", "~ 1", obs=obs[keep], size_factors=sf[keep])
    chi2_p = stats.chi2.sf(lrt.stat, 1)
    assert p_d[0] > 2 * chi2_p[0]  # 4 reads against 7 zeros: the floor binds
    # bg.de.lrt applies the same floor, also with 0/1 weights.
    lrt_w = bg.de.lrt(y, "~ g", "~ 1", obs=obs, size_factors=sf, weights=w)
    np.testing.assert_allclose(lrt.pval[0], p_d[0], rtol=1e-6)
    np.testing.assert_allclose(lrt_w.pval[0], p_d[0], rtol=1e-5)
    np.testing.assert_allclose(p_w[:1], p_d[:1], rtol=1e-5)
    assert np.isnan(p_d[1]) == np.isnan(p_w[1])
