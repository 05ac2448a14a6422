"""Mixed fits never end below the plain GLM fit (the Laplace likelihood at variance 0).

References: the Poisson GLM with a condition-only design has the closed-form optimum
``exp(b_c) = sum_c y / sum_c sf`` per condition, and its log-likelihood is summed here with
``scipy.stats.poisson``; the stated numbers of the user's gene are glmmTMB's (-361.21,
variance 0).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import batchglm as bg
from batchglm.mixed import fit as mixed_fit
from batchglm.mixed.fit import boundary_fallback
from batchglm.solvers.newton import Solution
from batchglm.solvers.status import Status

# A user's gene (6 vs 6 donors, 2142 cells, every count 0 or 1): per donor the number of
# cells with a 1, the geometric mean of their size factors and the sum of all size factors.
# For the Poisson likelihood these are sufficient: the cells below (k ones at the geometric
# mean, one zero carrying the rest of the size factors) have exactly the user's likelihood.
_GENE = [
    ("d0", "ctrl", 0, 1.0, 22.271461295318723),
    ("d1", "ctrl", 3, 1.0307701463253471, 63.776011840674464),
    ("d2", "ctrl", 10, 1.0966716986984084, 119.72718043593437),
    ("d3", "ctrl", 9, 1.196693829877262, 139.46809777578858),
    ("d4", "ctrl", 8, 1.4583880965917912, 122.13978659770412),
    ("d5", "ctrl", 21, 1.1893581148927042, 434.3013054900904),
    ("d6", "stim", 15, 1.071827871000958, 542.4173611911591),
    ("d7", "stim", 10, 1.04356975702206, 324.29705427705505),
    ("d8", "stim", 1, 1.347817161737358, 40.99757507273442),
    ("d9", "stim", 2, 0.9381596063742681, 72.66456039672589),
    ("d10", "stim", 3, 0.7437426663819634, 183.3247377600323),
    ("d11", "stim", 7, 1.267748832084712, 249.642029994193),
]


def _user_gene() -> tuple[np.ndarray, pd.DataFrame]:
    rows = []
    for donor, cond, k, gm, total in _GENE:
        rows += [(1.0, donor, cond, gm)] * k + [(0.0, donor, cond, total - k * gm)]
    d = pd.DataFrame(rows, columns=["y", "donor", "condition", "sf"])
    d.index = [f"c{i}" for i in range(len(d))]
    return d[["y"]].to_numpy(), d


def _closed_form(y: np.ndarray, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Poisson GLM optimum of ``~ condition`` per feature: coefficients and log-likelihood."""
    sf = obs["sf"].to_numpy()
    stim = (obs["condition"] == "stim").to_numpy()
    rate = np.array([y[~stim].sum(0) / sf[~stim].sum(), y[stim].sum(0) / sf[stim].sum()])
    coef = np.column_stack([np.log(rate[0]), np.log(rate[1] / rate[0])])
    mu = sf[:, None] * np.where(stim[:, None], rate[1], rate[0])
    return coef, stats.poisson.logpmf(y, mu).sum(axis=0)


def test_user_gene_reaches_the_glm_optimum(caplog: pytest.LogCaptureFixture) -> None:
    y, obs = _user_gene()
    coef, ll = _closed_form(y, obs)
    assert ll[0] == pytest.approx(-361.2068, abs=1e-3)  # the user's (and glmmTMB's) value
    with caplog.at_level(logging.INFO, logger="batchglm"):
        res = bg.fit(
            y,
            "~ condition",
            obs=obs,
            random_effects="donor",
            size_factors=obs["sf"].to_numpy(),
            family="poisson",
        )
    # The outer Newton iteration gets there itself: its first full step has a NaN
    # likelihood, and backtracking from it must still be possible (it stalled before).
    assert "stalled or ended below" not in caplog.text
    assert res.status.iloc[0] == "random_var_at_bound"
    assert float(np.asarray(res.random_var).ravel()[0]) < 1e-6
    assert float(np.asarray(res.loglik)[0]) == pytest.approx(ll[0], abs=1e-6)
    np.testing.assert_allclose(res.coef_loc.to_numpy(), coef, atol=1e-6)
    # One feature: moderation has no prior and must give the unmoderated p-value.
    moderated = bg.de.wald(res, coef="condition[T.stim]").summary()["pvalue"].iloc[0]
    plain = bg.de.wald(res, coef="condition[T.stim]", moderate=False).summary()["pvalue"].iloc[0]
    assert np.isfinite(moderated) and 0.0 < moderated < 1.0
    assert moderated == pytest.approx(plain, rel=1e-12)


