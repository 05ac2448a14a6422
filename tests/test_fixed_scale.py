"""Fits with a known scale (e.g. shrunken dispersions): only the location is optimised."""

from __future__ import annotations

import numpy as np
import pytest

import batchglm as bg

from conftest import seed_example_1


@pytest.fixture(scope="module")
def fitted():
    dmat, cons = seed_example_1(400)
    sim = bg.simulate(dmat, n_features=20, constraints_loc=cons, seed=8)
    res = bg.fit(sim.data, dmat, constraints_loc=cons)
    return dmat, cons, sim, res


def test_fixing_the_scale_at_its_mle_reproduces_the_fit(fitted):
    dmat, cons, sim, res = fitted
    fixed = bg.fit(sim.data, dmat, constraints_loc=cons, fixed_scale=res.coef_scale)
    np.testing.assert_allclose(fixed.coef_loc.to_numpy(), res.coef_loc.to_numpy(), atol=1e-7)
    np.testing.assert_allclose(fixed.loglik.to_numpy(), res.loglik.to_numpy(), rtol=1e-10)
    assert (fixed.se_scale.to_numpy() == 0).all()
    # with a known scale, location variance comes from the location block alone
    assert (fixed.se_loc.to_numpy() <= res.se_loc.to_numpy() * (1 + 1e-9)).all()


def test_fixed_scale_is_kept_and_location_is_optimal_for_it(fitted):
    dmat, cons, sim, _ = fitted
    log_r = np.full(20, np.log(3.0))
    fixed = bg.fit(sim.data, dmat, constraints_loc=cons, fixed_scale=log_r)
    np.testing.assert_allclose(fixed.coef_scale.to_numpy().ravel(), log_r)
    assert fixed.converged.all()
    # saturated design: the location MLE is the group mean whatever the scale
    mu = np.exp(dmat @ fixed.coef_loc.to_numpy().T)
    np.testing.assert_allclose(mu[0], sim.data[:100].mean(axis=0), rtol=1e-6)


def test_fixed_scale_errors(fitted):
    dmat, cons, sim, _ = fitted
    with pytest.raises(ValueError, match=r"shape \(20, 1\).*but its shape is \(19, 1\)"):
        bg.fit(sim.data, dmat, constraints_loc=cons, fixed_scale=np.zeros(19))
    with pytest.raises(ValueError, match=r"`fixed_scale` must be finite"):
        bg.fit(sim.data, dmat, constraints_loc=cons, fixed_scale=np.full(20, np.nan))
    with pytest.raises(ValueError, match=r"must satisfy `constraints_scale`"):
        bg.fit(
            sim.data,
            dmat,
            dmat,
            constraints_loc=cons,
            constraints_scale=cons,
            fixed_scale=np.ones((20, 6)),
        )
    with pytest.raises(ValueError, match=r"without a scale parameter"):
        bg.fit(sim.data, dmat, constraints_loc=cons, family="poisson", fixed_scale=np.zeros(20))


def test_fixed_scale_objective_skips_scale_derivatives_and_keeps_location_terms():
    """A fixed-scale objective gives the same ll and location derivatives, no count d1/d2."""
    from batchglm.design import Design
    from batchglm.families import NegativeBinomial
    from batchglm.solvers.objective import Objective, Problem

    rng = np.random.default_rng(31)
    n, n_feat = 60, 7
    x = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.normal(size=n)])
    z = np.ones((n, 1))
    offset = rng.normal(0, 0.2, n)
    y = rng.negative_binomial(2.0, 0.1, size=(n, n_feat)).astype(np.float64)
    fam = NegativeBinomial()
    loc = Design(x, ["a", "b", "c"], np.eye(3))
    prob = Problem(fam, loc, Design(z, ["r"], np.eye(1)), offset)
    theta = np.column_stack([rng.normal(2.0, 0.3, (n_feat, 3)), rng.normal(1.0, 0.5, n_feat)])
    full = Objective(prob, np.ascontiguousarray(y)).evaluate(theta, 2)
    orders = []
    count_terms = fam.count_terms

    def spy(values, eta_scale, order):
        orders.append(order)
        return count_terms(values, eta_scale, order)

    fam.count_terms = spy  # type: ignore[method-assign]
    try:
        fixed = Objective(prob, np.ascontiguousarray(y), fixed_scale=True).evaluate(theta, 2)
    finally:
        del fam.count_terms
    assert orders == [0]
    np.testing.assert_allclose(fixed[0], full[0], rtol=1e-12)
    np.testing.assert_allclose(fixed[1][:, :3], full[1][:, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fixed[2][:, :3, :3], full[2][:, :3, :3], rtol=1e-12, atol=1e-12)
    assert (fixed[1][:, 3:] == 0).all() and (fixed[2][:, 3:, :] == 0).all()
    # Independent check: the NB log-likelihood from scipy at the same parameters.
    from scipy import stats

    r = np.exp(theta[:, 3])
    mu = np.exp(offset[:, None] + x @ theta[:, :3].T)
    ref = stats.nbinom.logpmf(y, r[None, :], r[None, :] / (r[None, :] + mu)).sum(axis=0)
    np.testing.assert_allclose(fixed[0], ref, rtol=1e-10)


def test_fixed_scale_fit_equals_the_fit_with_full_derivatives(monkeypatch):
    """A refit at fixed dispersions gives the same numbers as with scale derivatives on."""
    from batchglm.solvers import objective

    rng = np.random.default_rng(5)
    n, n_feat = 48, 30
    group = np.repeat([0, 1, 2], n // 3)
    x = np.column_stack([np.ones(n), group == 1, group == 2]).astype(np.float64)
    mean = rng.lognormal(2.0, 1.0, n_feat)
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + mean[None, :] * (1 + (group == 1)[:, None])))
    log_r = rng.normal(1.5, 0.5, n_feat)
    fast = bg.fit(y.astype(np.float64), x, fixed_scale=log_r)
    original = objective.Objective.__init__

    def full_derivatives(self, *args, **kwargs):
        kwargs["fixed_scale"] = False
        original(self, *args, **kwargs)

    monkeypatch.setattr(objective.Objective, "__init__", full_derivatives)
    slow = bg.fit(y.astype(np.float64), x, fixed_scale=log_r)
    np.testing.assert_allclose(fast.coef_loc.to_numpy(), slow.coef_loc.to_numpy(), atol=1e-12)
    np.testing.assert_allclose(fast.loglik.to_numpy(), slow.loglik.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fast.se_loc.to_numpy(), slow.se_loc.to_numpy(), rtol=1e-12)
