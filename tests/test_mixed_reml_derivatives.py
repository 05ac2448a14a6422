"""Analytic derivatives of the restricted Laplace likelihood against differences of its value.

``batchglm.mixed.reml_derivatives`` differentiates ``L_R(sigma, b)`` through the joint mode
of fixed effects and random intercepts. The references here use only the value (each one a
joint mode solved to rounding): Richardson-extrapolated central differences (steps ``h``
and ``h / 2``, error ``O(h^4)``) of the value for the gradient and of the analytic gradient
for the Hessian (whose gradient is itself checked first), and of ``a*`` for ``d a* /
d theta``. New data: five unequal donors, a cell-level covariate, a condition, NB with a
scale design that varies within donors, NB with one size, Poisson, and a variance near 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchglm.mixed.reml import RemlObjective
from batchglm.solvers.linalg import GroupSums
from mixed_reference import cell_obs, draw_counts, loc_scale_problem, richardson, value_and_gradient

_SIZES = np.array([7, 12, 9, 15, 6])


def _objective(family: str, scale: str | None, seed: int) -> tuple[RemlObjective, int]:
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(_SIZES.size), _SIZES)
    x, obs = cell_obs(rng, gid)
    n_feat = 4
    u = rng.normal(size=(_SIZES.size, n_feat)) * 0.5
    y = draw_counts(rng, family, np.exp(1.0 + 0.3 * x[:, None] + u[gid]))
    problem = loc_scale_problem(family, scale, obs)
    groups = GroupSums(gid.astype(np.intp), _SIZES.size)
    a0 = np.tile([1.0, 0.0, 0.0], (n_feat, 1))
    return RemlObjective(problem, y, groups, a0), problem.k_scale


@pytest.mark.parametrize(
    ("family", "scale", "sigma"),
    [("nb", "~ lane", 0.5), ("nb", None, 0.5), ("poisson", None, 0.5), ("nb", "~ lane", 0.03)],
)
def test_reml_derivatives_match_differences_of_the_value(
    family: str, scale: str | None, sigma: float
) -> None:
    obj, k_scale = _objective(family, scale, seed=31)
    n_feat = obj.y.shape[1]
    rng = np.random.default_rng(5)
    theta = np.column_stack(
        [sigma * rng.uniform(0.6, 1.4, n_feat)]
        + [rng.normal(1.3, 0.3, n_feat) for _ in range(k_scale)]
    )
    ll, grad, hess = obj.evaluate(theta, 2)
    assert grad is not None and hess is not None and obj.sens is not None
    sens = obj.sens.copy()
    assert np.isfinite(ll).all()

    value, gradient = value_and_gradient(obj)

    def a_star(t: np.ndarray) -> np.ndarray:
        return obj.joint_mode(t, obj.a, obj.modes).a

    for i in range(theta.shape[1]):
        ref = richardson(value, theta, i, 2e-3)[:, 0]
        np.testing.assert_allclose(grad[:, i], ref, rtol=1e-7, atol=1e-7)
    for i in range(theta.shape[1]):
        ref_h = richardson(gradient, theta, i, 2e-3)
        np.testing.assert_allclose(hess[:, :, i], ref_h, rtol=1e-6, atol=1e-6)
        ref_s = richardson(a_star, theta, i, 2e-3)
        np.testing.assert_allclose(sens[:, :, i], ref_s, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hess, np.swapaxes(hess, 1, 2), rtol=1e-10, atol=1e-10)


def test_analytic_and_differenced_reml_fits_agree() -> None:
    """The fit with analytic derivatives is the fit with differenced ones (to their error)."""
    obj, _ = _objective("nb", "~ lane", seed=8)
    from batchglm.solvers.newton import SolverOptions, solve

    n_feat = obj.y.shape[1]
    start = np.column_stack([np.full(n_feat, 0.4), np.full(n_feat, 1.0), np.zeros(n_feat)])
    fast = solve(obj, start, SolverOptions())
    obj_d, _ = _objective("nb", "~ lane", seed=8)
    obj_d.differenced = True
    slow = solve(obj_d, start, SolverOptions())
    # Every feature converges (one at NB's scale bound, where the differenced derivatives
    # stall: their noise is as large as the flat likelihood's slope there).
    assert np.isin(fast.status, [0, 1]).all() and (fast.status == 0).sum() >= 3
    both = (fast.status == 0) & (slow.status == 0)
    np.testing.assert_allclose(fast.loglik[both], slow.loglik[both], rtol=0, atol=1e-8)
    np.testing.assert_allclose(fast.theta[both], slow.theta[both], rtol=1e-4, atol=1e-5)
    assert (fast.loglik >= slow.loglik - 1e-9).all()
    # The analytic gradient vanishes at the interior optima found with it.
    _, grad, _ = obj.evaluate(fast.theta, 2)
    assert grad is not None
    assert np.abs(grad[fast.status == 0]).max() < 1e-6


@pytest.mark.parametrize(("family", "scale"), [("nb", "~ lane"), ("poisson", None)])
def test_compiled_moments_give_the_per_observation_derivatives(
    family: str, scale: str | None
) -> None:
    """The per-group moment tensors of the compiled pass reproduce the NumPy formulas."""
    obj, k_scale = _objective(family, scale, seed=44)
    assert obj.moments is not None  # the compiled path applies to these designs
    n_feat = obj.y.shape[1]
    rng = np.random.default_rng(9)
    theta = np.column_stack(
        [rng.uniform(0.2, 0.9, n_feat)] + [rng.normal(1.0, 0.3, n_feat) for _ in range(k_scale)]
    )
    _, grad, hess = obj.evaluate(theta, 2)
    assert obj.sens is not None
    sens = obj.sens.copy()
    ref, _ = _objective(family, scale, seed=44)
    ref.moments = None
    _, grad_ref, hess_ref = ref.evaluate(theta, 2)
    assert ref.sens is not None
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hess, hess_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sens, ref.sens, rtol=1e-10, atol=1e-12)


def test_large_blocks_take_the_per_observation_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks whose moment tensors would exceed the memory cap use the NumPy formulas."""
    from batchglm.mixed import reml_derivatives

    obj, _ = _objective("nb", "~ lane", seed=12)
    assert obj.moments is not None and obj.moments.fits(_SIZES.size, obj.y.shape[1])
    theta = np.column_stack([np.full(4, 0.4), np.full(4, 1.1), np.full(4, 0.2)])
    calls: list[int] = []
    original = reml_derivatives.reml_derivatives_moments

    def spy(*args: object) -> object:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr("batchglm.mixed.reml.reml_derivatives_moments", spy)
    _, grad, _ = obj.evaluate(theta, 2)
    assert calls == [1]
    monkeypatch.setattr(reml_derivatives, "MAX_TENSOR_BYTES", 0)
    assert not obj.moments.fits(_SIZES.size, 4)
    _, grad_np, _ = obj.evaluate(theta, 2)
    assert calls == [1]  # the NumPy path this time
    assert grad is not None and grad_np is not None
    np.testing.assert_allclose(grad_np, grad, rtol=1e-10, atol=1e-10)
