"""Zero counts summed per design group (batchglm.solvers.zero_sums) against direct sums.

References: mpmath at 30 digits for the group sums of the five zero-count summands,
``scipy.stats.nbinom.logpmf`` for the log-likelihood, central differences for its
derivatives and ``scipy.optimize`` on the same likelihood for a fit.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.solvers import zero_sums
from batchglm.solvers.objective import Objective, Problem


def _mp_sums(log_s: np.ndarray, u: float) -> np.ndarray:
    mpmath.mp.dps = 30
    acc = [mpmath.mpf(0)] * 5
    for ls in log_s:
        x = mpmath.exp(mpmath.mpf(float(ls)) + mpmath.mpf(float(u)))
        a = mpmath.log1p(x)
        b = x / (1 + x)
        c = b / (1 + x)
        for i, v in enumerate((a, b, c, b - a, b * b)):
            acc[i] += v
    return np.array([float(v) for v in acc])


def test_group_sums_match_mpmath_in_every_region():
    rng = np.random.default_rng(11)
    log_s = np.concatenate([rng.normal(0.0, 0.8, 120), [-3.0, 2.5]])
    sums = zero_sums.SizeFactorSums(log_s)
    # Points in the left series, each Chebyshev piece, the right series and on the edges.
    u = np.concatenate([[-40.0, -12.0, sums.u_lo], sums.edges + 0.37, [sums.u_hi, 9.0, 35.0]])
    got = sums(u)
    ref = np.column_stack([_mp_sums(log_s, ui) for ui in u])
    rel = np.abs(got - ref) / np.abs(ref)
    assert rel.max() < 1e-13, rel.max(axis=1)
    # The stacked evaluator (all groups in one call) gives the same numbers.
    stacked = zero_sums.StackedSums(
        [sums, zero_sums.SizeFactorSums(log_s[:7], sums.edges.size - 1)]
    )
    both = stacked(np.vstack([u, u]))
    np.testing.assert_allclose(both[:, 0], got, rtol=1e-14)
    np.testing.assert_allclose(both[:, 1], zero_sums.SizeFactorSums(log_s[:7])(u), rtol=1e-13)


def _design_problem(n: int, seed: int, family: str = "nb", equal_sf: bool = False):
    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, 4, n)
    cond = rng.integers(0, 2, n)
    x = np.column_stack([np.ones(n)] + [cell_type == k for k in (1, 2, 3)] + [cond]) * 1.0
    z = np.ones((n, 1))
    sf = np.ones(n) if equal_sf else np.exp(rng.normal(0.0, 0.5, n))
    loc = build_design(x, None, n, "loc")
    scale = build_design(z, None, n, "scale")
    return Problem(get_family(family), loc, scale, np.log(sf)), x, sf


def test_plan_applies_only_to_grouped_nb_designs_with_varying_offsets():
    problem, *_ = _design_problem(400, 1)
    assert zero_sums.plan(problem) is not None
    assert zero_sums.plan(problem).rows.xc.shape[0] == 8
    assert zero_sums.plan(_design_problem(400, 1, "poisson")[0]) is None
    assert zero_sums.plan(_design_problem(400, 1, equal_sf=True)[0]) is None
    assert zero_sums.plan(_design_problem(100, 1)[0]) is None  # < 16 cells per group
    n = 400
    x = np.column_stack([np.ones(n), np.random.default_rng(0).normal(size=n)])
    cont = Problem(
        get_family("nb"),
        build_design(x, None, n, "loc"),
        build_design(np.ones((n, 1)), None, n, "scale"),
        np.zeros(n) + np.linspace(-0.2, 0.2, n),
    )
    assert zero_sums.plan(cont) is None


def _theta(n_feat: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.uniform(-4.0, 1.5, n_feat),
            rng.uniform(-0.5, 0.5, (n_feat, 4)),
            # log r from the Poisson limit (1e7) to strong over-dispersion (0.05)
            np.linspace(np.log(0.05), np.log(1e7), n_feat),
        ]
    )


def test_objective_matches_scipy_loglik_and_the_direct_sums():
    n, n_feat = 1200, 12
    problem, x, sf = _design_problem(n, 3)
    theta = _theta(n_feat, 4)
    mu = sf[:, None] * np.exp(x @ theta[:, :5].T)
    r = np.exp(theta[:, 5])
    y = np.random.default_rng(5).negative_binomial(r, r / (r + mu)).astype(np.float64)
    obj = Objective(problem, y)
    assert obj.zero_sums is not None
    ll, grad, hess = obj.evaluate(theta, 2)
    ref = stats.nbinom.logpmf(y, r, r / (r + mu)).sum(axis=0)
    moderate = r < 1e5  # scipy's logpmf loses digits near the Poisson limit
    np.testing.assert_allclose(ll[moderate], ref[moderate], rtol=1e-10)
    # The same block through the direct per-observation sums.
    direct = Objective(problem, y)
    direct.zero_sums, direct.rows = None, problem.rows
    ev, ev_direct = obj.evaluate_terms(theta, 2), direct.evaluate_terms(theta, 2)
    scale = ev_direct.magnitude
    assert np.max(np.abs(ev.ll - ev_direct.ll) / scale) < 1e-13
    assert ev.grad is not None and ev_direct.grad is not None
    assert ev.hess is not None and ev_direct.hess is not None
    big = np.abs(ev_direct.hess).max(axis=(1, 2))
    assert np.max(np.abs(ev.grad - ev_direct.grad).max(axis=1) / big) < 1e-12
    assert np.max(np.abs(ev.hess - ev_direct.hess).max(axis=(1, 2)) / big) < 1e-12
    # Derivatives against central differences of the log-likelihood.
    h = 1e-5
    for i in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[:, i] = h
        up, dn = obj.evaluate(theta + step, 2), obj.evaluate(theta - step, 2)
        np.testing.assert_allclose(grad[:, i], (up[0] - dn[0]) / (2 * h), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(hess[:, :, i], (up[1] - dn[1]) / (2 * h), rtol=1e-5, atol=1e-4)


def test_fit_reaches_the_scipy_optimum():
    n = 600
    rng = np.random.default_rng(21)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(list("abc"), n)),
            "condition": pd.Categorical(rng.choice(["ctrl", "trt"], n)),
        }
    )
    sf = np.exp(rng.normal(0.0, 0.4, n))
    x = np.column_stack(
        [
            np.ones(n),
            obs["cell_type"] == "b",
            obs["cell_type"] == "c",
            obs["condition"] == "trt",
        ]
    ).astype(float)
    coef = np.array([[-1.0, 0.4, -0.3, 0.5], [0.5, -0.2, 0.1, -0.4], [-2.0, 0.8, 0.0, 0.3]])
    mu = sf[:, None] * np.exp(x @ coef.T)
    r = np.array([2.0, 0.5, 8.0])
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    res = bg.fit(y, "~ cell_type + condition", obs=obs, size_factors=sf, n_jobs=1)
    for f in range(3):

        def nll(p: np.ndarray, f: int = f) -> float:
            m = sf * np.exp(x @ p[:4])
            rr = np.exp(p[4])
            return -float(stats.nbinom.logpmf(y[:, f], rr, rr / (rr + m)).sum())

        start = np.concatenate([coef[f], [np.log(r[f])]])
        best = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-8})
        assert res.loglik.iloc[f] >= -best.fun - 1e-7
        np.testing.assert_allclose(res.loglik.iloc[f], -best.fun, atol=1e-5)


@pytest.mark.parametrize("n_cells", [40, 5000])
def test_direct_float64_sums_agree_with_the_expansions(n_cells):
    """The float64 direct sums and the expansions agree to rounding at any group size."""
    rng = np.random.default_rng(n_cells)
    log_s = rng.normal(0.0, 1.0, n_cells)
    sums = zero_sums.SizeFactorSums(log_s)
    u = np.linspace(-8.0, 8.0, 97)
    x = np.exp(log_s[:, None] + u[None, :])
    direct = np.stack([np.log1p(x), x / (1 + x), x / (1 + x) ** 2]).sum(axis=1)
    np.testing.assert_allclose(sums(u)[:3], direct, rtol=1e-12)


def test_subset_keeps_the_zero_sums_of_the_kept_features():
    n, n_feat = 1200, 12
    problem, x, sf = _design_problem(n, 3)
    theta = _theta(n_feat, 4)
    mu = sf[:, None] * np.exp(x @ theta[:, :5].T)
    r = np.exp(theta[:, 5])
    y = np.random.default_rng(6).negative_binomial(r, r / (r + mu)).astype(np.float64)
    obj = Objective(problem, y)
    assert obj.zero_sums is not None
    keep = np.arange(n_feat) % 3 == 1
    sub = obj.subset(keep)
    assert sub.zero_sums is not None
    ll_sub = sub.evaluate(theta[keep], 2)[0]
    ref = stats.nbinom.logpmf(y[:, keep], r[keep], r[keep] / (r[keep] + mu[:, keep])).sum(axis=0)
    np.testing.assert_allclose(ll_sub, ref, rtol=1e-10)


def test_zero_sum_fit_never_builds_the_per_observation_pair_products():
    # The (pairs x n_obs) matrices of the observation rows are built on first use only; a
    # categorical fit with per-cell size factors sums over design groups and never needs
    # them (360 MB at a million cells with 9 location columns).
    n, n_feat = 800, 6
    problem, x, sf = _design_problem(n, 21)
    rng = np.random.default_rng(22)
    mu = sf[:, None] * np.exp(x @ rng.uniform(-0.5, 0.5, (5, n_feat)))
    y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float64)
    objective = Objective(problem, y)
    assert objective.zero_sums is not None
    objective.evaluate(_theta(n_feat, 23), 2)
    assert not problem.rows.pp_loc.built
    assert problem.rows.pp_cross is not None and not problem.rows.pp_cross.built
    # The direct path builds them on its first evaluation (and they give the sums).
    direct = Objective(problem, y)
    direct.zero_sums, direct.rows = None, problem.rows
    direct.evaluate(_theta(n_feat, 23), 2)
    assert problem.rows.pp_loc.built
