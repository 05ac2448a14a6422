"""Fits on the seed tutorial's designs against an independent scipy.optimize maximisation."""

from __future__ import annotations

import numpy as np
import pytest

import batchglm as bg

from conftest import seed_example_1, seed_example_2
from reference import fit_feature, nb_loglik, null_basis, numerical_hessian

CHECKED = 8  # features compared with the slow reference per example


@pytest.fixture(scope="module", params=["example_1", "example_2"])
def seeded_fit(request):
    dmat, cons = seed_example_1(1000) if request.param == "example_1" else seed_example_2(1000)
    sim = bg.simulate(
        dmat, dmat, n_features=40, constraints_loc=cons, constraints_scale=cons, seed=7
    )
    res = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    return dmat, cons, sim, res


def test_all_features_converge(seeded_fit):
    _, _, _, res = seeded_fit
    assert res.converged.all()
    assert (res.status == "converged").all()


def test_constraints_hold(seeded_fit):
    _, cons, _, res = seeded_fit
    for coef in (res.coef_loc, res.coef_scale):
        assert np.abs(np.abs(cons) @ coef.to_numpy().T).max() < 1e-8


def test_loglik_is_the_independent_likelihood_at_the_estimate(seeded_fit):
    dmat, _, sim, res = seeded_fit
    mu = np.exp(dmat @ res.coef_loc.to_numpy().T)
    r = np.exp(dmat @ res.coef_scale.to_numpy().T)
    for j in range(CHECKED):
        ref = nb_loglik(sim.data[:, j], mu[:, j], r[:, j])
        assert res.loglik.iloc[j] == pytest.approx(ref, rel=1e-9)


def test_reaches_the_maximum_of_an_independent_optimiser(seeded_fit):
    dmat, cons, sim, res = seeded_fit
    basis = null_basis(cons, dmat.shape[1])
    x = dmat @ basis
    offset = np.zeros(dmat.shape[0])
    for j in range(CHECKED):
        start = np.concatenate(
            [
                np.linalg.lstsq(basis, sim.coef_loc.iloc[j].to_numpy(), rcond=None)[0],
                np.linalg.lstsq(basis, sim.coef_scale.iloc[j].to_numpy(), rcond=None)[0],
            ]
        )
        _, ll_ref = fit_feature(sim.data[:, j], x, x, offset, start)
        assert res.loglik.iloc[j] >= ll_ref - 1e-3


def test_standard_errors_match_finite_difference_observed_information(seeded_fit):
    dmat, cons, sim, res = seeded_fit
    c = res.constraints_loc
    k = c.shape[1]
    for j in range(3):
        y = sim.data[:, j]
        free = np.concatenate(
            [
                np.linalg.lstsq(c, res.coef_loc.iloc[j].to_numpy(), rcond=None)[0],
                np.linalg.lstsq(c, res.coef_scale.iloc[j].to_numpy(), rcond=None)[0],
            ]
        )

        def ll(theta, y=y):
            mu = np.exp(dmat @ (c @ theta[:k]))
            r = np.exp(dmat @ (c @ theta[k:]))
            return nb_loglik(y, mu, r)

        cov_free = np.linalg.inv(-numerical_hessian(ll, free))
        big = np.zeros((2 * c.shape[0], 2 * k))
        big[: c.shape[0], :k] = c
        big[c.shape[0] :, k:] = c
        se = np.sqrt(np.diag(big @ cov_free @ big.T))
        ours = np.concatenate([res.se_loc.iloc[j].to_numpy(), res.se_scale.iloc[j].to_numpy()])
        np.testing.assert_allclose(ours, se, rtol=1e-3)
