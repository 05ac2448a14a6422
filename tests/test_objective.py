"""The batched objective's gradient and Hessian against finite differences of its own
log-likelihood, for grouped and continuous scale designs."""

from __future__ import annotations

import numpy as np
import pytest

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.solvers.objective import Objective, Problem


def _problem(continuous_scale: bool, n: int = 300):
    rng = np.random.default_rng(5)
    group = rng.integers(0, 3, n)
    x = np.column_stack([np.ones(n), group == 1, group == 2, rng.normal(size=n)])
    z = np.column_stack([np.ones(n), rng.normal(size=n)]) if continuous_scale else x[:, :3]
    sf = np.exp(rng.normal(0, 0.3, n))
    loc = build_design(x, None, n, "loc")
    scale = build_design(z, None, n, "scale")
    sim = bg.simulate(x, z, n_features=5, size_factors=sf, seed=3)
    return Problem(get_family("nb"), loc, scale, np.log(sf)), sim.data


@pytest.mark.parametrize("continuous_scale", [False, True])
def test_gradient_and_hessian(continuous_scale):
    problem, y = _problem(continuous_scale)
    obj = Objective(problem, np.ascontiguousarray(y))
    assert problem.scale_groups.identity == continuous_scale
    rng = np.random.default_rng(0)
    theta = np.column_stack(
        [
            rng.uniform(5, 7, 5),
            rng.uniform(-0.5, 0.5, (5, 3)),
            rng.uniform(0, 2, 5),
            rng.uniform(-0.5, 0.5, (5, problem.k_scale - 1)),
        ]
    )
    _, grad, hess = obj.evaluate(theta, 2)
    h = 1e-5
    for i in range(problem.n_params):
        step = np.zeros_like(theta)
        step[:, i] = h
        up = obj.evaluate(theta + step, 2)
        dn = obj.evaluate(theta - step, 2)
        np.testing.assert_allclose(grad[:, i], (up[0] - dn[0]) / (2 * h), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(hess[:, :, i], (up[1] - dn[1]) / (2 * h), rtol=1e-5, atol=1e-3)


def test_count_table_matches_direct_sum():
    problem, y = _problem(False)
    obj = Objective(problem, np.ascontiguousarray(y))
    theta = np.tile([6.0, 0.1, -0.2, 0.05, 1.0, 0.3, -0.1], (5, 1))
    ll = obj.evaluate(theta, 0)[0]
    eta_loc = problem.eta_loc(theta[:, :4])
    eta_scale = problem.scale.reduced @ theta[:, 4:].T
    direct = get_family("nb").loglik(y, eta_loc, eta_scale).sum(axis=0)
    np.testing.assert_allclose(ll, direct, rtol=1e-12)


def test_cells_sum_to_the_same_objective_as_observations():
    rng = np.random.default_rng(9)
    n = 240
    group = rng.integers(0, 4, n)
    x = np.column_stack([np.ones(n)] + [group == g for g in (1, 2, 3)]).astype(float)
    z = x[:, :2]
    loc = build_design(x, None, n, "loc")
    scale = build_design(z, None, n, "scale")
    y = bg.simulate(x, z, n_features=6, seed=1).data
    problem = Problem(get_family("nb"), loc, scale, np.zeros(n))
    assert problem.cells is not None and problem.cells.xc.shape[0] == 4
    theta = np.tile([6.0, 0.2, -0.1, 0.3, 1.0, 0.4], (6, 1))
    by_cell = Objective(problem, np.ascontiguousarray(y)).evaluate(theta, 2)
    problem.cells = None
    by_obs = Objective(problem, np.ascontiguousarray(y)).evaluate(theta, 2)
    for a, b in zip(by_cell, by_obs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8)