def _simulated(seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    donors = np.repeat(np.arange(8), rng.integers(15, 60, size=8))
    obs = pd.DataFrame(
        {
            "donor": [f"p{g}" for g in donors],
            "condition": np.where(donors < 4, "ctrl", "stim"),
            "sf": rng.lognormal(0.0, 0.4, size=donors.size),
        }
    )
    obs.index = [f"cell{i}" for i in range(len(obs))]
    u = rng.normal(0.0, 0.3, size=(8, 3))
    mu = obs["sf"].to_numpy()[:, None] * np.exp(0.2 + 0.5 * (donors[:, None] >= 4) + u[donors])
    return rng.poisson(mu).astype(float), obs


def test_stalled_fit_falls_back_to_the_boundary(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    y, obs = _simulated(11)
    real = mixed_fit.solve

    def stuck_first(objective, start, options):  # type: ignore[no-untyped-def]
        # Feature 0 stops at its start, as the user's gene did; the others are solved.
        sol = real(objective, start, options)
        theta = sol.theta.copy()
        theta[0] = start[0]
        ll, _, hess = objective.evaluate(theta, 2)
        status = sol.status.copy()
        status[0] = Status.STALLED
        return Solution(theta, ll, hess, sol.n_iter, status, sol.grad, sol.active)

    monkeypatch.setattr(mixed_fit, "solve", stuck_first)
    kw = {"obs": obs, "size_factors": obs["sf"].to_numpy(), "family": "poisson"}
    with caplog.at_level(logging.INFO, logger="batchglm"):
        res = bg.fit(y, "~ condition", random_effects="donor", **kw)
    assert "1 feature(s) of the mixed fit stalled or ended below their plain GLM fit" in (
        caplog.text
    )
    coef, ll = _closed_form(y, obs)
    status = res.status.to_numpy()
    assert status[0] == "random_var_at_bound"
    assert np.asarray(res.random_var)[0, 0] == 0.0
    np.testing.assert_allclose(res.coef_loc.to_numpy()[0], coef[0], atol=1e-7)
    assert float(np.asarray(res.loglik)[0]) == pytest.approx(ll[0], abs=1e-7)
    # The SE is that of the fit at variance 0: the inverse GLM information (closed form).
    sf, stim = obs["sf"].to_numpy(), (obs["condition"] == "stim").to_numpy()
    mu = sf * np.exp(coef[0, 0] + coef[0, 1] * stim)
    se = np.sqrt(1.0 / mu[~stim].sum() + 1.0 / mu[stim].sum())
    assert res.se_loc.to_numpy()[0, 1] == pytest.approx(se, rel=1e-6)
    table = bg.de.wald(res, coef="condition[T.stim]").summary()
    assert np.isfinite(table["pvalue"].to_numpy()).all()
    # The other features are untouched: the same as an unpatched fit.
    monkeypatch.setattr(mixed_fit, "solve", real)
    ref = bg.fit(y, "~ condition", random_effects="donor", **kw)
    np.testing.assert_allclose(res.coef_loc.to_numpy()[1:], ref.coef_loc.to_numpy()[1:])
    assert list(status[1:]) == list(ref.status.to_numpy()[1:])
    assert (np.asarray(ref.loglik) >= ll - 1e-6).all()


def test_boundary_fallback_rule() -> None:
    conv, stalled = int(Status.CONVERGED), int(Status.STALLED)
    status = np.array([conv, conv, stalled, stalled, conv, conv], dtype=np.int8)
    loglik = np.array([-10.0, -10.1, -10.0, -9.0, -10.1, -10.0 - 5e-7])
    glm_ll = np.full(6, -10.0)
    glm_status = np.array([conv] * 4 + [int(Status.MAX_ITER), conv], dtype=np.int8)
    # ends below: yes; stalled not above: yes; stalled above: stays stalled; the GLM fit
    # itself failed: no; within the tolerance: no.
    expected = [False, True, True, False, False, False]
    assert boundary_fallback(status, loglik, glm_ll, glm_status).tolist() == expected


def test_one_donor_per_condition_says_what_holds() -> None:
    rng = np.random.default_rng(3)
    obs = pd.DataFrame(
        {"donor": np.repeat(["a", "b"], 30), "condition": np.repeat(["ctrl", "stim"], 30)},
        index=[f"c{i}" for i in range(60)],
    )
    y = rng.poisson(3.0, size=(60, 2)).astype(float)
    msg = (
        r"factor 'donor': the fixed design `design_loc` already separates each of its 2 "
        r"levels \(e\.g\. every condition has a single donor\).*at least two levels of 'donor'"
    )
    with pytest.raises(ValueError, match=msg):
        bg.fit(y, "~ condition", obs=obs, random_effects="donor")
