"""The Newton engine on objectives other than the joint fit: bounds, releases, step rule.

References are closed forms (toy objectives with known maximisers) and an independent
adjusted profile likelihood built from scipy's NB log-pmf and a dense log-determinant.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special, stats

from batchglm.dispersion.adjusted_profile import AdjustedProfile, LogNormalPrior, ScaleProblem
from batchglm.dispersion.cox_reid import cox_reid_log_r
from batchglm.solvers.newton import SolverOptions, solve
from batchglm.solvers.objective import Evaluation
from batchglm.solvers.status import Status


class _Toy:
    """``-e^4`` or ``-log cosh e`` with ``e = b - target``: maximum at ``target``."""

    def __init__(self, target: np.ndarray, kind: str) -> None:
        self.target, self.kind = target, kind
        self._problem = ScaleProblem(np.ones((1, 1)))

    @property
    def problem(self) -> ScaleProblem:
        return self._problem

    def subset(self, keep: np.ndarray) -> _Toy:
        return _Toy(self.target[keep], self.kind)

    def evaluate_terms(self, theta: np.ndarray, order: int) -> Evaluation:
        e = theta[:, 0] - self.target
        if self.kind == "quartic":
            ll, g, h = -(e**4), -4.0 * e**3, -12.0 * e**2
        else:
            ll, g, h = -np.log(np.cosh(e)), -np.tanh(e), -1.0 / np.cosh(e) ** 2
        return Evaluation(ll, g[:, None], h[:, None, None], np.abs(ll))

    def evaluate(self, theta: np.ndarray, order: int) -> tuple:
        ev = self.evaluate_terms(theta, order)
        return ev.ll, ev.grad, ev.hess


def test_step_tolerance_locates_the_maximiser_of_a_flat_objective():
    target = np.array([0.3, -1.7, 2.0])
    toy = _Toy(target, "quartic")
    start = (target + 1.0)[:, None]
    plain = solve(toy, start, SolverOptions(), bounds=(-10.0, 10.0))
    # The decrement alone stops where the gain left is tiny but the maximiser is far.
    assert np.all(plain.status == Status.CONVERGED)
    assert np.abs(plain.theta[:, 0] - target).min() > 1e-4
    tight = solve(toy, start, SolverOptions(step_tol=1e-10), bounds=(-10.0, 10.0))
    assert np.all(tight.status == Status.CONVERGED)
    np.testing.assert_allclose(tight.theta[:, 0], target, atol=1e-8)


def test_per_feature_bounds_and_released_bounds():
    target = np.array([0.0, 0.0, 5.0])
    toy = _Toy(target, "logcosh")
    # From b = 2 the Newton step (-sinh(4) / 2) overshoots onto the lower bound -1.
    start = np.array([[2.0], [2.0], [0.0]])
    lo = np.array([-1.0, -1.0, -3.0])
    hi = np.array([4.0, 4.0, 3.0])  # feature 2: its maximum lies beyond its own bound
    kept = solve(toy, start, SolverOptions(max_releases=0), bounds=(lo, hi))
    assert kept.theta[0, 0] == pytest.approx(-1.0)
    # Held on a bound the objective rises away from: not an optimum, so not at_bound.
    assert kept.status[0] == Status.STALLED and kept.active[0, 0]
    freed = solve(toy, start, SolverOptions(max_releases=3), bounds=(lo, hi))
    np.testing.assert_allclose(freed.theta[:2, 0], 0.0, atol=1e-8)
    assert np.all(freed.status[:2] == Status.CONVERGED) and not freed.active[0, :2].any()
    # The feature whose maximum lies beyond its bound stays there, whatever the option.
    for sol in (kept, freed):
        assert sol.theta[2, 0] == pytest.approx(3.0)
        assert sol.status[2] == Status.SCALE_AT_BOUND


def _apl_reference(y, mu, x, z, b, prior=None):
    # Independent: scipy's NB log-pmf (without -log y!) and a dense log-determinant.
    r = np.exp(z @ b)
    ll = stats.nbinom.logpmf(y, r, r / (r + mu)).sum() + special.gammaln(y + 1.0).sum()
    w = mu / (1.0 + mu / r)
    value = ll - 0.5 * np.linalg.slogdet(x.T @ (w[:, None] * x))[1]
    if prior is not None:
        mean, var = prior
        value -= (b[0] + mean) ** 2 / (2.0 * var)
    return value


def _data(seed, n_rep=4, n_feat=6, same_means=True):
    rng = np.random.default_rng(seed)
    cond = np.repeat([0.0, 1.0, 0.0, 1.0], n_rep)
    batch = np.repeat([0.0, 0.0, 1.0, 1.0], n_rep)
    n = cond.size
    x = np.column_stack([np.ones(n), cond])
    z = np.column_stack([np.ones(n), batch])
    base = np.exp(rng.uniform(1.0, 5.0, n_feat))
    mu = base * np.exp(0.8 * cond)[:, None] * np.ones((n, n_feat))
    if not same_means:
        # Feature 1 gets its own per-observation means (not one fit's: equal design rows,
        # different means): rows must not be summed into cells for it.
        mu[:, 1] *= np.exp(rng.normal(0.0, 0.3, n))
    r = 3.0
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    return y, mu, x, z


@pytest.mark.parametrize("same_means", [True, False])
def test_adjusted_profile_on_cells_matches_an_independent_formula(same_means):
    y, mu, x, z = _data(1, same_means=same_means)
    apl = AdjustedProfile(y, mu, x * [1.0, 250.0], z)
    if same_means:
        assert apl.n is not None and apl.y.shape[0] == 4  # cells of 4 observations
    else:
        assert apl.n is None
    b = np.column_stack([np.linspace(0.5, 2.0, 6), np.linspace(-1.0, 1.0, 6)])
    value, grad, hess = apl(b, 2)
    x_given = x * [1.0, 250.0]
    eps = 1e-4
    for j in range(6):
        ref = _apl_reference(y[:, j], mu[:, j], x_given, z, b[j])
        assert value[j] == pytest.approx(ref, rel=1e-10, abs=1e-9)
        for k in range(2):
            e = np.zeros(2)
            e[k] = eps
            up = _apl_reference(y[:, j], mu[:, j], x_given, z, b[j] + e)
            down = _apl_reference(y[:, j], mu[:, j], x_given, z, b[j] - e)
            assert grad[j, k] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-6)
            # second differences need a wider step (the values' rounding is divided by it)
            up = _apl_reference(y[:, j], mu[:, j], x_given, z, b[j] + 20 * e)
            down = _apl_reference(y[:, j], mu[:, j], x_given, z, b[j] - 20 * e)
            fd = (up - 2 * ref + down) / (20 * eps) ** 2
            assert hess[j, k, k] == pytest.approx(fd, rel=1e-5, abs=1e-5)


def test_map_estimate_matches_a_scalar_optimiser_with_the_prior():
    y, mu, x, _ = _data(2, n_rep=3, n_feat=8)
    one = np.ones((y.shape[0], 1))
    prior_mean = np.log(np.full(8, 0.05))
    prior = LogNormalPrior(prior_mean, 0.5)
    apl = AdjustedProfile(y, mu, x, one, prior)
    t = np.linspace(-1.0, 3.0, 8)[:, None]
    value, grad, hess = apl(t, 2)
    for j in range(8):
        ref = _apl_reference(y[:, j], mu[:, j], x, one, t[j], (prior_mean[j], 0.5))
        assert value[j] == pytest.approx(ref, rel=1e-10)
    got = cox_reid_log_r(y, mu, x, prior=prior)
    for j in range(8):
        best = optimize.minimize_scalar(
            lambda s, j=j: -_apl_reference(y[:, j], mu[:, j], x, one, [s], (prior_mean[j], 0.5)),
            bounds=(-3.0, 15.0),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert got[j] == pytest.approx(best.x, abs=1e-6)


def test_prior_needs_one_dispersion_per_feature():
    y, mu, x, z = _data(3)
    with pytest.raises(ValueError, match=r"a prior on log alpha needs one dispersion per feature"):
        AdjustedProfile(y, mu, x, z, LogNormalPrior(np.zeros(y.shape[1]), 1.0))


def test_scale_design_walks_off_the_poisson_plateau():
    # Batch 0 over-dispersed (r = 2), batch 1 Poisson: started with both predictors far out
    # on the flat stretch towards the Poisson limit, batch 0 must come back to its interior
    # maximum (a walk whose early gains are far below 1e-6 per step).
    from batchglm.dispersion import cox_reid_scale
    from batchglm.dispersion.cox_reid_design import scale_bounds

    rng = np.random.default_rng(11)
    n = 16
    batch = np.tile([0.0, 1.0], n // 2)
    x = np.ones((n, 1))
    z = np.column_stack([np.ones(n), batch])
    f = 3
    mean = np.array([3.0, 5.0, 8.0])
    y = np.where(
        batch[:, None] == 0,
        rng.negative_binomial(2.0, 2.0 / (2.0 + mean), (n, f)),
        rng.poisson(mean, (n, f)),
    ).astype(np.float64)
    mu = np.broadcast_to(y.mean(axis=0), (n, f)).copy()
    sol = cox_reid_scale(y, mu, x, z, start=np.tile([17.7, 0.0], (f, 1)))
    lo, hi = scale_bounds(n)
    for j in range(f):

        def neg(t, j=j):
            return -_apl_reference(y[:, j], mu[:, j], x, z, np.array([t[0], t[1] - t[0]]))

        ref = optimize.minimize(neg, [1.0, 5.0], method="L-BFGS-B", bounds=[(lo, hi)] * 2)
        ours = np.array([sol.b[j, 0], sol.b[j, 0] + sol.b[j, 1]])
        assert -neg(ours) >= -ref.fun - 1e-8
        if ref.x[0] < 10.0:  # an interior maximum for batch 0
            assert ours[0] == pytest.approx(ref.x[0], abs=1e-3)
