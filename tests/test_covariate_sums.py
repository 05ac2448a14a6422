"""Groups plus continuous covariates (batchglm.solvers.covariate_sums) against direct sums.

References: the direct per-observation sums over the full pair matrix (the path used before,
``Objective`` with the plan switched off), ``scipy.stats.nbinom.logpmf`` for the
log-likelihood, central differences for the derivatives and ``scipy.optimize`` on the same
likelihood for a fit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family, nb_kernel
from batchglm.solvers import covariate_sums
from batchglm.solvers.block_fit import fit_block
from batchglm.solvers.newton import SolverOptions
from batchglm.solvers.objective import Objective, Problem
from batchglm.solvers.status import Status


def _problem(n: int, seed: int, n_cov: int = 1, scale_groups: bool = False, family: str = "nb"):
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, 3, n)
    cond = rng.integers(0, 2, n)
    cov = rng.normal(0.0, 1.0, (n, n_cov))
    # the covariate in the middle: the discrete and continuous columns interleave
    x = np.column_stack(
        [np.ones(n), cell_type == 1, cov[:, 0], cell_type == 2, cond, cov[:, 1:]]
    ).astype(np.float64)
    z = np.column_stack([np.ones(n), cond]) if scale_groups else np.ones((n, 1))
    sf = np.exp(rng.normal(0.0, 0.4, n))
    problem = Problem(
        get_family(family),
        build_design(x, None, n, "loc"),
        build_design(z, None, n, "scale"),
        np.log(sf),
    )
    return problem, x, z, sf


def _data(x, z, sf, n_feat, seed, r_max=1e6):
    rng = np.random.default_rng(seed)
    a = np.column_stack(
        [rng.uniform(-3.0, 1.0, n_feat), rng.uniform(-0.5, 0.5, (n_feat, x.shape[1] - 1))]
    )
    b = np.column_stack(
        [np.linspace(np.log(0.3), np.log(r_max), n_feat), rng.uniform(-0.3, 0.3, (n_feat, 1))]
    )[:, : z.shape[1]]
    mu = sf[:, None] * np.exp(x @ a.T)
    r = np.exp(z @ b.T)
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    return y, np.column_stack([a, b]), mu, r


def test_plan_applies_to_grouped_designs_with_few_continuous_columns():
    problem, *_ = _problem(400, 1)
    plan = problem.covariate_plan
    assert plan is not None
    assert plan.continuous.tolist() == [2] and plan.discrete.tolist() == [0, 1, 3, 4]
    assert plan.n_groups == 6
    assert _problem(400, 1, family="poisson")[0].covariate_plan is None
    assert _problem(60, 1)[0].covariate_plan is None  # fewer than 16 cells per group
    assert _problem(400, 1, n_cov=5)[0].covariate_plan is None  # too many covariates


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize(("n_cov", "scale_groups"), [(1, False), (2, True)])
def test_objective_matches_the_direct_sums_and_scipy(compiled, n_cov, scale_groups):
    if compiled and not nb_kernel.ENABLED:
        pytest.skip("numba not available")
    n, n_feat = 900, 7
    problem, x, z, sf = _problem(n, 3, n_cov, scale_groups)
    y, theta, mu, r = _data(x, z, sf, n_feat, 4)
    obj = Objective(problem, y)
    assert obj.covariates is not None
    direct = Objective(problem, y)
    direct.covariates = None
    real = covariate_sums.group_sums

    def forced(*args, **kwargs):
        return real(*args, **{**kwargs, "compiled": compiled})

    covariate_sums.group_sums = forced  # type: ignore[assignment]
    try:
        ev = obj.evaluate_terms(theta, 2)
        ev0 = obj.evaluate_terms(theta, 0)
        h = 1e-5
        diffs = []
        for i in range(theta.shape[1]):
            step = np.zeros_like(theta)
            step[:, i] = h
            up, dn = obj.evaluate(theta + step, 2), obj.evaluate(theta - step, 2)
            diffs.append(((up[0] - dn[0]) / (2 * h), (up[1] - dn[1]) / (2 * h)))
    finally:
        covariate_sums.group_sums = real  # type: ignore[assignment]
    ref = direct.evaluate_terms(theta, 2)
    assert np.max(np.abs(ev.ll - ref.ll) / ref.magnitude) < 1e-13
    np.testing.assert_array_equal(ev0.ll, ev.ll)
    assert ev.grad is not None and ref.grad is not None
    assert ev.hess is not None and ref.hess is not None
    big = np.abs(ref.hess).max(axis=(1, 2))
    assert np.max(np.abs(ev.grad - ref.grad).max(axis=1) / big) < 1e-12
    assert np.max(np.abs(ev.hess - ref.hess).max(axis=(1, 2)) / big) < 1e-12
    np.testing.assert_array_equal(ev.hess, np.swapaxes(ev.hess, 1, 2))
    logpmf = stats.nbinom.logpmf(y, r, r / (r + mu)).sum(axis=0)
    moderate = r.max(axis=0) < 1e5  # scipy's logpmf loses digits near the Poisson limit
    np.testing.assert_allclose(ev.ll[moderate], logpmf[moderate], rtol=1e-10)
    for i, (d1, d2) in enumerate(diffs):
        np.testing.assert_allclose(ev.grad[:, i], d1, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ev.hess[:, :, i], d2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("n_cov", [1, 2])
def test_compiled_and_numpy_sums_agree(n_cov):
    # n_cov = 1 runs the kernel's one-covariate branch (sums in registers), 2 its general
    # loop; order 0 always runs the general loop, so with one covariate the log-likelihood
    # sums of the two branches must agree to the last bit.
    if not nb_kernel.ENABLED:
        pytest.skip("numba not available")
    problem, x, z, sf = _problem(2000, 8, n_cov, True)
    y, theta, *_ = _data(x, z, sf, 3, 9)
    plan = problem.covariate_plan
    assert plan is not None
    k_loc = 4 + n_cov
    eta_s = problem.eta_scale_groups(theta[:, k_loc:])[plan.scale_of_group]
    a = theta[:, :k_loc]
    ys = plan.sort(y)
    got = covariate_sums.group_sums(plan, ys, a, eta_s, 2, compiled=True)
    ref = covariate_sums.group_sums(plan, ys, a, eta_s, 2, compiled=False)
    scale = np.abs(ref).max(axis=(0, 2), keepdims=True)  # largest sum of each feature
    assert np.max(np.abs(got - ref) / scale) < 1e-12
    ll_only = covariate_sums.group_sums(plan, ys, a, eta_s, 0, compiled=True)
    np.testing.assert_array_equal(ll_only[:, :, 0], got[:, :, 0])


def test_fit_reaches_the_scipy_optimum():
    n = 1500
    rng = np.random.default_rng(31)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(list("abc"), n)),
            "condition": pd.Categorical(rng.choice(["ctrl", "trt"], n)),
            "covariate": rng.normal(0.0, 1.0, n),
        }
    )
    sf = np.exp(rng.normal(0.0, 0.3, n))
    x = np.column_stack(
        [
            np.ones(n),
            obs.cell_type == "b",
            obs.cell_type == "c",
            obs.condition == "trt",
            obs.covariate,
        ]
    ).astype(np.float64)
    a_true = np.array([[-1.5, 0.3, -0.2, 0.4, 0.5], [0.5, -0.3, 0.1, 0.0, -0.8]])
    mu = sf[:, None] * np.exp(x @ a_true.T)
    r = np.array([2.0, 5.0])
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    res = bg.fit(y, "~ cell_type + condition + covariate", obs=obs, size_factors=sf, n_jobs=1)
    assert (res.status == "converged").all()
    coef = res.coef_loc.to_numpy()
    log_r = res.coef_scale.to_numpy()[:, 0]
    for f in range(2):

        def nll(p, f=f):
            m = sf * np.exp(x @ p[:5])
            rr = np.exp(p[5])
            return -stats.nbinom.logpmf(y[:, f], rr, rr / (rr + m)).sum()

        start = np.append(np.zeros(5), 0.0)
        opt = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-8})
        opt = optimize.minimize(nll, opt.x, method="Nelder-Mead", options={"xatol": 1e-9})
        assert -res.loglik.to_numpy()[f] <= opt.fun + 1e-7
        np.testing.assert_allclose(coef[f], opt.x[:5], atol=2e-4)
        np.testing.assert_allclose(log_r[f], opt.x[5], atol=2e-3)


def test_block_fit_never_builds_the_per_observation_pair_products():
    # (55 + 10) x n_obs products at 10 coefficients: 520 MB at a million cells.
    problem, x, z, sf = _problem(1200, 41)
    y, theta, *_ = _data(x, z, sf, 4, 42, r_max=20.0)
    out = fit_block(problem, y, SolverOptions())
    converged = out[4] == Status.CONVERGED
    assert converged.sum() >= 3  # the fourth (r = 20) may reach the Poisson bound
    assert not problem.rows.pp_loc.built
    assert problem.rows.pp_cross is not None and not problem.rows.pp_cross.built
    # The fitted optimum is stationary for the direct sums (which do build them).
    direct = Objective(problem, np.ascontiguousarray(y[:, converged]))
    direct.covariates = None
    _, grad, hess = direct.evaluate(out[0][converged], 2)
    assert grad is not None and hess is not None
    step = np.linalg.solve(-hess, grad[:, :, None])[:, :, 0]
    assert np.abs(step).max() < 1e-6
    assert problem.rows.pp_loc.built


def test_smallest_predictor_from_group_bounds_matches_every_row():
    # The separation check's min_j x_j . a from the groups' covariate bounds, against the
    # minimum over the distinct design rows; coefficients of both signs on the covariate.
    problem, *_ = _problem(3000, 12, 1)
    plan = problem.covariate_plan
    assert plan is not None
    rng = np.random.default_rng(13)
    a = rng.normal(0.0, 2.0, (6, problem.k_loc))
    a[:3, plan.continuous[0]] = np.abs(a[:3, plan.continuous[0]])
    a[3:, plan.continuous[0]] = -np.abs(a[3:, plan.continuous[0]])
    direct = (problem.loc_rows @ a.T).min(axis=0)
    got = plan.min_eta_loc(a)
    assert got is not None
    np.testing.assert_allclose(got, direct, rtol=1e-14, atol=1e-14)
    assert _problem(3000, 12, 2)[0].covariate_plan.min_eta_loc(np.zeros((1, 6))) is None
