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
