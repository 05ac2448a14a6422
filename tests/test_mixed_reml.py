"""REML (restricted Laplace) fits of random-intercept GLMs against independent references.

The reference here is written from scratch: the NB log-likelihood with
``scipy.special.gammaln``, the joint mode of fixed effects and random intercepts by
``scipy.optimize.minimize`` (trust-exact on the dense Hessian), the Laplace determinant from
the dense ``(p + G)``-square negative Hessian (closed-form NB weights), and the REML
estimate by Nelder-Mead on that value. glmmTMB ``REML = TRUE`` agreement:
``tests/test_mixed_glmmtmb.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.mixed.reml import RemlObjective
from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.objective import Problem
from nb_reference import nb_logpmf_eta


def _data(seed: int, n_feat: int = 3, var: float = 0.3) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    sizes = np.array([10, 14, 8, 12, 9, 16])
    gid = np.repeat(np.arange(sizes.size), sizes)
    x = rng.normal(size=gid.size)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in gid],
            "x": x,
            "condition": np.where(gid % 2 == 0, "a", "b"),
        },
        index=[f"c{i}" for i in range(gid.size)],
    )
    u = rng.normal(size=(sizes.size, n_feat)) * np.sqrt(var)
    mu = np.exp(1.0 + 0.3 * x[:, None] + u[gid])
    return rng.negative_binomial(3.0, 3.0 / (3.0 + mu)).astype(np.float64), obs


def _reml_ref(
    y: np.ndarray, x: np.ndarray, gid: np.ndarray, sigma: float, log_r: float
) -> tuple[float, np.ndarray]:
    """Restricted Laplace log-likelihood and the joint mode of ``a``, from scratch."""
    p, n_groups = x.shape[1], gid.max() + 1
    z = np.zeros((gid.size, n_groups))
    z[np.arange(gid.size), gid] = 1.0
    m = np.column_stack([x, sigma * z])  # predictor = m @ [a, v]

    def neg(t: np.ndarray) -> float:
        return -(nb_logpmf_eta(y, m @ t, log_r).sum() - 0.5 * t[p:] @ t[p:])

    def neg_grad(t: np.ndarray) -> np.ndarray:
        mu, r = np.exp(m @ t), np.exp(log_r)
        d1 = (y - mu) * r / (r + mu)
        g = m.T @ d1
        g[p:] -= t[p:]
        return -g

    def neg_hess(t: np.ndarray) -> np.ndarray:
        mu, r = np.exp(m @ t), np.exp(log_r)
        w = (y + r) * mu * r / (r + mu) ** 2  # -d^2 ll / d eta^2 of NB
        k = m.T @ (w[:, None] * m)
        k[p:, p:] += np.eye(n_groups)
        return k

    t0 = np.zeros(p + n_groups)
    t0[0] = np.log(y.mean() + 0.1)
    opt = optimize.minimize(
        neg, t0, jac=neg_grad, hess=neg_hess, method="trust-exact", options={"gtol": 1e-10}
    )
    t = opt.x
    logdet = np.linalg.slogdet(neg_hess(t))[1]
    return -opt.fun + 0.5 * p * np.log(2 * np.pi) - 0.5 * logdet, t[:p]


def test_reml_value_and_joint_mode_match_a_dense_reference() -> None:
    y, obs = _data(1)
    n = y.shape[0]
    loc = build_design("~ condition + x", None, n, "loc", obs=obs)
    fam = get_family("nb")
    scale = build_design(None, None, n, "scale")
    prob = Problem(fam, loc, scale, np.zeros(y.shape[0]))
    codes = pd.factorize(obs["donor"], sort=True)[0]
    groups = GroupSums(codes.astype(np.intp), 6)
    a0 = np.tile([1.0, 0.0, 0.0], (y.shape[1], 1))
    obj = RemlObjective(prob, y, groups, a0)
    theta = np.array([[0.5, np.log(3.0)], [0.2, np.log(1.5)], [0.9, np.log(8.0)]])
    jm = obj.joint_mode(theta, a0, np.zeros((6, 3)))
    for f in range(3):
        ref, a_ref = _reml_ref(y[:, f], loc.matrix, codes, theta[f, 0], theta[f, 1])
        assert jm.value[f] == pytest.approx(ref, abs=1e-6)
        np.testing.assert_allclose(jm.a[f], a_ref, atol=1e-5)
    # Even in sigma, and the ML objective minus 1/2 log det S at sigma = 0 is the GLM's.
    jm_neg = obj.joint_mode(theta * np.array([[-1.0, 1.0]]), a0, np.zeros((6, 3)))
    np.testing.assert_allclose(jm_neg.value, jm.value, rtol=1e-12)


def test_reml_fit_is_the_maximum_of_the_independent_objective() -> None:
    y, obs = _data(2, var=0.4)
    res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    codes = pd.factorize(obs["donor"], sort=True)[0]
    x = build_design("~ condition + x", None, y.shape[0], "loc", obs=obs).matrix
    interior = np.flatnonzero(res.status.to_numpy() == "converged")
    assert interior.size >= 2
    for f in interior[:2]:
        y_f = y[:, f]

        def neg(t: np.ndarray, y_f: np.ndarray = y_f) -> float:
            return -_reml_ref(y_f, x, codes, t[0], t[1])[0]

        start = np.array([np.sqrt(res.random_var.iloc[f, 0]), res.coef_scale.iloc[f, 0]])
        opt = optimize.minimize(
            neg, start * 1.05, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9}
        )
        assert res.random_var.iloc[f, 0] == pytest.approx(opt.x[0] ** 2, rel=1e-3)
        assert res.coef_scale.iloc[f, 0] == pytest.approx(opt.x[1], abs=1e-3)
        assert res.loglik.iloc[f] == pytest.approx(-opt.fun, abs=1e-6)
        # Fixed effects: the joint mode at the REML estimates.
        a_ref = _reml_ref(y_f, x, codes, opt.x[0], opt.x[1])[1]
        np.testing.assert_allclose(res.coef_loc.iloc[f], a_ref, atol=2e-3)


def test_reml_variance_exceeds_ml_with_few_groups() -> None:
    y, obs = _data(3, n_feat=40, var=0.3)
    ml = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor")
    reml = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    both = (ml.status == "converged") & (reml.status == "converged")
    ratio = reml.random_var.loc[both, "donor"] / ml.random_var.loc[both, "donor"]
    # Balanced linear model: REML / ML = (MSB - c) / ((G - p_b) / G MSB - c) > G / (G - p_b)
    # = 1.5 (MSB the between-group mean square, c = MSW / n_per_group).
    assert 1.4 < ratio.median() < 2.5
    assert reml.settings.method == "reml"


def test_reml_wald_uses_no_ml_to_reml_factor() -> None:
    y, obs = _data(4, n_feat=10)
    res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    assert res.small_sample is not None and res.small_sample.reml
    # The per-gene reference (the moderated default is tested in test_mixed_moderation).
    tab = bg.de.wald(res, coef="condition[T.b]", moderate=False).summary()
    z = res.coef_loc["condition[T.b]"] / res.se_loc["condition[T.b]"]
    # 6 donors, group-level design of rank 2: t(4), no (G - p_b) / G factor.
    expected = 2 * stats.t.sf(np.abs(z), 4)
    fine = (res.status == "converged").to_numpy()
    np.testing.assert_allclose(tab["pvalue"].to_numpy()[fine], expected[fine], rtol=1e-8)


def test_reml_errors() -> None:
    y, obs = _data(5, n_feat=4)
    with pytest.raises(ValueError, match="`reml=True` needs `random_effects`"):
        bg.fit(y, "~ condition", obs=obs, reml=True)
    obs2 = obs.assign(batch=np.where(np.arange(len(obs)) % 2 == 0, "b0", "b1"))
    with pytest.raises(ValueError, match="`reml=True` supports one random-intercept factor"):
        bg.fit(y, "~ condition", obs=obs2, random_effects=["donor", "batch"], reml=True)
    full = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    reduced = bg.fit(y, "~ x", obs=obs, random_effects="donor", reml=True)
    with pytest.raises(ValueError, match="likelihood-ratio tests need maximum-likelihood fits"):
        bg.de.lrt(full=full, reduced=reduced)


def test_reml_separated_feature_is_nonfinite_and_named(caplog: pytest.LogCaptureFixture) -> None:
    y, obs = _data(6, n_feat=3)
    y[(obs["condition"] == "b").to_numpy(), 0] = 0.0  # all zeros in one condition
    with caplog.at_level("WARNING", logger="batchglm"), pytest.warns(UserWarning, match="1 of 3"):
        res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    assert res.status.tolist()[0] == "nonfinite"
    assert (res.status.iloc[1:] != "nonfinite").all()
    assert "feature0" in caplog.text and "reml=False" in caplog.text


def test_moderated_wald_of_reml_fit_has_no_ml_to_reml_factor() -> None:
    """REML fits: the moderated statistic is z^2 (no (G - p_b) / G factor) over s2/s2_post."""
    from batchglm.mixed.moderation import variance_prior

    y, obs = _data(4, n_feat=40)
    res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor", reml=True)
    prior = variance_prior(res)
    tab = bg.de.wald(res, coef="condition[T.b]").summary()
    z = (res.coef_loc["condition[T.b]"] / res.se_loc["condition[T.b]"]).to_numpy()
    df = prior.df + prior.df_prior if np.isfinite(prior.df_prior) else np.inf
    t = np.abs(z) * np.sqrt(prior.s2 / prior.s2_post)
    expected = 2 * stats.t.sf(t, df)
    rows = np.isfinite(prior.s2) & (res.status == "converged").to_numpy()
    rows &= res.random_var["donor"].to_numpy() > 1e-6  # genes at 0 take the donor-level path
    assert rows.sum() >= 10
    np.testing.assert_allclose(tab["pvalue"].to_numpy()[rows], expected[rows], rtol=1e-6)
