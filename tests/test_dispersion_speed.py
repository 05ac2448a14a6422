"""Shortcuts of the dispersion passes (common-predictor count terms, the kappa table) and
their progress bars, checked against independent formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import batchglm as bg
from batchglm.dispersion import estimate_dispersions, quasi_likelihood, refit_location
from batchglm.dispersion.expected_deviance import KappaTable
from batchglm.families import get_family
from batchglm.solvers.count_table import CountTable


def _counts(seed, n_obs=12, n_feat=30):
    rng = np.random.default_rng(seed)
    mean = np.exp(rng.uniform(np.log(0.5), np.log(300.0), n_feat))
    alpha = 0.1 + 1.0 / mean
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * mean), size=(n_obs, n_feat))
    return y.astype(float)


@pytest.mark.parametrize("log_r", [-3.0, 0.7, 6.0])
def test_count_terms_at_a_common_predictor_match_scipy(log_r):
    y = _counts(1)
    group = np.repeat([0, 1], 6)
    table = CountTable(y, group, 2)
    eta = np.full((2, y.shape[1]), log_r)
    ll, d1, d2 = table.group_sums(get_family("nb"), eta, 2)
    r = np.exp(log_r)
    for g in (0, 1):
        yg = y[group == g]
        ref_ll = (special.gammaln(yg + r) - special.gammaln(r)).sum(axis=0)
        ref_d1 = (r * (special.digamma(yg + r) - special.digamma(r))).sum(axis=0)
        ref_d2 = ref_d1 + (r * r * (special.polygamma(1, yg + r) - special.polygamma(1, r))).sum(
            axis=0
        )
        np.testing.assert_allclose(ll[g], ref_ll, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(d1[g], ref_d1, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(d2[g], ref_d2, rtol=1e-8, atol=1e-8)
    # A predictor that differs by feature takes the entry-wise route: same numbers.
    eta2 = eta.copy()
    eta2[:, 0] += 1e-3
    ll2 = table.group_sums(get_family("nb"), eta2, 0)[0]
    np.testing.assert_array_equal(ll2[:, 1:], ll[:, 1:])
    r0 = np.exp(log_r + 1e-3)
    ref0 = (special.gammaln(y[group == 0, 0] + r0) - special.gammaln(r0)).sum()
    np.testing.assert_allclose(ll2[0, 0], ref0, rtol=1e-12)


def test_kappa_table_matches_a_direct_sum():
    table = KappaTable.build(np.array([0.05, 20.0]))
    rng = np.random.default_rng(3)
    cells = zip(
        rng.integers(0, table.log_mu.size, 6), rng.integers(0, table.log_r.size, 6), strict=True
    )
    for i, j in cells:
        mu, r = np.exp(table.log_mu[i]), np.exp(table.log_r[j])
        p = r / (r + mu)
        y = np.arange(int(stats.nbinom.isf(1e-15, r, p)) + 10, dtype=float)
        dev = 2.0 * (special.xlogy(y, y / mu) - (y + r) * np.log((y + r) / (mu + r)))
        ref = np.sum(stats.nbinom.pmf(y, r, p) * np.maximum(dev, 0.0))
        np.testing.assert_allclose(table.values[i, j], ref, rtol=1e-9, atol=1e-12)


def _fit():
    y = _counts(5, n_obs=12, n_feat=40)
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 6)})
    return y, bg.fit(y, "~ g", obs=obs, progress=False)


def test_dispersion_passes_draw_bars_only_when_asked(capsys):
    y, res = _fit()
    disp = estimate_dispersions(y, res, progress=True)
    err = capsys.readouterr().err
    assert "gene-wise dispersions" in err and "MAP dispersions" in err
    refit = refit_location(y, res, disp.trend, progress=True)
    assert "batchglm.fit" in capsys.readouterr().err
    quasi_likelihood(y, refit, disp, progress=True)
    assert "QL dispersions" in capsys.readouterr().err
    estimate_dispersions(y, res, progress=False)
    quasi_likelihood(y, refit_location(y, res, disp.trend, progress=False), disp, progress=False)
    assert capsys.readouterr().err == ""


def test_tests_plumb_progress(capsys):
    y, res = _fit()
    bg.de.wald(res, "g[T.b]", dispersion="map", data=y, progress=False)
    bg.de.ql_f(res, "g[T.b]", data=y, progress=False)
    assert capsys.readouterr().err == ""
    _, res = _fit()
    bg.de.ql_f(res, "g[T.b]", data=y, progress=True)
    err = capsys.readouterr().err
    # The QL route holds the trend: no MAP pass (and no bar for it).
    assert "gene-wise dispersions" in err and "QL dispersions" in err
    assert "MAP dispersions" not in err
    obs = pd.DataFrame({"g": np.repeat(["a", "b"], 6)})
    bg.de.test(y, "~ g", coef="g[T.b]", obs=obs, dispersion="map", progress=True)
    assert "MAP dispersions" in capsys.readouterr().err
    bg.de.test(y, "~ g", coef="g[T.b]", obs=obs, method="ql", progress=False)
    assert capsys.readouterr().err == ""


def test_kappa_table_is_the_same_in_small_chunks(monkeypatch):
    from batchglm.dispersion import expected_deviance as ed

    r = np.array([1.0 / 85.0, 5.0])
    whole = KappaTable.build(r).values
    # Chunks smaller than one cell's terms: every cell summed on its own.
    monkeypatch.setattr(ed, "_CHUNK", 64)
    np.testing.assert_allclose(KappaTable.build(r).values, whole, rtol=1e-13, atol=1e-15)
