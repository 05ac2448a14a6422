"""Analytic Hessian of the several-factor Laplace likelihood against differences.

``batchglm.mixed.joint_derivatives`` differentiates the objective of ``mixed/joint.py``
(donors nested in batches here) twice through the joint modes. References use only values
and the gradient: Richardson-extrapolated central differences (steps ``h``, ``h / 2``) of
the Laplace value for the gradient and of the gradient for the Hessian. New data: 12
unequal donors in 3 batches, a condition and a cell-level covariate, NB with a scale design
that varies within donors, and Poisson.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchglm.mixed.grouping import Grouping
from batchglm.mixed.joint import JointLaplaceObjective
from batchglm.solvers.linalg import GroupSums
from batchglm.solvers.newton import SolverOptions, solve
from mixed_reference import cell_obs, draw_counts, loc_scale_problem, richardson, value_and_gradient


def _objective(family: str, scale: str | None, seed: int) -> tuple[JointLaplaceObjective, int]:
    rng = np.random.default_rng(seed)
    n_batch, per_batch = 3, 4
    sizes = rng.integers(5, 12, n_batch * per_batch)
    donor = np.repeat(np.arange(sizes.size), sizes)
    batch = donor // per_batch
    x, obs = cell_obs(rng, donor)
    n_feat = 3
    u_d = 0.4 * rng.normal(size=(sizes.size, n_feat))
    u_b = 0.3 * rng.normal(size=(n_batch, n_feat))
    y = draw_counts(rng, family, np.exp(1.0 + 0.3 * x[:, None] + u_d[donor] + u_b[batch]))
    problem = loc_scale_problem(family, scale, obs)
    groupings = [
        Grouping("donor", pd.Index(range(sizes.size)), GroupSums(donor.astype(np.intp), 12)),
        Grouping("batch", pd.Index(range(n_batch)), GroupSums(batch.astype(np.intp), n_batch)),
    ]
    return JointLaplaceObjective(problem, y, groupings), problem.k_scale


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

    value, gradient = value_and_gradient(obj)
    for i in range(theta.shape[1]):
        np.testing.assert_allclose(grad[:, i], richardson(value, theta, i, 1e-3)[:, 0], atol=1e-6)
        np.testing.assert_allclose(hess[:, :, i], richardson(gradient, theta, i, 1e-3), atol=1e-6)
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
