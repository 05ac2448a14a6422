"""Analytic Hessian of the several-factor Laplace likelihood against differences.

``batchglm.mixed.joint_derivatives`` differentiates the objective of ``mixed/joint.py``
(donors nested in batches here) twice through the joint modes. References use only values
and the gradient: Richardson-extrapolated central differences (steps ``h``, ``h / 2``) of
the Laplace value for the gradient and of the gradient for the Hessian. New data: 12
unequal donors in 3 batches, a condition and a cell-level covariate, NB with a scale design
that varies within donors, and Poisson.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.mixed.grouping import Grouping
from batchglm.mixed.joint import JointLaplaceObjective
from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import Problem


def _objective(family: str, scale: str | None, seed: int) -> tuple[JointLaplaceObjective, int]:
    rng = np.random.default_rng(seed)
    n_batch, per_batch = 3, 4
    sizes = rng.integers(5, 12, n_batch * per_batch)
    donor = np.repeat(np.arange(sizes.size), sizes)
    batch = donor // per_batch
    n = donor.size
    x = rng.normal(size=n)
    obs = pd.DataFrame(
        {
            "x": x,
            "lane": np.where(rng.integers(0, 2, n) == 1, "l1", "l0"),
            "condition": np.where(donor % 2 == 0, "a", "b"),
        }
    )
    n_feat = 3
    u_d = 0.4 * rng.normal(size=(sizes.size, n_feat))
    u_b = 0.3 * rng.normal(size=(n_batch, n_feat))
    mu = np.exp(1.0 + 0.3 * x[:, None] + u_d[donor] + u_b[batch])
    if family == "nb":
        y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(np.float64)
    else:
        y = rng.poisson(mu).astype(np.float64)
    loc = build_design("~ condition + x", None, n, "loc", obs=obs)
    scale_design = build_design(scale, None, n, "scale", obs=obs)
    problem = Problem(get_family(family), loc, scale_design, np.zeros(n))
    groupings = [
        Grouping("donor", pd.Index(range(sizes.size)), GroupSums(donor.astype(np.intp), 12)),
        Grouping("batch", pd.Index(range(n_batch)), GroupSums(batch.astype(np.intp), n_batch)),
    ]
    return JointLaplaceObjective(problem, y, groupings), problem.k_scale


def _richardson(f: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, i: int) -> np.ndarray:
    def central(h: float) -> np.ndarray:
        e = np.zeros_like(theta)
        e[:, i] = h
        return (f(theta + e) - f(theta - e)) / (2.0 * h)

    return (4.0 * central(5e-4) - central(1e-3)) / 3.0


@pytest.mark.parametrize(("family", "scale"), [("nb", "~ lane"), ("poisson", None)])
def test_joint_hessian_matches_differences_of_the_gradient(family: str, scale: str | None) -> None:
    obj, k_scale = _objective(family, scale, seed=21)
    n_feat = obj.y.shape[1]
    rng = np.random.default_rng(2)
    theta = np.column_stack(
        [np.tile([1.0, 0.1, 0.3], (n_feat, 1)), rng.uniform(0.3, 0.7, (n_feat, 2))]
        + [rng.normal(1.2, 0.2, n_feat) for _ in range(k_scale)]
    )
    _, grad, hess = obj.evaluate(theta, 2)
    assert grad is not None and hess is not None

    def value(t: np.ndarray) -> np.ndarray:
        return obj.evaluate(t, 0)[0][:, None]

    def gradient(t: np.ndarray) -> np.ndarray:
        g = obj.evaluate(t, 2)[1]
        assert g is not None
        return g

    for i in range(theta.shape[1]):
        np.testing.assert_allclose(grad[:, i], _richardson(value, theta, i)[:, 0], atol=1e-6)
        np.testing.assert_allclose(hess[:, :, i], _richardson(gradient, theta, i), atol=1e-6)
    np.testing.assert_allclose(hess, np.swapaxes(hess, 1, 2), rtol=1e-10, atol=1e-10)


def test_analytic_and_differenced_joint_fits_agree() -> None:
    obj, _ = _objective("nb", "~ lane", seed=5)
    n_feat = obj.y.shape[1]
    start = np.column_stack(
        [np.tile([1.0, 0.0, 0.0], (n_feat, 1)), np.full((n_feat, 2), 0.3), np.zeros((n_feat, 2))]
    )
    fast = solve(obj, start, SolverOptions())
    ref, _ = _objective("nb", "~ lane", seed=5)
    ref.differenced = True
    slow = solve(ref, start, SolverOptions())
    assert (fast.status == slow.status).all()
    np.testing.assert_allclose(fast.loglik, slow.loglik, rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.theta, slow.theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fast.hess, slow.hess, rtol=1e-5, atol=1e-6)
