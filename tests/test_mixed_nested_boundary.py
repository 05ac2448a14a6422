"""Several random-intercept factors with variances on the boundary (zero).

A user's nested fit (donors in batches) reported a gene with both variances 0, status
``random_var_at_bound`` and NaN standard errors and log-likelihood: a trial step of the
outer Newton iteration overflowed the predictor, its NaN modes were reused as the next
start, and every later evaluation of the gene, the boundary fallback's included, was NaN.
References: with every variance 0 the Laplace likelihood is the plain GLM's, whose Poisson
optimum for ``~ condition`` is closed form (log-likelihood summed with
``scipy.stats.poisson``, inverse information ``1 / sum mu`` per condition); with one
factor's variance 0 the several-factor objective (``mixed/joint.py``) must equal the
one-factor objective (``mixed/laplace.py``, separate code) of the other factor.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.mixed import fit as mixed_fit
from batchglm.mixed.grouping import Grouping
from batchglm.mixed.joint import JointLaplaceObjective
from batchglm.mixed.laplace import LaplaceObjective
from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.newton import Solution
from batchglm.solvers.objective import Problem
from batchglm.solvers.status import Status


def _nested(seed: int, n_feat: int = 3) -> tuple[np.ndarray, pd.DataFrame]:
    """Poisson counts, 10 unequal donors (5 per condition) in 5 batches."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(12, 40, 10)
    donor = np.repeat(np.arange(10), sizes)
    batch = donor % 5
    stim = donor >= 5
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in donor],
            "batch": [f"b{b}" for b in batch],
            "condition": np.where(stim, "stim", "ctrl"),
            "sf": rng.lognormal(0.0, 0.3, donor.size),
        },
        index=[f"cell{i}" for i in range(donor.size)],
    )
    u = 0.3 * rng.normal(size=(10, n_feat)) + 0.2 * rng.normal(size=(5, n_feat))[np.arange(10) % 5]
    mu = obs["sf"].to_numpy()[:, None] * np.exp(0.5 + 0.2 * stim[:, None] + u[donor])
    return rng.poisson(mu).astype(float), obs


