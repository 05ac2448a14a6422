"""NB fits that reach the dispersion bound far from the optimum are released from it.

A poor location start makes the joint Newton step run the scale predictor onto the upper
bound (the Poisson limit) while the likelihood rises inside it. The fit must leave the
bound (Karush-Kuhn-Tucker release) and reach statsmodels' maximum; a feature that stays
held there must not be reported as an optimum. The reference is statsmodels'
``NegativeBinomial`` (NB2) on the same data and offsets.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import Objective, Problem
from batchglm.solvers.status import Status


def _data(seed: int, n: int = 2000, r: float = 1.5):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    x = np.column_stack([np.ones(n), group == 1, group == 2, rng.normal(size=n)]).astype(float)
    sf = np.exp(rng.normal(0.0, 0.4, n))
    mu = sf * np.exp(x @ np.array([0.2, 0.5, -0.4, 0.3]))
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    return y, x, sf


def _objective(y, x, sf):
    n = y.shape[0]
    problem = Problem(
        get_family("nb"),
        build_design(x, None, n, "loc"),
        build_design(np.ones((n, 1)), None, n, "scale"),
        np.log(sf),
    )
    return Objective(problem, np.ascontiguousarray(y[:, None]))


def _statsmodels(y, x, sf):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.NegativeBinomial(y, x, offset=np.log(sf)).fit(disp=0, method="newton", maxiter=200)
    return fit.llf, -np.log(fit.params[-1])


@pytest.mark.parametrize("intercept", [-3.0, 2.0])
def test_start_on_the_bound_is_released_to_the_maximum(intercept):
    y, x, sf = _data(11)
    obj = _objective(y, x, sf)
    hi = get_family("nb").scale_bounds[1]
    # Location far off and log r on the upper bound (1e8): the first steps keep it there.
    start = np.array([[intercept, 0.0, 0.0, 0.0, hi]])
    ref_ll, ref_log_r = _statsmodels(y, x, sf)
    sol = solve(obj, start, SolverOptions())
    assert sol.status[0] == Status.CONVERGED
    assert sol.loglik[0] >= ref_ll - 1e-6
    assert sol.theta[0, -1] == pytest.approx(ref_log_r, abs=1e-5)
    # Without releases the bound holds the feature: reported as stalled, not an optimum.
    held = solve(obj, start, SolverOptions(max_releases=0))
    assert held.theta[0, -1] == pytest.approx(hi)
    assert held.loglik[0] < ref_ll - 1.0
    assert held.status[0] == Status.STALLED


def test_under_dispersed_feature_stays_on_the_bound():
    # Binomial counts (variance below the mean): the NB optimum lies beyond r = 1e8, the
    # gradient there points outward and the bound is an optimum (the Poisson fit).
    rng = np.random.default_rng(3)
    n = 1500
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = rng.binomial(6, 1.0 / (1.0 + np.exp(-0.3 * x[:, 1]))).astype(float)
    obj = _objective(y, x, np.ones(n))
    poisson = sm.GLM(y, x, family=sm.families.Poisson()).fit()
    hi = get_family("nb").scale_bounds[1]
    sol = solve(obj, np.array([[0.0, 0.0, hi]]), SolverOptions())
    assert sol.status[0] == Status.SCALE_AT_BOUND
    # At r = 1e8 the NB likelihood lies below the Poisson one by about
    # sum((y - mu)^2 - y) / (2 r), here ~1e-5; the location matches the Poisson fit.
    mu = poisson.fittedvalues
    gap = abs(((y - mu) ** 2 - y).sum()) / (2.0 * np.exp(hi))
    assert sol.loglik[0] >= poisson.llf - 2.0 * gap - 1e-6
    np.testing.assert_allclose(sol.theta[0, :2], poisson.params, atol=1e-5)


def test_public_fit_matches_statsmodels_with_a_continuous_covariate():
    y, x, sf = _data(5, n=3000, r=2.0)
    ref_ll, ref_log_r = _statsmodels(y, x, sf)
    res = bg.fit(y[:, None], x, size_factors=sf)
    assert np.asarray(res.status)[0] == "converged"
    assert float(np.asarray(res.loglik)[0]) >= ref_ll - 1e-6
    assert res.coef_scale.iloc[0, 0] == pytest.approx(ref_log_r, abs=1e-5)
