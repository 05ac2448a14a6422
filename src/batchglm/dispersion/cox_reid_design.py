"""Cox-Reid adjusted profile likelihood for a general NB scale design, batched over features.

With fitted means ``mu`` held fixed, the size of observation ``i`` is
``r_i = exp(z_i . b)`` for free scale coefficients ``b`` (``z_i`` a row of the scale design
after constraints), and

``APL(b) = sum_i l(y_i; mu_i, r_i) - 1/2 log det(X^T W(b) X)``,
``W = diag(mu / (1 + mu / r))``,

with ``X`` the location design after constraints (the adjustment of edgeR and DESeq2). It is
maximised by Newton's method with the exact Hessian, step halving and an active set that
keeps every scale predictor ``z_i . b`` inside ``[-log(alpha_max), log(1e8)]``, the range
of :func:`batchglm.dispersion.cox_reid.cox_reid_log_r`.

Derivatives in ``t_i = log r_i`` (``q = mu / r``)::

    W'  = dW/dt   = mu q / (1 + q)^2
    W'' = d2W/dt2 = mu q (q - 1) / (1 + q)^3

and with ``M = X^T W X``, ``h_i = x_i^T M^-1 x_i``, ``A_k = M^-1 X^T diag(W' z_k) X``::

    d log det M / db_k        = sum_i W'_i h_i z_ik          (= trace A_k)
    d2 log det M / db_k db_l  = sum_i W''_i h_i z_ik z_il - trace(A_k A_l)

The per-observation likelihood terms use the NB family's expressions in ``q``, so they
stay accurate up to the Poisson limit.

Units: the columns of ``X`` and ``Z`` are scaled to unit maximum before solving
(:func:`~batchglm.solvers.linalg.column_units`), and Newton works on ``u = units * b``.
``X^T W X`` then stays well conditioned and the saddle-free trust radius means one unit of
``log r``, whatever the units of the covariates; coefficients, APL values and gradients are
reported for the design as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.dispersion.cox_reid import _W_FLOOR, cox_reid_log_r, max_alpha
from batchglm.families.nb import NegativeBinomial
from batchglm.families.special_diff import digamma_diff, lgamma_diff, trigamma_diff
from batchglm.solvers.linalg import PairProducts, column_units, lstsq_columns
from batchglm.solvers.newton import rounding_noise
from batchglm.solvers.objective import unique_rows
from batchglm.solvers.status import Status

Array = NDArray[np.float64]

_ARMIJO = 1e-4
#: A scale predictor this close to its bound counts as on it.
_BOUND_TOL = 1e-8
#: Below ``max(_NOISE_DECREMENT, 4 * noise)`` (``noise`` the APL's rounding noise, see
#: :func:`batchglm.solvers.newton.rounding_noise`) a decrement whose step cannot be
#: verified still counts as convergence.
_NOISE_DECREMENT = 1e-6
#: Lagrange multipliers of active bounds smaller than this (in APL units per unit of the
#: predictor) do not release the bound; it guards against cycling on rounding noise.
_RELEASE_TOL = 1e-7
#: Most releases of active bounds per feature (guards against cycling on and off a bound).
_MAX_RELEASES = 3
#: Largest multiplier of a Newton step while walking towards a bound.
_MAX_EXPAND = 64.0


@dataclass(frozen=True)
class ScaleSolution:
    """Maximisers of the Cox-Reid adjusted profile likelihood, one per feature.

    Attributes
    ----------
    b : ndarray
        Free scale coefficients ``(F, k_scale)`` (``log r = Z b``).
    apl : ndarray
        The adjusted profile log-likelihood at ``b``, ``(F,)``.
    grad : ndarray
        Its gradient at ``b`` projected off active bounds, ``(F, k_scale)``.
    n_iter : ndarray of int
        Newton iterations used.
    status : ndarray of int8
        :class:`~batchglm.solvers.status.Status` codes: ``CONVERGED``, ``SCALE_AT_BOUND``
        (some scale predictor stopped on a bound), ``MAX_ITER``, ``STALLED`` or
        ``NONFINITE``.
    """

    b: Array
    apl: Array
    grad: Array
    n_iter: NDArray[np.int32]
    status: NDArray[np.int8]


def scale_bounds(n_obs: int, alpha_max: float | None = None) -> tuple[float, float]:
    """Bounds on the scale predictor ``log r``.

    The NB family's bounds, with the lower one raised to ``-log(alpha_max)`` as in the
    intercept-only estimate (DESeq2's largest dispersion).

    Parameters
    ----------
    n_obs : int
        Number of observations.
    alpha_max : float, optional
        Largest dispersion; by default :func:`~batchglm.dispersion.cox_reid.max_alpha`.

    Returns
    -------
    tuple of float
        ``(lo, hi)`` for ``log r``.
    """
    lo, hi = NegativeBinomial.scale_bounds
    upper = alpha_max if alpha_max is not None else max_alpha(n_obs)
    return max(lo, -float(np.log(upper))), hi


class _APL:
    """The adjusted profile likelihood of a block of features as a function of ``b``."""

    def __init__(self, y: Array, mu: Array, x: Array, z: Array) -> None:
        self.y, self.mu, self.x, self.z = y, mu, x, z
        self.xx = PairProducts(x, x, symmetric=True)
        self.zz = PairProducts(z, z, symmetric=True)
        self.positive = y > 0

    def subset(self, keep: NDArray[np.bool_]) -> _APL:
        out = object.__new__(_APL)
        out.__dict__.update(self.__dict__)
        out.y = np.ascontiguousarray(self.y[:, keep])
        out.mu = np.ascontiguousarray(self.mu[:, keep])
        out.positive = out.y > 0
        return out

    def __call__(self, b: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """APL, its gradient and Hessian in ``b`` (up to ``order``)."""
        value, grad, hess, _ = self.with_noise(b, order)
        return value, grad, hess

    def with_noise(self, b: Array, order: int) -> tuple[Array, Array | None, Array | None, Array]:
        """Like ``__call__``, plus the APL's rounding noise per feature."""
        y, mu, x, z = self.y, self.mu, self.x, self.z
        t = z @ b.T
        r = np.exp(t)
        q = mu / r
        log1p_q = np.log1p(q)
        with np.errstate(divide="ignore"):
            log_q = np.log(q)
        # Same expressions as the intercept-only code: the q form stays exact when r >> mu.
        ll = lgamma_diff(y, r) - r * log1p_q
        ll += np.where(self.positive, y * (log_q - log1p_q), 0.0)
        w_raw = mu / (1.0 + q)
        w = np.maximum(w_raw, _W_FLOOR)
        info = self.xx(w)
        _, logdet = np.linalg.slogdet(info)
        value = ll.sum(axis=0) - 0.5 * logdet
        # The terms are differences of numbers as large as y |log q| (about 2e10 for counts
        # of 1e9); the value inherits their rounding.
        big = np.abs(ll) + r * log1p_q + np.where(self.positive, y * (np.abs(log_q) + log1p_q), 0.0)
        noise = rounding_noise(big.sum(axis=0) + 0.5 * np.abs(logdet))
        if order == 0:
            return value, None, None, noise
        inv = 1.0 / (1.0 + q)
        dl = r * (digamma_diff(y, r) + q * inv - log1p_q) - y * inv
        # Where the floor holds W constant its derivatives vanish.
        floored = w_raw < _W_FLOOR
        dw = np.where(floored, 0.0, mu * q * inv * inv)
        h = np.einsum("ni,fij,nj->nf", x, np.linalg.inv(info), x, optimize=True)
        grad = z.T @ dl - 0.5 * (z.T @ (dw * h))
        grad = np.ascontiguousarray(grad.T)
        if order == 1:
            return value, grad, None, noise
        d2l = dl + (y + mu * q) * inv * inv + r * r * trigamma_diff(y, r)
        d2w = np.where(floored, 0.0, dw * (q - 1.0) * inv)
        hess = self.zz(d2l) - 0.5 * self.zz(d2w * h)
        k = z.shape[1]
        a = [np.linalg.solve(info, self.xx(dw * z[:, [j]])) for j in range(k)]
        for j in range(k):
            for m in range(j, k):
                tr = np.einsum("fij,fji->f", a[j], a[m])
                hess[:, j, m] += 0.5 * tr
                if m != j:
                    hess[:, m, j] += 0.5 * tr
        return value, grad, hess, noise


def _project(
    grad: Array, hess: Array, active: NDArray[np.bool_], rows: Array
) -> tuple[Array, Array, Array]:
    """Restrict the Newton system to directions that keep active predictors fixed.

    With ``P`` the projector onto the null space of the active rows, the gradient becomes
    ``P g`` and the Hessian ``P H P - (I - P)``. Also returns ``P`` (``(F, k, k)``).
    """
    k = grad.shape[1]
    proj = np.broadcast_to(np.eye(k), (grad.shape[0], k, k)).copy()
    feat = np.flatnonzero(active.any(axis=0))
    if feat.size == 0:
        return grad, hess, proj
    gram = PairProducts(rows, rows, symmetric=True)(active[:, feat].astype(np.float64))
    vals, vecs = np.linalg.eigh(gram)
    null = vals <= 1e-10 * np.maximum(vals.max(axis=1, keepdims=True), 1.0)
    p = np.einsum("fik,fk,fjk->fij", vecs, null.astype(np.float64), vecs)
    proj[feat] = p
    grad = grad.copy()
    hess = hess.copy()
    grad[feat] = np.einsum("fij,fj->fi", p, grad[feat])
    hess[feat] = p @ hess[feat] @ p - (np.eye(k) - p)
    return grad, hess, proj


def _direction(grad: Array, hess: Array) -> Array:
    """Newton direction per feature; saddle-free with a unit trust radius where needed.

    Each feature is decided on its own (``solvers.linalg.newton_direction`` takes the
    modified step for the whole batch once any Hessian is not negative definite, which
    clips every feature's steps to unit length).
    """
    neg = np.where(np.isfinite(hess), -hess, 0.0)
    vals, vecs = np.linalg.eigh(neg)
    proj = np.einsum("fji,fj->fi", vecs, grad)
    scale = np.maximum(np.abs(vals).max(axis=1, keepdims=True), 1.0)
    definite = vals.min(axis=1, keepdims=True) > 1e-12 * scale
    modified = np.maximum(np.maximum(np.abs(vals), np.abs(proj)), 1e-300)
    return np.einsum("fij,fj->fi", vecs, proj / np.where(definite, vals, modified))


def _step_limit(
    rows: Array, b: Array, db: Array, active: NDArray[np.bool_], lo: float, hi: float
) -> Array:
    """Largest step in ``[0, inf]`` that keeps every inactive predictor within bounds."""
    eta = rows @ b.T
    deta = rows @ db.T
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(deta > 0, (hi - eta) / deta, np.where(deta < 0, (lo - eta) / deta, np.inf))
    room[active] = np.inf
    return np.maximum(room.min(axis=0), 0.0)


def _release(
    grad: Array, active: NDArray[np.bool_], rows: Array, b: Array, hi: float
) -> NDArray[np.bool_]:
    """Active bounds whose Lagrange multiplier has the wrong sign (KKT violated).

    At a stationary point of the projected problem the gradient is ``sum_g lambda_g z_g``
    over active rows. A bound holds the maximum back only if the gradient pushes outward:
    ``lambda_g > 0`` at the upper bound, ``< 0`` at the lower one.
    """
    out = np.zeros_like(active)
    feat = np.flatnonzero(active.any(axis=0))
    if feat.size == 0:
        return out
    zt = rows.T[None, :, :] * active[:, feat].T[:, None, :]
    lam = np.einsum("fgk,fk->fg", np.linalg.pinv(zt), grad[feat])
    upper = (rows @ b[feat].T).T >= hi - 1e-6
    wrong = np.where(upper, lam < -_RELEASE_TOL, lam > _RELEASE_TOL) & active[:, feat].T
    out[:, feat] = wrong.T
    return out


def start_values(y: Array, mu: Array, x: Array, z: Array, alpha_max: float | None = None) -> Array:
    """Start the scale coefficients at the common (intercept-only) Cox-Reid estimate.

    The intercept-only maximiser is found globally by a grid search, so Newton starts in
    the basin of the pooled optimum. Where the scale design cannot express a constant the
    least-squares fit of it is pulled towards ``b = 0`` (``r = 1``, always feasible) until
    every predictor lies inside the bounds.

    Parameters
    ----------
    y, mu : ndarray
        Counts and fitted means ``(n_obs, F)``.
    x : ndarray
        Location design after constraints ``(n_obs, k_loc)``.
    z : ndarray
        Scale design after constraints ``(n_obs, k_scale)``.
    alpha_max : float, optional
        Largest dispersion.

    Returns
    -------
    ndarray
        ``(F, k_scale)`` feasible starting coefficients.
    """
    t0 = cox_reid_log_r(y, mu, x, alpha_max=alpha_max)
    rows, _ = unique_rows(z)
    coef = lstsq_columns(rows, np.ones((rows.shape[0], 1)))
    b0 = t0[:, None] * coef.T
    lo, hi = scale_bounds(y.shape[0], alpha_max)
    eta = rows @ b0.T
    # Shrink each start toward 0 just enough to be feasible (0 is interior: lo < 0 < hi).
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(eta > hi, hi / eta, np.where(eta < lo, lo / eta, 1.0)).min(axis=0)
    return np.asarray(b0 * shrink[:, None])


def cox_reid_scale(
    y: Array,
    mu: Array,
    x: Array,
    z: Array,
    *,
    start: Array | None = None,
    alpha_max: float | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
    max_halvings: int = 30,
) -> ScaleSolution:
    """Maximise the Cox-Reid adjusted profile likelihood over free scale coefficients.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, size factors included; held fixed.
    x : ndarray
        Location design after constraints, ``(n_obs, k_loc)``.
    z : ndarray
        Scale design after constraints, ``(n_obs, k_scale)``; ``log r = z @ b``.
    start : ndarray, optional
        Starting coefficients ``(F, k_scale)``, inside the bounds; by default
        :func:`start_values`.
    alpha_max : float, optional
        Largest dispersion allowed; by default ``max(10, n_obs)``.
    max_iter : int
        Maximum Newton iterations.
    tol : float
        Convergence threshold on the Newton decrement.
    max_halvings : int
        Maximum step halvings per iteration.

    Returns
    -------
    ScaleSolution
        Coefficients, APL values, projected gradients, iterations and status codes.
        Every predictor ``z_i . b`` lies in ``[-log(alpha_max), log(1e8)]``; a maximum
        beyond (e.g. under-dispersion) stops on the bound with status ``SCALE_AT_BOUND``.

    Raises
    ------
    ValueError
        When shapes do not match, the scale design is rank deficient, or ``start`` lies
        outside the scale bounds.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    n_obs, n_feat = y.shape
    if mu.shape != y.shape or x.shape[0] != n_obs or z.shape[0] != n_obs:
        raise ValueError(
            f"`y` {y.shape} and `mu` {mu.shape} must have the same shape, and `x` "
            f"{x.shape} and `z` {z.shape} one row per observation."
        )
    lo, hi = scale_bounds(n_obs, alpha_max)
    if start is None:
        b = start_values(y, mu, x, z, alpha_max)
    else:
        b = np.array(start, dtype=np.float64).reshape(n_feat, z.shape[1])
        eta0 = unique_rows(z)[0] @ b.T
        if np.any((eta0 < lo - _BOUND_TOL) | (eta0 > hi + _BOUND_TOL)):
            raise ValueError(
                f"`start` must keep every scale predictor within [{lo:.4g}, {hi:.4g}] "
                "(log r), but it does not."
            )
    # Solve in column units: u = units_z * b, and X scaled to unit columns (which shifts
    # log det(X^T W X) by 2 sum log units_x, added back below).
    units_z = column_units(z)
    units_x = column_units(x)
    z = z / units_z
    x = x / units_x
    b = b * units_z
    rows, _ = unique_rows(z)
    rank = int(np.linalg.matrix_rank(rows))
    if rank < z.shape[1]:
        raise ValueError(
            f"the scale design has {z.shape[1]} free coefficients but rank "
            f"{rank}; its coefficients are not identifiable."
        )
    k = z.shape[1]
    n_iter = np.zeros(n_feat, dtype=np.int32)
    status = np.full(n_feat, -1, dtype=np.int8)
    eta = rows @ b.T
    active = (eta >= hi - _BOUND_TOL) | (eta <= lo + _BOUND_TOL)
    work = _APL(y, mu, x, z)
    idx = np.arange(n_feat)
    expand = np.ones(n_feat)
    releases = np.zeros(n_feat, dtype=np.int32)
    for it in range(max_iter + 1):
        with np.errstate(all="ignore"):
            value, grad, hess, noise = work.with_noise(b[idx], 2)
        assert grad is not None and hess is not None
        if it == max_iter:
            break
        pg, ph, _ = _project(grad, hess, active[:, idx], rows)
        direction = _direction(pg, ph)
        decrement = np.einsum("fk,fk->f", pg, direction)
        bad = ~(np.isfinite(decrement) & np.isfinite(value))
        done = ~bad & (decrement < tol)
        can_release = done & (releases[idx] < _MAX_RELEASES)
        if can_release.any():
            # A stationary point of the projected problem; release bounds that hold it
            # back from an interior ascent, and carry on for those with the Newton system
            # of the enlarged free set. Releases per feature are capped: with an
            # indefinite Hessian the new direction can lead straight back onto the bound.
            pos = np.flatnonzero(can_release)
            sub = idx[pos]
            free = _release(grad[pos], active[:, sub], rows, b[sub], hi)
            again = pos[free.any(axis=0)]
            if again.size:
                active[:, sub] &= ~free
                releases[idx[again]] += 1
                done[again] = False
                pg, ph, _ = _project(grad[again], hess[again], active[:, idx[again]], rows)
                direction[again] = _direction(pg, ph)
                decrement[again] = np.einsum("fk,fk->f", pg, direction[again])
        status[idx[bad]] = Status.NONFINITE
        at_bound: NDArray[np.bool_] = np.asarray(active[:, idx].any(axis=0))
        status[idx[done]] = np.where(at_bound[done], Status.SCALE_AT_BOUND, Status.CONVERGED)
        live = ~(done | bad)
        direction[bad] = 0.0
        # Far out towards the Poisson limit the APL flattens and a (saddle-free) Newton step
        # moves a predictor about one unit. While such full steps keep being accepted the
        # next one doubles, so walks to a bound take logarithmically many iterations (as in
        # the fit's solver); near the optimum steps are plain Newton.
        walking = np.abs(rows @ direction.T).max(axis=0) >= 0.5
        mult = np.where(live, expand[idx], 1.0)
        direction *= mult[:, None]
        slope = decrement * mult
        limit = _step_limit(rows, b[idx], direction, active[:, idx], lo, hi)
        # Converged features still take their last Newton step where it stays inside the
        # bounds and does not lose: the decrement test fires one quadratic step early, which
        # would leave an error of about sqrt(tol / curvature) in b.
        polish = done & (limit > 1.0)
        step = np.where(live, np.minimum(1.0, limit), np.where(polish, 1.0, 0.0))
        need = live | polish
        if not need.any():
            break
        accepted = np.zeros_like(live)
        full = np.zeros_like(live)
        for halving in range(max_halvings + 1):
            trial = b[idx] + step[:, None] * direction
            with np.errstate(all="ignore"):
                t_val, _, _, t_noise = work.with_noise(trial, 0)
            # Both values carry rounding noise; the Armijo test allows for it.
            ok = need & (t_val >= value + _ARMIJO * step * slope - (noise + t_noise))
            b[idx[ok]] = trial[ok]
            accepted |= ok
            if halving == 0:
                full = ok & (step == 1.0)
            need &= live & ~ok
            if not need.any():
                break
            step = np.where(need, step / 2.0, 0.0)
        n_iter[idx[live]] += 1
        # A step cut short by a bound puts predictors on it: they join the active set.
        hit = accepted & live & (limit <= 1.0)
        if hit.any():
            eta = rows @ b[idx[hit]].T
            active[:, idx[hit]] |= (eta >= hi - _BOUND_TOL) | (eta <= lo + _BOUND_TOL)
        expand[idx] = np.where(
            full & live & walking & ~hit, np.minimum(2.0 * expand[idx], _MAX_EXPAND), 1.0
        )
        stuck = need
        lost = np.maximum(_NOISE_DECREMENT, 4.0 * noise)
        status[idx[stuck]] = np.where(
            decrement[stuck] < lost[stuck],
            np.where(at_bound[stuck], Status.SCALE_AT_BOUND, Status.CONVERGED),
            Status.STALLED,
        )
        keep = live & ~stuck
        if not keep.all():
            work = work.subset(keep)
            idx = idx[keep]
            if not idx.size:
                break
    status[status == -1] = Status.MAX_ITER
    # One last evaluation so value and gradient belong to the returned coefficients (the
    # final polishing step moved some after their last evaluation).
    with np.errstate(all="ignore"):
        apl_out, grad, _ = _APL(y, mu, x, z)(b, 1)
    assert grad is not None
    grad_out, _, _ = _project(grad, np.zeros((n_feat, k, k)), active, rows)
    apl_out = apl_out - np.log(units_x).sum()
    return ScaleSolution(b / units_z, apl_out, grad_out * units_z, n_iter, status)