def _closed_form(y: np.ndarray, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson GLM ``~ condition``: coefficients, log-likelihood and SE of the condition."""
    sf = obs["sf"].to_numpy()
    stim = (obs["condition"] == "stim").to_numpy()
    rate = np.array([y[~stim].sum(0) / sf[~stim].sum(), y[stim].sum(0) / sf[stim].sum()])
    coef = np.column_stack([np.log(rate[0]), np.log(rate[1] / rate[0])])
    mu = sf[:, None] * np.where(stim[:, None], rate[1], rate[0])
    se = np.sqrt(1.0 / mu[~stim].sum(0) + 1.0 / mu[stim].sum(0))
    return coef, stats.poisson.logpmf(y, mu).sum(axis=0), se


def _objective(y: np.ndarray, obs: pd.DataFrame) -> tuple[JointLaplaceObjective, Problem]:
    n = y.shape[0]
    loc = build_design("~ condition", None, n, "loc", obs=obs)
    scale = build_design(None, None, n, "scale", obs=obs)
    problem = Problem(get_family("poisson"), loc, scale, np.log(obs["sf"].to_numpy()))
    groupings = []
    for factor in ("donor", "batch"):
        codes, levels = pd.factorize(obs[factor])
        sums = GroupSums(codes.astype(np.intp), levels.size)
        groupings.append(Grouping(factor, pd.Index(levels), sums))
    return JointLaplaceObjective(problem, y, groupings), problem


def test_overflowed_trial_does_not_poison_the_boundary_evaluation() -> None:
    y, obs = _nested(5)
    obj, _ = _objective(y, obs)
    coef, ll, se = _closed_form(y, obs)
    n_feat = y.shape[1]
    # A trial point far out (as a wild outer Newton step): the predictor overflows.
    wild = np.column_stack([coef, np.full(n_feat, 900.0), np.full(n_feat, -700.0)])
    obj.evaluate(wild, 2)
    assert np.isfinite(obj.modes).all()
    at_zero = np.column_stack([coef, np.zeros((n_feat, 2))])
    value, grad, hess = obj.evaluate(at_zero, 2)
    assert grad is not None and hess is not None
    np.testing.assert_allclose(value, ll, rtol=1e-12)
    np.testing.assert_allclose(grad[:, :2], 0.0, atol=1e-8)
    # Location block: the Poisson information X^T diag(mu) X, inverted for the SE.
    cov = np.linalg.inv(-hess[:, :2, :2])
    np.testing.assert_allclose(np.sqrt(cov[:, 1, 1]), se, rtol=1e-10)


def test_stalled_nested_fit_reports_the_glm_at_the_boundary(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    y, obs = _nested(8)
    real = mixed_fit.solve

    def stuck_first(objective, start, options):  # type: ignore[no-untyped-def]
        # Feature 0 stalls after a trial step that overflowed (NaN likelihood), as the
        # user's gene did; the others are solved.
        sol = real(objective, start, options)
        wild = sol.theta.copy()
        wild[0, 2:4] = [800.0, -650.0]
        objective.evaluate(wild, 2)
        theta = sol.theta.copy()
        theta[0] = wild[0]
        ll, _, hess = objective.evaluate(theta, 2)
        status = sol.status.copy()
        status[0] = Status.STALLED
        return Solution(theta, ll, hess, sol.n_iter, status, sol.grad, sol.active)

    monkeypatch.setattr(mixed_fit, "solve", stuck_first)
    kw = {"obs": obs, "size_factors": obs["sf"].to_numpy(), "family": "poisson"}
    with caplog.at_level(logging.INFO, logger="batchglm"):
        res = bg.fit(y, "~ condition", random_effects=["donor", "batch"], **kw)
    assert "1 feature(s) of the mixed fit stalled or ended below" in caplog.text
    coef, ll, se = _closed_form(y, obs)
    assert res.status.iloc[0] == "random_var_at_bound"
    np.testing.assert_array_equal(np.asarray(res.random_var)[0], [0.0, 0.0])
    np.testing.assert_allclose(res.coef_loc.to_numpy()[0], coef[0], atol=1e-7)
    assert float(np.asarray(res.loglik)[0]) == pytest.approx(ll[0], abs=1e-7)
    assert res.se_loc.to_numpy()[0, 1] == pytest.approx(se[0], rel=1e-6)
    # Which factor is at 0: both for the stalled feature, the others as their variances.
    at_bound = res.random_var_at_bound
    assert list(at_bound.columns) == ["donor", "batch"]
    assert at_bound.iloc[0].tolist() == [True, True]
    np.testing.assert_array_equal(at_bound.to_numpy()[1:], np.asarray(res.random_var)[1:] < 1e-6)
    assert "`res.random_var_at_bound` says which factor" in caplog.text
    for moderate in (True, False):
        table = bg.de.wald(res, coef="condition[T.stim]", moderate=moderate).summary()
        assert np.isfinite(table[["lfcSE", "stat", "pvalue"]].to_numpy()).all()


@pytest.mark.parametrize("at_zero", [0, 1])
def test_one_factor_at_zero_equals_the_one_factor_objective(at_zero: int) -> None:
    y, obs = _nested(13)
    obj, problem = _objective(y, obs)
    coef, _, _ = _closed_form(y, obs)
    n_feat = y.shape[1]
    sig = np.zeros((n_feat, 2))
    sig[:, 1 - at_zero] = np.linspace(0.2, 0.5, n_feat)
    value, grad, hess = obj.evaluate(np.column_stack([coef, sig]), 2)
    assert grad is not None and hess is not None
    other = obj.groupings[1 - at_zero]
    one = LaplaceObjective(problem, y, other.sums)
    ref_value, ref_grad, ref_hess = one.evaluate(np.column_stack([coef, sig[:, 1 - at_zero]]), 2)
    assert ref_grad is not None and ref_hess is not None
    keep = [0, 1, 2 + (1 - at_zero)]
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    np.testing.assert_allclose(grad[:, keep], ref_grad, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(hess[:, keep][:, :, keep], ref_hess, rtol=1e-6, atol=1e-6)
    # At zero the objective is even in that sigma: no gradient, no coupling to the rest.
    np.testing.assert_allclose(grad[:, 2 + at_zero], 0.0, atol=1e-8)


def test_random_var_at_bound_names_the_factor(caplog: pytest.LogCaptureFixture) -> None:
    # Feature 0 has no batch effect and no donor effect beyond the batch; in feature 1 the
    # donors vary and the batches do not (their variance optimum is 0 at this size).
    y, obs = _nested(21, n_feat=2)
    rng = np.random.default_rng(4)
    sf = obs["sf"].to_numpy()
    y[:, 0] = rng.poisson(sf * 3.0)
    kw = {"obs": obs, "size_factors": sf, "family": "poisson"}
    with caplog.at_level(logging.INFO, logger="batchglm"):
        res = bg.fit(y, "~ condition", random_effects=["donor", "batch"], **kw)
    var = np.asarray(res.random_var)
    at_bound = res.random_var_at_bound
    np.testing.assert_array_equal(at_bound.to_numpy(), var < 1e-6)
    status = res.status.to_numpy()
    np.testing.assert_array_equal(status == "random_var_at_bound", (var < 1e-6).any(axis=1))
    assert at_bound.to_numpy()[0].any()
    plain = bg.fit(y, "~ condition", **kw)
    with pytest.raises(ValueError, match="this fit has no random effects"):
        _ = plain.random_var_at_bound
