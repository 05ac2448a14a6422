"""simulate -> fit recovers the parameters, and standard errors are calibrated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

from conftest import seed_example_1
from reference import fit_feature


@pytest.fixture(scope="module")
def recovered():
    dmat, cons = seed_example_1(2000)
    sim = bg.simulate(
        dmat, dmat, n_features=200, constraints_loc=cons, constraints_scale=cons, seed=11
    )
    res = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    return sim, res


def test_simulated_parameters_follow_the_seed_ranges(recovered):
    sim, _ = recovered
    assert sim.data.shape == (2000, 200)
    means = np.exp(sim.coef_loc["p0"])
    assert means.between(300 / 3, 9000 * 3).all()
    cons_rows = np.array([[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 1, 0]])
    assert np.abs(cons_rows @ sim.coef_loc.to_numpy().T).max() < 1e-12
    assert np.abs(sim.coef_loc["p5"]).max() <= 0.7


def test_parameters_are_recovered(recovered):
    sim, res = recovered
    err_loc = (res.coef_loc - sim.coef_loc).to_numpy()
    err_scale = (res.coef_scale - sim.coef_scale).to_numpy()
    assert np.sqrt((err_loc**2).mean()) < 0.05
    assert np.sqrt((err_scale**2).mean()) < 0.1
    assert res.converged.all()


def test_standard_errors_are_calibrated(recovered):
    sim, res = recovered
    z_loc = ((res.coef_loc - sim.coef_loc) / res.se_loc).to_numpy()[:, [0, 2, 4, 5]]
    z_scale = ((res.coef_scale - sim.coef_scale) / res.se_scale).to_numpy()[:, [0, 2, 4, 5]]
    for z in (z_loc, z_scale):
        inside = (np.abs(z) < 1.96).mean()
        assert 0.92 < inside < 0.98
        assert abs(z.std() - 1) < 0.1


def test_continuous_designs_with_size_factors_reach_the_reference_optimum():
    rng = np.random.default_rng(4)
    n = 600
    x = pd.DataFrame(
        {
            "Intercept": 1.0,
            "dose": rng.uniform(-1, 1, n),
            "treated": (rng.random(n) < 0.5).astype(float),
        }
    )
    z = pd.DataFrame({"Intercept": 1.0, "dose": x["dose"]})
    sf = np.exp(rng.normal(0, 0.4, n))
    sim = bg.simulate(x, z, n_features=6, size_factors=sf, seed=4)
    res = bg.fit(pd.DataFrame(sim.data, columns=[f"g{j}" for j in range(6)]), x, z, size_factors=sf)
    assert list(res.coef_loc.columns) == ["Intercept", "dose", "treated"]
    assert list(res.coef_loc.index) == [f"g{j}" for j in range(6)]
    for j in range(6):
        start = np.concatenate([sim.coef_loc.iloc[j], sim.coef_scale.iloc[j]])
        _, ll_ref = fit_feature(sim.data[:, j], x.to_numpy(), z.to_numpy(), np.log(sf), start)
        assert res.loglik.iloc[j] >= ll_ref - 1e-3
