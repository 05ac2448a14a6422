"""Cox-Reid adjusted profile likelihood for a general scale design."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special, stats

import batchglm as bg
from batchglm.dispersion import (
    cox_reid_log_r,
    cox_reid_scale,
    estimate_dispersions,
    genewise_dispersions,
)
from batchglm.dispersion.cox_reid_design import _APL, scale_bounds
from batchglm.solvers.status import Status


def _simulate(seed, n_feat=40, n_per_group=6):
    # Two conditions; the dispersion differs between two batches crossed with them.
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    cond = np.repeat([0.0, 1.0], n_per_group)
    batch = np.tile([0.0, 1.0], n_per_group)
    x = np.column_stack([np.ones(n), cond])
    z = np.column_stack([np.ones(n), batch])
    mean = np.exp(rng.uniform(np.log(10.0), np.log(500.0), n_feat))
    log_r = np.log(5.0) + np.outer(batch, rng.normal(-1.0, 0.5, n_feat))
    r = np.exp(log_r)
    m = mean[None, :] * np.exp(0.5 * cond)[:, None]
    y = rng.negative_binomial(r, r / (r + m)).astype(np.float64)
    return y, x, z


def _apl_reference(y, mu, x, z, b):
    # Independent formula: scipy's NB log-pmf and a dense log-determinant.
    r = np.exp(z @ b)
    ll = stats.nbinom.logpmf(y, r, r / (r + mu)).sum()
    w = mu / (1.0 + mu / r)
    return ll - 0.5 * np.linalg.slogdet(x.T @ (w[:, None] * x))[1]


def _fitted(y, x, z):
    res = bg.fit(y, x, z)
    return res, np.exp(x @ res.coef_loc.to_numpy().T)


def test_apl_gradient_and_hessian_match_finite_differences():
    y, x, z = _simulate(0, n_feat=20)
    _, mu = _fitted(y, x, z)
    apl = _APL(y, mu, x, z)
    b = np.column_stack([np.full(20, 1.2), np.linspace(-1.5, 1.0, 20)])
    value, grad, hess = apl(b, 2)
    # the value leaves out the parameter-free -sum(log y!)
    for j, v in enumerate(value[:3]):
        ref = _apl_reference(y[:, j], mu[:, j], x, z, b[j]) + special.gammaln(y[:, j] + 1).sum()
        np.testing.assert_allclose(v, ref, rtol=1e-10)
    eps = 1e-5
    for k in range(2):
        e = np.zeros(2)
        e[k] = eps
        fd_grad = (apl(b + e, 0)[0] - apl(b - e, 0)[0]) / (2 * eps)
        np.testing.assert_allclose(fd_grad, grad[:, k], rtol=1e-6, atol=1e-6)
        fd_hess = (apl(b + e, 1)[1] - apl(b - e, 1)[1]) / (2 * eps)
        np.testing.assert_allclose(fd_hess, hess[:, :, k], rtol=1e-6, atol=1e-6)


def test_maximum_matches_scipy_on_a_two_column_design():
    y, x, z = _simulate(1, n_feat=30)
    _, mu = _fitted(y, x, z)
    sol = cox_reid_scale(y, mu, x, z)
    assert np.all(sol.status == Status.CONVERGED)
    assert np.abs(sol.grad).max() < 1e-7
    for j in range(5):

        def neg(b, j=j):
            return -_apl_reference(y[:, j], mu[:, j], x, z, b)

        best = min(
            (
                optimize.minimize(
                    neg,
                    s0,
                    method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
                )
                for s0 in ([1.0, 0.0], [2.0, -1.0], [0.5, 1.0])
            ),
            key=lambda o: o.fun,
        )
        ours = _apl_reference(y[:, j], mu[:, j], x, z, sol.b[j])
        assert ours >= -best.fun - 1e-6
        np.testing.assert_allclose(sol.b[j], best.x, atol=1e-3)
        # features are solved independently of the others in their batch
        alone = cox_reid_scale(y[:, [j]], mu[:, [j]], x, z)
        np.testing.assert_allclose(alone.b[0], sol.b[j], atol=1e-8)


def test_intercept_only_design_agrees_with_the_one_dimensional_path():
    y, x, _ = _simulate(2, n_feat=30)
    z = np.ones((y.shape[0], 1))
    _, mu = _fitted(y, x, z)
    t = cox_reid_log_r(y, mu, x)
    # From a poor start Newton reaches the grid-and-bisection answer.
    sol = cox_reid_scale(y, mu, x, z, start=np.zeros((30, 1)))
    np.testing.assert_allclose(sol.b[:, 0], t, atol=1e-6)
    # a rescaled intercept (log r = 2 b) is the same model
    sol2 = cox_reid_scale(y, mu, x, 2.0 * z)
    np.testing.assert_allclose(2.0 * sol2.b[:, 0], t, atol=1e-6)
    # and so is the fit-level entry point, against estimate_dispersions
    res = bg.fit(y, x)
    gw = genewise_dispersions(y, res)
    disp = estimate_dispersions(y, res)
    np.testing.assert_allclose(gw.alpha()[0], disp.genewise, rtol=1e-6)


def test_under_dispersed_group_stops_on_the_bound():
    rng = np.random.default_rng(3)
    y, x, z = _simulate(3, n_feat=3)
    # feature 0: Poisson-like in batch 0 (equal counts), over-dispersed in batch 1
    n = y.shape[0]
    y[:, 0] = np.where(z[:, 1] == 0, 50.0, rng.negative_binomial(2.0, 2.0 / 52.0, n))
    # feature 1: under-dispersed everywhere
    y[:, 1] = 20.0 + np.arange(n) % 2
    _, mu = _fitted(y, x, z)
    sol = cox_reid_scale(y, mu, x, z)
    lo, hi = scale_bounds(n)
    eta = z @ sol.b.T
    assert np.all(eta >= lo - 1e-8) and np.all(eta <= hi + 1e-8)
    assert sol.status[0] == Status.SCALE_AT_BOUND and sol.status[1] == Status.SCALE_AT_BOUND
    np.testing.assert_allclose(eta[z[:, 1] == 0, 0], hi, atol=1e-6)
    assert np.all(eta[z[:, 1] == 1, 0] < 5.0)
    np.testing.assert_allclose(eta[:, 1], hi, atol=1e-6)
    assert np.all(np.isfinite(sol.apl))


def test_genewise_dispersions_with_constraints_and_refit():
    y, x, z = _simulate(4, n_feat=25)
    y[:, 3] = 0.0
    # three batch columns whose effects sum to zero: two free scale coefficients
    batch3 = np.arange(y.shape[0]) % 3
    design_scale = np.column_stack(
        [np.ones(y.shape[0])] + [(batch3 == g).astype(float) for g in range(3)]
    )
    constraints = np.array([[0.0, -1.0, 1.0, 1.0]])
    res = bg.fit(y, x, design_scale, constraints_scale=constraints)
    gw = genewise_dispersions(y, res)
    assert gw.coef.shape == (25, 4) and list(gw.coef.columns) == res.scale.names
    ok = gw.usable
    assert not ok[3] and np.isnan(gw.coef_free[3]).all()
    assert gw.status[3] == Status.ALL_ZERO
    np.testing.assert_allclose(gw.coef.to_numpy()[ok, 1:].sum(axis=1), 0.0, atol=1e-10)
    # Cox-Reid dispersions exceed the plain ML ones on average (bias correction)
    ml = res.coef_scale.to_numpy()[ok, 0]
    assert np.median(ml - gw.coef.to_numpy()[ok, 0]) > 0
    # the full coefficients satisfy the constraints, so they can be held fixed in a refit
    refit = bg.fit(
        y,
        x,
        design_scale,
        constraints_scale=constraints,
        fixed_scale=np.nan_to_num(gw.coef.to_numpy()),
    )
    assert refit.converged.to_numpy()[ok].all()


def test_errors():
    y, x, z = _simulate(5, n_feat=10)
    res, mu = _fitted(y, x, z)
    with pytest.raises(
        ValueError,
        match=r"needs\s+an intercept-only scale model.*"
        r"genewise_dispersions",
    ):
        estimate_dispersions(y, res)
    with pytest.raises(
        ValueError,
        match=r"Cox-Reid dispersion estimation needs a negative "
        r"binomial fit",
    ):
        genewise_dispersions(y, bg.fit(y, x, family="poisson"))
    with pytest.raises(ValueError, match=r"must be the data of the fit"):
        genewise_dispersions(y[:, :5], res)
    with pytest.raises(ValueError, match=r"design leaves 0"):
        genewise_dispersions(y, bg.fit(y, np.eye(y.shape[0]), z))
    with pytest.raises(ValueError, match=r"one row per observation"):
        cox_reid_scale(y, mu[:-1], x, z)
    with pytest.raises(ValueError, match=r"2 free coefficients but rank 1"):
        cox_reid_scale(y, mu, x, np.column_stack([z[:, 0], z[:, 0]]))
    with pytest.raises(ValueError, match=r"`start` must keep every scale predictor within"):
        cox_reid_scale(y, mu, x, z, start=np.full((10, 2), 30.0))
