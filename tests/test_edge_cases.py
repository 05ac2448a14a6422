"""Features without an interior optimum get finite estimates and a status, and never
disturb the other features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import batchglm as bg
from batchglm.de import SmallSampleWarning

from conftest import seed_example_1
from reference import fit_feature, null_basis


@pytest.fixture(scope="module")
def awkward():
    dmat, cons = seed_example_1(400)
    rng = np.random.default_rng(0)
    sim = bg.simulate(dmat, n_features=8, constraints_loc=cons, seed=1)
    y = sim.data.copy()
    y[:, 0] = 0  # all zero
    y[:, 1] = 0
    y[17, 1] = 5  # a single non-zero count
    y[:100, 2] = 0  # replicate 1 only zeros: separation
    y[:, 3] = rng.binomial(20, 0.5, 400)  # under-dispersed
    y[:, 4] = 0
    y[[3, 250], 4] = 1  # mean about 5e-3
    y[:, 5] = rng.negative_binomial(5, 5 / (5 + 1e6), 400)  # counts near 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SmallSampleWarning)  # few df: documented
        res = bg.fit(y, dmat, constraints_loc=cons)
    return dmat, cons, y, res


def test_everything_is_finite(awkward):
    *_, res = awkward
    assert np.isfinite(res.coef_loc.to_numpy()).all()
    assert np.isfinite(res.coef_scale.to_numpy()).all()
    assert np.isfinite(res.loglik.to_numpy()).all()


def test_statuses(awkward):
    *_, res = awkward
    status = res.status.astype(str).tolist()
    assert status[0] == "all_zero"
    assert not res.converged.iloc[0]
    assert status[1] == "separated"
    assert status[2] == "separated"
    assert status[3] == "scale_at_bound"
    assert res.converged.iloc[1:].all()
    assert status[5] == "converged" and status[6] == "converged"


def test_all_zero_feature_gets_documented_values(awkward):
    dmat, _, _, res = awkward
    mu = np.exp(dmat @ res.coef_loc.iloc[0].to_numpy())
    np.testing.assert_allclose(mu, 1e-8)
    assert (res.coef_scale.iloc[0] == 0).all()
    assert res.se_loc.iloc[0].isna().all()


def test_under_dispersed_feature_is_the_poisson_fit(awkward):
    dmat, _, y, res = awkward
    assert res.coef_scale.iloc[3, 0] == pytest.approx(np.log(1e8))
    # saturated design: the Poisson MLE is the group mean
    mu = np.exp(dmat @ res.coef_loc.iloc[3].to_numpy())
    for g in range(4):
        sl = slice(100 * g, 100 * (g + 1))
        assert mu[sl][0] == pytest.approx(y[sl, 3].mean(), rel=1e-6)


def test_separated_feature_keeps_identifiable_contrasts(awkward):
    dmat, _, y, res = awkward
    mu = np.exp(dmat @ res.coef_loc.iloc[2].to_numpy())
    assert mu[:100].max() < 1e-8
    for g in (1, 2, 3):  # the other replicates keep their means
        sl = slice(100 * g, 100 * (g + 1))
        assert mu[sl][0] == pytest.approx(y[sl, 2].mean(), rel=1e-6)
    # replicate 3 vs 4 does not involve the separated replicate
    se = res.se_loc.iloc[2]
    assert se["p3"] < 1.0


def test_large_counts_reach_the_reference_optimum(awkward):
    dmat, cons, y, res = awkward
    basis = null_basis(cons, dmat.shape[1])
    x = dmat @ basis
    start = np.concatenate(
        [np.linalg.lstsq(basis, res.coef_loc.iloc[5].to_numpy() + 0.1, rcond=None)[0], [1.0]]
    )
    _, ll_ref = fit_feature(y[:, 5], x, np.ones((400, 1)), np.zeros(400), start)
    assert res.loglik.iloc[5] >= ll_ref - 1e-3


def test_awkward_features_do_not_change_the_others(awkward):
    dmat, cons, y, res = awkward
    alone = bg.fit(y[:, 6:], dmat, constraints_loc=cons)
    np.testing.assert_allclose(
        res.coef_loc.iloc[6:].to_numpy(), alone.coef_loc.to_numpy(), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(res.loglik.iloc[6:].to_numpy(), alone.loglik.to_numpy(), rtol=1e-12)


def test_chunking_does_not_change_results(awkward):
    dmat, cons, y, res = awkward
    one = bg.fit(y, dmat, constraints_loc=cons, chunk_size=1, n_jobs=1)
    threaded = bg.fit(y, dmat, constraints_loc=cons, chunk_size=3, n_jobs=3)
    np.testing.assert_array_equal(threaded.status, res.status)
    # separated features stop anywhere on a flat ridge; compare the rest
    keep = (res.status != "separated").to_numpy()
    np.testing.assert_allclose(
        one.coef_loc.to_numpy()[keep], res.coef_loc.to_numpy()[keep], rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(one.loglik.to_numpy(), res.loglik.to_numpy(), rtol=1e-9)


def test_max_iter_gives_one_warning_naming_the_knob():
    dmat, cons = seed_example_1(400)
    sim = bg.simulate(
        dmat, dmat, n_features=20, constraints_loc=cons, constraints_scale=cons, seed=2
    )
    with pytest.warns(bg.ConvergenceWarning, match="Increase `max_iter`") as rec:
        res = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons, max_iter=1)
    assert len(rec) == 1
    assert (res.status == "max_iter").any()
    assert not res.converged[res.status == "max_iter"].any()


def test_fit_logs_its_phases(caplog):
    y = np.random.default_rng(0).poisson(3.0, (50, 4)).astype(float)
    y[:, 0] = 0
    with caplog.at_level("INFO", logger="batchglm"):
        bg.fit(y, np.ones((50, 1)))
    text = caplog.text
    assert "fitting 4 features x 50 observations" in text
    assert "fitted 4 features in" in text and "'all_zero': 1" in text


def test_large_counts_converge_despite_rounding_noise_in_the_likelihood():
    # Counts near 1e4: the summed terms are ~1e8 and cancel to ~2e4, so near the optimum
    # the likelihood's rounding noise (~1e-7) exceeds what a Newton step can still gain.
    from batchglm.demo.__main__ import design

    dmat, cons = design()
    sim = bg.simulate(
        dmat, dmat, n_features=1000, constraints_loc=cons, constraints_scale=cons, seed=3
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SmallSampleWarning)  # few df: documented
        res = bg.fit(sim.data[:, [439]], dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    assert res.status.iloc[0] == "converged"
    assert res.n_iter.iloc[0] < 10
