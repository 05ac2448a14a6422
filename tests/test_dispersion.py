"""Cox-Reid dispersions, the mean-dispersion trend, shrinkage and QL moderation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import optimize, sparse, special, stats

import batchglm as bg
from batchglm.dispersion import (
    LogNormalPrior,
    cox_reid_log_r,
    estimate_dispersions,
    fit_trend,
    nb_deviance,
    squeeze_var,
)
from batchglm.dispersion.quasi_likelihood import trigamma_inverse
from batchglm.dispersion.shrinkage import prior_variance


def _two_groups(seed, n_per_group=3, n_feat=400, scatter=0.3):
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    x = np.column_stack([np.ones(n), np.repeat([0.0, 1.0], n_per_group)])
    mean = np.exp(rng.uniform(np.log(5.0), np.log(1000.0), n_feat))
    alpha = (0.05 + 1.0 / mean) * np.exp(rng.normal(0.0, scatter, n_feat))
    sf = np.exp(rng.normal(0.0, 0.2, n))
    m = sf[:, None] * mean[None, :]
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * m)).astype(float)
    return y, x, sf, mean, alpha


def _apl_reference(y, mu, x, log_r):
    # Independent formula: scipy's NB log-pmf and a dense log-determinant.
    r = np.exp(log_r)
    ll = stats.nbinom.logpmf(y, r, r / (r + mu)).sum()
    w = mu / (1.0 + mu / r)
    return ll - 0.5 * np.linalg.slogdet(x.T @ (w[:, None] * x))[1]


def test_cox_reid_maximum_matches_a_scalar_optimiser():
    y, x, sf, mean, alpha = _two_groups(0, n_feat=12)
    res = bg.fit(y, x, size_factors=sf)
    mu = sf[:, None] * np.exp(x @ res.coef_loc.to_numpy().T)
    got = cox_reid_log_r(y, mu, x)
    for j in range(12):
        opt = optimize.minimize_scalar(
            lambda t, j=j: -_apl_reference(y[:, j], mu[:, j], x, t),
            bounds=(-np.log(10.0), np.log(1e8)),
            method="bounded",
            options={"xatol": 1e-9},
        )
        assert -opt.fun <= _apl_reference(y[:, j], mu[:, j], x, got[j]) + 1e-7
    prior = LogNormalPrior(np.full(12, np.log(0.1)), 0.25)
    shrunk = cox_reid_log_r(y, mu, x, prior=prior)
    # the prior pulls every estimate towards alpha = 0.1 (log r = log 10)
    assert np.all(np.abs(shrunk - np.log(10.0)) <= np.abs(got - np.log(10.0)) + 1e-9)


def test_trend_recovers_a0_a1_and_falls_back_to_local():
    rng = np.random.default_rng(1)
    mean = np.exp(rng.uniform(np.log(2.0), np.log(5000.0), 3000))
    alpha = (0.05 + 2.0 / mean) * rng.gamma(20.0, 1.0 / 20.0, mean.size)
    trend = fit_trend(mean, alpha)
    assert trend.kind == "parametric"
    np.testing.assert_allclose(trend.coef, (0.05, 2.0), rtol=0.05)
    rising = 0.01 * mean**0.5
    local = fit_trend(mean, rising)
    assert local.kind == "local"
    np.testing.assert_allclose(local(mean), rising, rtol=0.05)
    assert fit_trend(mean, alpha, "mean").kind == "mean"


def test_estimates_shrink_towards_the_truth_and_sparse_agrees():
    y, x, sf, mean, alpha = _two_groups(2, n_feat=600)
    res = bg.fit(y, x, size_factors=sf)
    disp = estimate_dispersions(y, res)
    ok = disp.usable
    err_gene = np.median(np.abs(np.log(disp.genewise[ok] / alpha[ok])))
    err_map = np.median(np.abs(np.log(disp.map[ok] / alpha[ok])))
    assert err_map < 0.7 * err_gene
    assert disp.prior_var >= 0.25
    assert set(disp.to_frame().columns) == {"base_mean", "genewise", "trend", "map", "outlier"}
    again = estimate_dispersions(sparse.csr_matrix(y), res)
    np.testing.assert_allclose(again.map, disp.map, rtol=1e-10)


def test_squeeze_var_recovers_prior_df():
    rng = np.random.default_rng(3)
    d, d0, s0 = 4.0, 10.0, 0.8
    sigma2 = s0 * d0 / rng.chisquare(d0, 20000)
    s2 = sigma2 * rng.chisquare(d, 20000) / d
    out = squeeze_var(s2, d)
    assert 7.0 < out.df_prior < 14.0
    np.testing.assert_allclose(np.nanmedian(out.var_prior), s0, rtol=0.1)
    flat = squeeze_var(rng.chisquare(d, 20000) / d, d)
    assert flat.df_prior > 100
    for x in (0.01, 0.5, 3.0, 50.0):
        np.testing.assert_allclose(special.polygamma(1, trigamma_inverse(x)), x, rtol=1e-8)


def test_nb_deviance_matches_log_likelihood_difference():
    rng = np.random.default_rng(4)
    y = rng.poisson(5.0, (7, 3)).astype(float)
    mu = np.full((7, 3), 5.0)
    r = np.array([0.5, 5.0, 1e7])
    sat = stats.nbinom.logpmf(y, r, r / (r + np.maximum(y, 1e-300))).sum(axis=0)
    fit = stats.nbinom.logpmf(y, r, r / (r + mu)).sum(axis=0)
    np.testing.assert_allclose(nb_deviance(y, mu, r), 2.0 * (sat - fit), rtol=1e-8)


def test_prior_variance_subtracts_sampling_variance():
    rng = np.random.default_rng(5)
    resid = rng.normal(0.0, 1.0, 5000)
    pv, rv = prior_variance(resid, np.zeros(5000), 10)
    np.testing.assert_allclose(rv, 1.0, rtol=0.1)
    np.testing.assert_allclose(pv, rv - special.polygamma(1, 5.0))
    with pytest.raises(ValueError, match=r"design leaves 0 \(observations minus"):
        prior_variance(resid, np.zeros(5000), 0)


def test_dispersion_errors():
    y, x, sf, *_ = _two_groups(6, n_feat=30)
    res = bg.fit(y, x, size_factors=sf)
    with pytest.raises(ValueError, match=r"`dispersion` must be 'mle', 'map' or 'ql'"):
        bg.de.wald(res, coef="p1", dispersion="shrunk", data=y)
    bare = replace(res, data=None)  # a result built without its data
    with pytest.raises(ValueError, match=r"pass\s+the fit's data as `data=`"):
        bg.de.wald(bare, coef="p1", dispersion="map")
    np.testing.assert_array_equal(
        bg.de.wald(res, coef="p1", dispersion="map").pval,
        bg.de.wald(res, coef="p1", dispersion="map", data=y).pval,
    )
    with pytest.raises(ValueError, match=r"only applies\s+to tests of the location model"):
        bg.de.wald(
            bg.fit(y, x, x, size_factors=sf), coef="p1", model="scale", dispersion="map", data=y
        )
    with pytest.raises(ValueError, match=r"needs\s+an intercept-only scale model"):
        bg.de.wald(bg.fit(y, x, x, size_factors=sf), coef="p1", dispersion="map", data=y)
    with pytest.raises(ValueError, match=r"needs a negative binomial fit"):
        bg.de.wald(bg.fit(y, x, family="poisson"), coef="p1", dispersion="ql", data=y)
    with pytest.raises(ValueError, match=r"must be the data of the fit, shape \(6, 30\)"):
        bg.de.wald(res, coef="p1", dispersion="map", data=y[:, :20])
    with pytest.raises(ValueError, match=r"`trend` must be 'parametric', 'local' or 'mean'"):
        bg.de.wald(res, coef="p1", dispersion="map", data=y, trend="loess")
    with pytest.raises(ValueError, match=r"only applies\s+to tests of the location model"):
        bg.de.lrt(y, x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf, dispersion="map")
    with pytest.raises(ValueError, match=r"cover every free location parameter"):
        bg.de.ql_f(res, coef=["p0", "p1"], data=y)
    with pytest.raises(ValueError, match=r"pass\s+the fit's data as `data=`"):
        bg.de.ql_f(bare, coef="p1")
    np.testing.assert_array_equal(
        bg.de.ql_f(res, coef="p1").pval, bg.de.ql_f(res, coef="p1", data=y).pval
    )
    with pytest.raises(ValueError, match=r"0 residual df"):
        saturated = np.eye(6)
        bg.de.wald(bg.fit(y, saturated), coef="p1", dispersion="map", data=y)
    with pytest.raises(ValueError, match=r"no feature has a dispersion estimate above 1e-6"):
        fit_trend(np.ones(0), np.ones(0))
    with pytest.raises(ValueError, match=r"at least 2 testable features"):
        squeeze_var(np.array([1.0]), 3.0)


def test_ready_fits_lrt_and_ql_f_agree():
    y, x, sf, *_ = _two_groups(7, n_feat=200)
    full = bg.fit(y, x, size_factors=sf)
    reduced = bg.fit(y, x[:, :1], size_factors=sf)
    by_fits = bg.de.lrt(full=full, reduced=reduced, data=y, dispersion="ql")
    by_data = bg.de.lrt(y, x, x[:, :1], size_factors=sf, dispersion="ql")
    qlf = bg.de.ql_f(full, coef="p1", data=y)
    np.testing.assert_allclose(by_fits.pval, by_data.pval, rtol=1e-6)
    np.testing.assert_allclose(qlf.pval, by_data.pval, rtol=1e-6)
    assert qlf.test == "ql_f" and qlf.df == 1
    tab = qlf.summary()
    assert {"dispersion", "ql_dispersion", "df_residual"} <= set(tab.columns)
    assert "dispersion='ql'" in repr(qlf)
    # a contrast by weights tests the same thing
    np.testing.assert_allclose(
        bg.de.ql_f(full, contrast=[0.0, 1.0], data=y).pval, qlf.pval, rtol=1e-6
    )


def test_all_zero_and_one_sided_features_are_handled():
    y, x, sf, *_ = _two_groups(8, n_feat=300)
    y[:, 0] = 0.0
    y[:3, 1] = 0.0
    y[:, 2] = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    res = bg.fit(y, x, size_factors=sf)
    wald = bg.de.wald(res, coef="p1", dispersion="map", data=y)
    qlf = bg.de.ql_f(res, coef="p1", data=y)
    for de in (wald, qlf):
        assert np.isnan(de.pval[0])
        assert np.isfinite(de.pval[1:]).all()
    # a group of zeros: the LR-based QL test sees it (a Wald test does not: Hauck-Donner)
    assert qlf.pval[1] < 0.05
    disp = estimate_dispersions(y, res)
    assert not disp.usable[0] and np.isnan(disp.map[0])
    assert np.isfinite(disp.map[1:]).all()


def test_shrunken_estimates_are_kept_on_the_fit_and_reused():
    y, x, sf, *_ = _two_groups(8, n_feat=40)
    res = bg.fit(y, x, size_factors=sf)
    first = bg.de.wald(res, coef="p1", dispersion="map")
    disp = res.derived[("dispersions", "parametric")]
    again = bg.de.wald(res, coef="p1", dispersion="map")
    np.testing.assert_array_equal(first.pval, again.pval)
    ql = bg.de.ql_f(res, coef="p1")  # reuses the dispersions of the MAP test
    assert res.derived[("dispersions", "parametric")] is disp
    fresh = bg.fit(y, x, size_factors=sf)
    np.testing.assert_array_equal(ql.pval, bg.de.ql_f(fresh, coef="p1").pval)
    # Other data (here an equal copy) are never served from the fit's store.
    n_keys = len(fresh.derived)
    bg.de.ql_f(fresh, coef="p1", data=y.copy())
    assert len(fresh.derived) == n_keys
    assert len(replace(res, data=None).derived) == 0
