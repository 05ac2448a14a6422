"""The Laplace objective and fit of random-intercept GLMs against independent references.

References written here from scratch: the NB / Poisson log-likelihood with
``scipy.special.gammaln``, each group's mode by ``scipy.optimize.minimize_scalar``, the
Laplace objective maximised per gene by ``scipy.optimize.minimize``, and the marginal
likelihood by adaptive Gauss-Hermite quadrature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

import batchglm as bg
from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.mixed.laplace import LaplaceObjective
from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.objective import Problem
from nb_reference import nb_logpmf_eta


def _data(
    family: str, seed: int, n_groups: int = 6, cells: int = 25, n_feat: int = 4, var: float = 0.3
) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(n_groups), cells)
    n = gid.size
    x = rng.normal(size=n)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in gid],
            "x": x,
            "condition": np.where(gid < n_groups // 2, "a", "b"),
        },
        index=[f"c{i}" for i in range(n)],
    )
    u = rng.normal(size=(n_groups, n_feat)) * np.sqrt(var)
    mu = np.exp(0.8 + 0.3 * x[:, None] + u[gid])
    if family == "nb":
        y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu))
    else:
        y = rng.poisson(mu)
    return y.astype(np.float64), obs


def _cond_ll(family: str, y: np.ndarray, eta: np.ndarray, log_r: float) -> np.ndarray:
    """Per-observation log-likelihood, written independently of batchglm."""
    mu = np.exp(eta)
    if family == "poisson":
        return y * eta - mu - special.gammaln(y + 1)
    return nb_logpmf_eta(y, eta, log_r)


def _group_joint(
    family: str,
    y: np.ndarray,
    eta: np.ndarray,
    gid: np.ndarray,
    u: np.ndarray,
    sd: float,
    log_r: float,
) -> np.ndarray:
    """Per-group ``sum_j ll_j(eta_j + u_g) - u_g^2 / (2 sd^2)``."""
    ll = _cond_ll(family, y, eta + u[gid], log_r)
    return np.bincount(gid, ll, minlength=u.size) - 0.5 * u * u / sd**2


def _laplace_ref(
    family: str,
    y: np.ndarray,
    x: np.ndarray,
    gid: np.ndarray,
    a: np.ndarray,
    log_var: float,
    log_r: float,
) -> float:
    """Laplace marginal log-likelihood of one gene: modes by scipy's Newton on numeric
    derivatives, the curvature at the mode in closed form.

    (A numeric curvature, the second difference with step 1e-4, carried rounding noise of
    about 1e-8 into the value, and second differences of the value with step 1e-3 then
    moved the reference standard errors by up to 1 % between points 1e-13 apart.)
    """
    sd = np.exp(0.5 * log_var)
    eta = x @ a
    n_groups = int(gid.max()) + 1
    h = 1e-4

    def joint(u: np.ndarray) -> np.ndarray:
        return _group_joint(family, y, eta, gid, u, sd, log_r)

    def d1(u: np.ndarray) -> np.ndarray:
        return (joint(u + h) - joint(u - h)) / (2 * h)

    def d2(u: np.ndarray) -> np.ndarray:
        return (joint(u + h) - 2 * joint(u) + joint(u - h)) / h**2

    u_hat = optimize.newton(d1, np.zeros(n_groups), fprime=d2, tol=1e-9, maxiter=100, disp=False)
    # -d^2/du^2 of the group's joint density: NB (y + r) mu r / (mu + r)^2, Poisson mu.
    mu = np.exp(eta + u_hat[gid])
    if family == "poisson":
        info = mu
    else:
        r = np.exp(log_r)
        info = (y + r) * mu * r / (mu + r) ** 2
    curv = np.bincount(gid, info, minlength=n_groups) + 1.0 / sd**2
    return float((joint(u_hat) - 0.5 * np.log(sd**2 * curv)).sum())


def _agq(
    family: str,
    y: np.ndarray,
    x: np.ndarray,
    gid: np.ndarray,
    a: np.ndarray,
    var: float,
    log_r: float,
    n_nodes: int = 40,
) -> float:
    """Marginal log-likelihood by adaptive Gauss-Hermite quadrature around each mode."""
    nodes, weights = np.polynomial.hermite.hermgauss(n_nodes)
    total = 0.0
    for g in np.unique(gid):
        m = gid == g
        eta = x[m] @ a

        def log_joint(u: np.ndarray, eta: np.ndarray = eta, yy: np.ndarray = y[m]) -> np.ndarray:
            ll = _cond_ll(family, yy[:, None], eta[:, None] + u[None, :], log_r).sum(axis=0)
            return ll - 0.5 * u * u / var - 0.5 * np.log(2 * np.pi * var)

        u_hat = optimize.minimize_scalar(
            lambda u: -log_joint(np.array([u]))[0], bounds=(-10, 10), method="bounded"
        ).x
        h = 1e-4
        f = log_joint(np.array([u_hat - h, u_hat, u_hat + h]))
        scale = 1.0 / np.sqrt(-(f[0] - 2 * f[1] + f[2]) / h**2)
        u = u_hat + np.sqrt(2.0) * scale * nodes
        vals = log_joint(u) + nodes**2 + np.log(weights * np.sqrt(2.0) * scale)
        total += special.logsumexp(vals)
    return float(total)


@pytest.mark.parametrize("family", ["nb", "poisson"])
def test_gradient_matches_finite_differences(family: str) -> None:
    y, obs = _data(family, 1, n_feat=3)
    n = y.shape[0]
    x = np.column_stack([np.ones(n), obs.x])
    fam = get_family(family)
    prob = Problem(
        fam, build_design(x, None, n, "loc"), build_design(None, None, n, "scale"), np.zeros(n)
    )
    gid = pd.factorize(obs.donor)[0].astype(np.intp)
    obj = LaplaceObjective(prob, y, GroupSums(gid, 6))
    cols = [np.full(3, 0.7), np.full(3, 0.2), np.full(3, 0.5)]
    theta = np.column_stack(cols + ([np.full(3, 1.2)] if family == "nb" else []))
    _, grad, _ = obj.evaluate(theta, 2)
    assert grad is not None
    for i in range(theta.shape[1]):
        step = np.zeros(theta.shape[1])
        step[i] = 1e-4
        fd = (obj.evaluate(theta + step, 0)[0] - obj.evaluate(theta - step, 0)[0]) / 2e-4
        np.testing.assert_allclose(grad[:, i], fd, rtol=1e-6, atol=1e-7)
    # The value is the Laplace approximation computed independently.
    ll = obj.evaluate(theta, 0)[0]
    for f in range(3):
        ref = _laplace_ref(
            family,
            y[:, f],
            x,
            gid,
            theta[f, :2],
            np.log(0.25),
            theta[f, 3] if family == "nb" else 0.0,
        )
        assert ll[f] == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("family", ["nb", "poisson"])
def test_analytic_hessian_matches_second_differences_of_the_value(family: str) -> None:
    # NB with a scale design that varies within groups, a covariate, a group-level column
    # and one sigma near its boundary: every block of the analytic Hessian is exercised.
    y, obs = _data(family, 4, n_feat=3)
    n = y.shape[0]
    x = np.column_stack([np.ones(n), obs.x, obs.condition == "b"])
    z = np.column_stack([np.ones(n), obs.x > 0]) if family == "nb" else None
    fam = get_family(family)
    prob = Problem(
        fam, build_design(x, None, n, "loc"), build_design(z, None, n, "scale"), np.zeros(n)
    )
    gid = pd.factorize(obs.donor)[0].astype(np.intp)
    obj = LaplaceObjective(prob, y, GroupSums(gid, 6))
    cols = [np.full(3, 0.7), np.full(3, 0.2), np.full(3, -0.1), np.array([0.5, -0.3, 0.02])]
    if family == "nb":
        cols += [np.full(3, 1.2), np.full(3, 0.3)]
    theta = np.column_stack(cols)
    _, _, hess = obj.evaluate(theta, 2)
    assert hess is not None
    k = theta.shape[1]
    h = 2e-4  # small: the fourth derivative in sigma is large near sigma = 0
    eye = np.eye(k) * h

    def value(point: np.ndarray) -> np.ndarray:
        return obj.evaluate(point, 0)[0]

    ref = np.zeros_like(hess)
    for i in range(k):
        for j in range(i, k):
            ref[:, i, j] = ref[:, j, i] = (
                value(theta + eye[i] + eye[j])
                - value(theta + eye[i] - eye[j])
                - value(theta - eye[i] + eye[j])
                + value(theta - eye[i] - eye[j])
            ) / (4 * h * h)
    scale = np.abs(ref).max(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(hess / scale, ref / scale, atol=2e-5)


@pytest.mark.parametrize("family", ["nb", "poisson"])
def test_fit_is_the_scipy_maximum_of_the_same_objective(family: str) -> None:
    y, obs = _data(family, 2, n_feat=3)
    res = bg.fit(y, "~ x", obs=obs, random_effects="donor", family=family)
    assert res.converged.all()
    n = y.shape[0]
    x = np.column_stack([np.ones(n), obs.x])
    gid = pd.factorize(obs.donor)[0]
    for f in range(3):
        ours = [*res.coef_loc.iloc[f], np.log(res.random_var.iloc[f, 0])]
        if family == "nb":
            ours.append(res.coef_scale.iloc[f, 0])

        def neg(p: np.ndarray, yy: np.ndarray = y[:, f]) -> float:
            return -_laplace_ref(family, yy, x, gid, p[:2], p[2], p[3] if family == "nb" else 0.0)

        # Our estimate is the maximum of the independently computed objective: its numeric
        # gradient vanishes, its Hessian is negative definite, and a Newton step from it
        # gains nothing. Our log-likelihood is that objective's value there.
        k = len(ours)
        p0 = np.array(ours)
        assert res.loglik.iloc[f] == pytest.approx(-neg(p0), abs=1e-6)
        h = 1e-3
        eye = np.eye(k) * h
        grad = np.array([(neg(p0 + eye[i]) - neg(p0 - eye[i])) / (2 * h) for i in range(k)])
        hess = np.zeros((k, k))
        for i in range(k):
            for j in range(i, k):
                hess[i, j] = hess[j, i] = (
                    neg(p0 + eye[i] + eye[j])
                    - neg(p0 + eye[i] - eye[j])
                    - neg(p0 - eye[i] + eye[j])
                    + neg(p0 - eye[i] - eye[j])
                ) / (4 * h * h)
        assert np.all(np.linalg.eigvalsh(hess) > 0)
        step = np.linalg.solve(hess, grad)
        assert np.abs(step).max() < 1e-3
        assert grad @ step < 1e-6
        se = np.sqrt(np.diag(np.linalg.inv(hess)))[:2]
        np.testing.assert_allclose(res.se_loc.iloc[f], se, rtol=5e-3)


def test_laplace_is_close_to_quadrature() -> None:
    y, obs = _data("nb", 3, cells=40, n_feat=2)
    res = bg.fit(y, "~ x", obs=obs, random_effects="donor")
    n = y.shape[0]
    x = np.column_stack([np.ones(n), obs.x])
    gid = pd.factorize(obs.donor)[0]
    for f in range(2):
        agq = _agq(
            "nb",
            y[:, f],
            x,
            gid,
            res.coef_loc.iloc[f].to_numpy(),
            res.random_var.iloc[f, 0],
            res.coef_scale.iloc[f, 0],
        )
        # Laplace's error shrinks with the group size; 40 observations per group here.
        assert abs(res.loglik.iloc[f] - agq) < 0.02


def test_results_and_boundary() -> None:
    rng = np.random.default_rng(4)
    y, obs = _data("nb", 4, n_groups=8, cells=60, n_feat=6, var=0.4)
    # Gene 0: every donor has the same counts, so there is no donor variation at all.
    one = rng.negative_binomial(4.0, 4.0 / 7.0, 60)
    y[:, 0] = np.tile(one, 8)
    res = bg.fit(y, "~ 1", obs=obs, random_effects="donor")
    glm = bg.fit(y, "~ 1", obs=obs)
    assert res.converged.all()
    assert list(res.random_var.columns) == ["donor"]
    modes = res.random_effects("donor")
    assert modes.shape == (8, 6) and list(modes.index) == [f"d{g}" for g in range(8)]
    assert res.status.iloc[0] == "random_var_at_bound"
    # At zero variance the model is the GLM: same likelihood, coefficients and errors.
    assert res.random_var.iloc[0, 0] < 1e-6
    assert res.loglik.iloc[0] == pytest.approx(glm.loglik.iloc[0], abs=1e-6)
    np.testing.assert_allclose(res.coef_loc.iloc[0], glm.coef_loc.iloc[0], atol=1e-6)
    np.testing.assert_allclose(res.se_loc.iloc[0], glm.se_loc.iloc[0], rtol=1e-4)
    assert (res.status.iloc[1:] == "converged").all()
    assert (res.random_var.iloc[1:, 0] > 0.05).all()
    # The random intercepts explain what the GLM cannot.
    assert (res.loglik.iloc[1:] > glm.loglik.iloc[1:] + 1.0).all()
    # Modes follow the donors' observed log mean ratios (shrunken towards zero).
    ratio = np.log(pd.DataFrame(y).groupby(obs.donor.to_numpy()).mean() / y.mean(axis=0)).iloc[
        :, 1:
    ]
    for f in range(1, 6):
        assert np.corrcoef(modes.iloc[:, f], ratio.iloc[:, f - 1])[0, 1] > 0.95


def test_errors() -> None:
    y, obs = _data("nb", 5, n_feat=2)
    with pytest.raises(ValueError, match="needs family 'nb' or 'poisson'"):
        bg.fit(np.log1p(y), "~ x", obs=obs, random_effects="donor", family="normal")
    with pytest.raises(ValueError, match="is not in `obs`"):
        bg.fit(y, "~ x", obs=obs, random_effects="batch")
    with pytest.raises(ValueError, match="no `obs` was given"):
        bg.fit(y, np.ones((y.shape[0], 1)), random_effects="donor")
    with pytest.raises(ValueError, match="one or several distinct columns"):
        bg.fit(y, "~ x", obs=obs, random_effects=["donor", "donor"])
    with pytest.raises(ValueError, match="one or several distinct columns"):
        bg.fit(y, "~ x", obs=obs, random_effects=[])
    with pytest.raises(ValueError, match="already coded by fixed effects"):
        bg.fit(y, "~ x + donor", obs=obs, random_effects="donor")
    with pytest.raises(ValueError, match="between 2 and n_obs - 1"):
        bg.fit(y, "~ x", obs=obs.assign(one="a"), random_effects="one")
    with pytest.raises(ValueError, match="missing labels"):
        bg.fit(y, "~ x", obs=obs.assign(d2=obs.donor.where(obs.index != "c0")), random_effects="d2")
    with pytest.raises(ValueError, match="`fixed_scale` must be None"):
        bg.fit(y, "~ x", obs=obs, random_effects="donor", fixed_scale=np.zeros(2))
    bad = y.copy()
    bad[0, 1] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        bg.fit(bad, "~ x", obs=obs, random_effects="donor")
    glm = bg.fit(y, "~ x", obs=obs)
    with pytest.raises(ValueError, match="this fit has no random effects"):
        glm.random_effects()
    with pytest.raises(ValueError, match="this fit has no random effects"):
        _ = glm.random_var
    res = bg.fit(y, "~ condition + x", obs=obs, random_effects="donor")
    with pytest.raises(ValueError, match="not a random-effects factor"):
        res.random_effects("batch")
    with pytest.raises(ValueError, match="must be 'mle' for fits with random effects"):
        bg.de.wald(res, coef="condition[T.b]", dispersion="map", data=y)
    red = bg.fit(y, "~ x", obs=obs)
    with pytest.raises(ValueError, match="must have the same random effects"):
        bg.de.lrt(full=res, reduced=red)


def test_sparse_chunks_and_threads_give_the_same_fit() -> None:
    from scipy import sparse

    y, obs = _data("nb", 6, n_feat=5)
    dense = bg.fit(y, "~ x", obs=obs, random_effects="donor", n_jobs=1)
    chunked = bg.fit(
        sparse.csr_matrix(y), "~ x", obs=obs, random_effects="donor", chunk_size=2, n_jobs=2
    )
    np.testing.assert_allclose(chunked.coef_loc, dense.coef_loc, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.random_var, dense.random_var, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(chunked.loglik, dense.loglik, rtol=1e-12)
    np.testing.assert_allclose(chunked.random_effects(), dense.random_effects(), atol=1e-10)


@pytest.mark.parametrize("family", ["nb", "poisson"])
def test_joint_objective_for_several_factors(family: str) -> None:
    from batchglm.mixed.grouping import parse_random_effects
    from batchglm.mixed.joint import JointLaplaceObjective

    rng = np.random.default_rng(7)
    n, n_feat = 144, 3
    donor = np.repeat(np.arange(8), 18)
    plate = np.tile(np.arange(3), 48)  # plates cross donors
    obs = pd.DataFrame({"donor": [f"d{d}" for d in donor], "plate": [f"p{p}" for p in plate]})
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    u_donor = rng.normal(0, 0.4, (8, n_feat))
    u_plate = rng.normal(0, 0.3, (3, n_feat))
    mu = np.exp(0.6 + u_donor[donor] + u_plate[plate])
    y = rng.poisson(mu).astype(np.float64)
    loc = build_design(x, None, n, "loc")
    prob = Problem(get_family(family), loc, build_design(None, None, n, "scale"), np.zeros(n))
    gd, gp = parse_random_effects(["donor", "plate"], obs, n, loc)
    scale = [np.full(n_feat, 1.5)] if family == "nb" else []
    # One factor: the joint objective is the one-factor objective.
    theta1 = np.column_stack(
        [np.full(n_feat, 0.5), np.full(n_feat, 0.1), np.full(n_feat, 0.4), *scale]
    )
    one = LaplaceObjective(prob, y, gd.sums).evaluate(theta1, 2)
    joint = JointLaplaceObjective(prob, y, [gd]).evaluate(theta1, 2)
    np.testing.assert_allclose(joint[0], one[0], rtol=1e-12)
    np.testing.assert_allclose(joint[1], one[1], rtol=1e-9, atol=1e-10)
    # Two crossed factors: the analytic gradient against differences of the value, and the
    # value against the independent Laplace approximation at sigma_plate -> 0.
    theta2 = np.column_stack([theta1[:, :3], np.full(n_feat, 0.3), *scale])
    obj = JointLaplaceObjective(prob, y, [gd, gp])
    _, grad, hess = obj.evaluate(theta2, 2)
    assert grad is not None and hess is not None
    for i in range(theta2.shape[1]):
        step = np.zeros(theta2.shape[1])
        step[i] = 1e-4
        fd = (obj.evaluate(theta2 + step, 0)[0] - obj.evaluate(theta2 - step, 0)[0]) / 2e-4
        np.testing.assert_allclose(grad[:, i], fd, rtol=1e-5, atol=1e-5)
    zero = theta2.copy()
    zero[:, 3] = 0.0
    ll0 = obj.evaluate(zero, 0)[0]
    for f in range(n_feat):
        ref = _laplace_ref(
            family,
            y[:, f],
            x,
            donor,
            zero[f, :2],
            np.log(0.16),
            zero[f, 4] if family == "nb" else 0.0,
        )
        assert ll0[f] == pytest.approx(ref, abs=1e-5)


def test_compiled_higher_derivatives_match_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchglm.families import nb_kernel
    from batchglm.mixed.third_derivatives import higher_derivatives

    rng = np.random.default_rng(5)
    y = rng.poisson(3.0, size=(700, 100)).astype(np.float64)  # 70,000 entries: compiled
    eta = rng.normal(1.0, 1.0, size=y.shape)
    for eta_scale in (rng.normal(1.0, 0.5, size=(1, 100)), rng.normal(1.0, 0.5, size=y.shape)):
        assert nb_kernel.applies(y, eta, eta_scale)
        fast = higher_derivatives("nb", y, eta, eta_scale)
        monkeypatch.setattr(nb_kernel, "ENABLED", False)
        slow = higher_derivatives("nb", y, eta, eta_scale)
        monkeypatch.setattr(nb_kernel, "ENABLED", True)
        for name in ("d3", "c3", "d4", "c4", "e3", "e4"):
            np.testing.assert_allclose(
                getattr(fast, name), getattr(slow, name), rtol=1e-12, atol=1e-300
            )
