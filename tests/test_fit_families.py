"""simulate -> fit recovers the parameters for every family, with constraints."""

from __future__ import annotations

import numpy as np
import pytest

import batchglm as bg
from batchglm.families import get_family

from conftest import seed_example_1

FAMILIES = ["nb", "poisson", "normal", "beta"]


@pytest.fixture(scope="module", params=FAMILIES)
def recovered(request):
    family = request.param
    dmat, cons = seed_example_1(1200)
    rng = np.random.default_rng(0)
    # A continuous covariate makes the location design non-saturated, so the Newton solver
    # (not only the starting values) does the work.
    x = np.column_stack([dmat, rng.normal(0, 0.5, size=dmat.shape[0])])
    cons_x = np.column_stack([cons, np.zeros(2)])
    scale = dict(design_scale=dmat, constraints_scale=cons) if family != "poisson" else {}
    sim = bg.simulate(x, n_features=60, family=family, constraints_loc=cons_x, seed=1, **scale)
    res = bg.fit(sim.data, x, constraints_loc=cons_x, family=family, **scale)
    return family, cons_x, cons, sim, res


def test_all_features_converge(recovered):
    _, _, _, _, res = recovered
    assert (res.status == "converged").all()


def test_constraints_hold(recovered):
    family, cons_x, cons, _, res = recovered
    assert np.abs(np.abs(cons_x) @ res.coef_loc.to_numpy().T).max() < 1e-8
    if family != "poisson":
        assert np.abs(np.abs(cons) @ res.coef_scale.to_numpy().T).max() < 1e-8


def test_estimates_are_within_their_standard_errors(recovered):
    # With calibrated standard errors the z-scores are standard normal: none beyond 5 (of
    # about 600) and a mean square near 1.
    family, _, _, sim, res = recovered
    parts = [(res.coef_loc, res.se_loc, sim.coef_loc)]
    if family != "poisson":
        parts.append((res.coef_scale, res.se_scale, sim.coef_scale))
    for est, se, true in parts:
        # Parameters fixed by a constraint have (numerically) zero variance.
        free = se.to_numpy().min(axis=0) > 1e-6
        z = ((est - true) / se).to_numpy()[:, free]
        assert np.abs(z).max() < 5.0
        assert 0.7 < np.mean(z * z) < 1.4


def test_simulated_data_lie_in_the_family_domain(recovered):
    family, _, _, sim, _ = recovered
    get_family(family).validate(sim.data)
    if family == "poisson":
        assert sim.coef_scale.shape == (60, 0)


def test_family_names():
    assert sorted(f for f in FAMILIES) == ["beta", "nb", "normal", "poisson"]
    for name in FAMILIES:
        assert get_family(name).name == name
    with pytest.raises(
        ValueError,
        match=r"`family` must be one of \['beta', 'nb', 'normal', "
        r"'poisson'\], but 'gamma'",
    ):
        get_family("gamma")


def test_nb_draws_are_unchanged():
    # The draws of the original NB simulator, written out: family-specific intercepts must
    # not change NB data sets of a given seed.
    dmat, _ = seed_example_1(200)
    sim = bg.simulate(dmat, dmat, n_features=5, seed=3)
    rng = np.random.default_rng(3)
    a = np.log(rng.uniform(0.5, 2.0, size=(5, 6)))
    a[:, 0] = rng.uniform(np.log(300), np.log(9000), size=(5, 1))[:, 0]
    b = np.log(rng.uniform(0.5, 2.0, size=(5, 6)))
    b[:, 0] = np.log(rng.integers(1, 11, size=(5, 1)))[:, 0]
    mu, r = np.exp(dmat @ a.T), np.exp(dmat @ b.T)
    y = rng.negative_binomial(r, r / (r + mu)).astype(float)
    np.testing.assert_array_equal(sim.coef_loc.to_numpy(), a)
    np.testing.assert_array_equal(sim.coef_scale.to_numpy(), b)
    np.testing.assert_array_equal(sim.data, y)


@pytest.mark.parametrize("family", ["normal", "beta"])
def test_simulate_size_factors_need_a_log_link(family):
    with pytest.raises(
        ValueError,
        match=rf"'{family}' has a \w+ link for the mean, so "
        r"`size_factors`.*must be None",
    ):
        bg.simulate(np.ones((4, 1)), n_features=2, family=family, size_factors=np.ones(4))


def test_poisson_simulation_with_size_factors():
    sf = np.repeat([0.5, 2.0], 2000)
    sim = bg.simulate(np.ones((4000, 1)), n_features=3, family="poisson", size_factors=sf, seed=0)
    res = bg.fit(sim.data, np.ones((4000, 1)), size_factors=sf, family="poisson")
    np.testing.assert_allclose(res.coef_loc, sim.coef_loc, atol=0.01)
    ratio = sim.data[2000:].mean(axis=0) / sim.data[:2000].mean(axis=0)
    np.testing.assert_allclose(ratio, 4.0, rtol=0.02)
