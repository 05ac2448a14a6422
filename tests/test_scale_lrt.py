"""Small-sample test of the scale model: the Cox-Reid adjusted likelihood ratio.

The reference APL is computed here with scipy alone: for fixed means, the NB
log-likelihood (``scipy.stats.nbinom``) minus half the log-determinant of ``X^T W X``,
maximised over the scale coefficients by ``scipy.optimize``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg


def _draw(seed, n, n_feat, scale_effect=None):
    rng = np.random.default_rng(seed)
    grp = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), grp])
    mean = np.exp(rng.uniform(np.log(4.0), np.log(200.0), n_feat))
    lfc = rng.normal(0.0, 0.5, n_feat)
    log_r = np.log(rng.uniform(1.0, 15.0, n_feat))
    sfc = np.zeros(n_feat) if scale_effect is None else scale_effect
    sf = np.exp(rng.normal(0.0, 0.15, n))
    mu = sf[:, None] * mean[None, :] * np.exp(np.outer(grp, lfc))
    r = np.exp(log_r[None, :] + np.outer(grp, sfc))
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    return y, x, sf


def _apl_reference(y, mu, x, z):
    """max over b of sum log NB(y; mu, exp(z b)) - 1/2 log det(X^T W X), by scipy."""

    def neg(b):
        r = np.exp(np.clip(z @ b, -20, 20))
        w = mu / (1.0 + mu / r)
        _, logdet = np.linalg.slogdet(x.T @ (w[:, None] * x))
        return -(stats.nbinom.logpmf(y, r, r / (r + mu)).sum() - 0.5 * logdet)

    best = None
    for start in (0.0, 2.0, 4.0):
        b0 = np.zeros(z.shape[1])
        b0[0] = start
        sol = optimize.minimize(
            neg, b0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000}
        )
        if best is None or sol.fun < best.fun:
            best = sol
    return -best.fun


def _means(res, x, j):
    return res.size_factors * np.exp(x @ res.coef_loc.to_numpy()[j])


def test_adjusted_statistic_matches_independent_apl():
    y, x, sf = _draw(31, 8, 6)
    de = bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf)
    assert de.model == "scale" and de.df == 1
    assert "Cox-Reid" in de.tested
    for j in range(y.shape[1]):
        apl_full = _apl_reference(y[:, j], _means(de.fit, x, j), x, x)
        apl_red = _apl_reference(y[:, j], _means(de.reduced, x, j), x, x[:, :1])
        expected = max(2.0 * (apl_full - apl_red), 0.0)
        assert de.stat[j] == pytest.approx(expected, abs=2e-5)
        assert de.pval[j] == pytest.approx(stats.chi2.sf(expected, 1), abs=1e-5)
    # The plain statistic is twice the log-likelihood difference, and larger here.
    plain = bg.de.lrt(
        y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf, scale_test="plain"
    )
    np.testing.assert_allclose(
        plain.stat, np.maximum(2 * (plain.loglik - plain.loglik_reduced), 0.0), rtol=1e-9, atol=1e-9
    )
    assert "Cox-Reid" not in plain.tested


def test_ready_fits_need_the_counts():
    y, x, sf = _draw(32, 8, 40)
    full = bg.fit(y, x, x, size_factors=sf)
    reduced = bg.fit(y, x, size_factors=sf)
    by_fits = bg.de.lrt(y, full=full, reduced=reduced)
    by_data = bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf)
    np.testing.assert_allclose(by_fits.pval, by_data.pval, rtol=1e-7)
    kept = bg.de.lrt(full=full, reduced=reduced)  # the fits keep their data
    np.testing.assert_allclose(kept.pval, by_fits.pval, rtol=1e-12)
    with pytest.raises(ValueError, match=r"needs the counts: pass the fits' data as `data=`"):
        bg.de.lrt(full=replace(full, data=None), reduced=replace(reduced, data=None))
    plain = bg.de.lrt(full=full, reduced=reduced, scale_test="plain")
    assert np.isfinite(plain.pval).all()


def test_scale_test_errors():
    y, x, sf = _draw(33, 8, 10)
    with pytest.raises(
        ValueError,
        match=r"`scale_test` must be 'cox_reid' or 'plain', but "
        r"'reml' was given",
    ):
        bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], scale_test="reml")
    with pytest.raises(
        ValueError,
        match=r"differ in the location model .* leave "
        r"`scale_test` out",
    ):
        bg.de.lrt(y, full_loc=x, reduced_loc=x[:, :1], scale_test="cox_reid")
    with pytest.raises(ValueError, match=r"`dispersion='ql'` tests the location model only"):
        bg.de.lrt(y, full_loc=x, reduced_loc=x[:, :1], dispersion="ql", scale_test="plain")
    normal = np.log1p(y)
    with pytest.raises(ValueError, match=r"family is 'normal'; use `scale_test='plain'`"):
        bg.de.lrt(
            normal,
            full_loc=x,
            full_scale=x,
            reduced_scale=x[:, :1],
            family="normal",
            scale_test="cox_reid",
        )
    # Other families keep the plain statistic by default.
    de = bg.de.lrt(normal, full_loc=x, full_scale=x, reduced_scale=x[:, :1], family="normal")
    np.testing.assert_allclose(
        de.stat, np.maximum(2 * (de.loglik - de.loglik_reduced), 0.0), rtol=1e-9, atol=1e-9
    )


def test_null_calibration_and_power_at_ten_observations():
    n_feat = 1000
    effect = np.zeros(n_feat)
    effect[:100] = -np.log(16.0)
    y, x, sf = _draw(34, 10, n_feat, effect)
    obs = pd.DataFrame({"g": np.where(x[:, 1] == 1, "B", "A")})
    de = bg.de.lrt(
        y, full_loc="~ 1 + g", full_scale="~ 1 + g", reduced_scale="~ 1", obs=obs, size_factors=sf
    )
    null = de.pval[100:]
    assert np.isfinite(null).mean() > 0.99
    rate = np.nanmean(null < 0.05)
    assert 0.03 <= rate <= 0.07
    assert np.nanmean(null < 0.01) <= 0.02
    # Features whose r sits on its upper bound in both fits (no over-dispersion) have a
    # statistic of 0: p-values pile up at 1, so no test of uniformity above.
    # A 16-fold drop of r (more variance in group B) stands out from the null rate.
    assert np.nanmean(de.pval[:100] < 0.05) > 0.4


def test_features_without_an_apl_optimum_are_named(monkeypatch, caplog):
    import dataclasses
    import importlib

    from batchglm.solvers.status import Status

    # The Cox-Reid statistic lives in batchglm.de.scale_test; patch the function it calls.
    scale_test_module = importlib.import_module("batchglm.de.scale_test")

    real = scale_test_module.genewise_dispersions

    def first_stalls(data, res, **kwargs):
        gw = real(data, res, **kwargs)
        status = gw.status.copy()
        status[0] = Status.MAX_ITER
        return dataclasses.replace(gw, status=status)

    monkeypatch.setattr(scale_test_module, "genewise_dispersions", first_stalls)
    y, x, sf = _draw(35, 8, 5)
    with caplog.at_level("WARNING", logger="batchglm"):
        de = bg.de.lrt(y, full_loc=x, full_scale=x, reduced_scale=x[:, :1], size_factors=sf)
    assert np.isnan(de.pval[0]) and np.isfinite(de.pval[1:]).all()
    assert (
        "1 feature(s) have no Cox-Reid adjusted profile likelihood optimum (e.g. "
        "feature0)" in caplog.text
    )
