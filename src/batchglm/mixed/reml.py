"""Restricted (REML) Laplace likelihood of a random-intercept GLM, one grouping factor.

glmmTMB's ``REML = TRUE`` (Brooks et al. 2017, *The R Journal* 9:378; TMB, Kristensen et
al. 2016) treats the fixed effects ``a`` as random effects with a flat prior and integrates
them out together with the random intercepts in one Laplace approximation. With ``u =
sigma v`` and ``J(a, v) = sum_j ll_j(x_j a + sigma v_g(j)) - sum_g v_g^2 / 2`` (conditional
log-likelihood plus the standard normal log density of ``v`` without its ``log 2 pi``):

    L_R(sigma, b) = J(a*, v*) + p/2 log(2 pi) - 1/2 log det K,
    K = -d^2 J / d(a, v)^2 = [[X^T W X, sigma X^T W Z], [sigma Z^T W X, diag(H_g)]],

at the joint mode ``(a*, v*)``, ``W = -d2`` (observed second derivatives in the predictor),
``H_g = 1 + sigma^2 sum_{j in g} w_j``, ``p`` the number of free location coefficients.
The ``v`` block of ``K`` is diagonal, so ``log det K = sum_g log H_g + log det S`` with the
Schur complement ``S = X^T W X - sigma^2 sum_g c_g c_g^T / H_g``, ``c_g = sum_{j in g} w_j
x_j``: per feature a ``p x p`` matrix from per-group weighted design sums (no ``n x n`` or
``(p + G)``-square matrix). ``L_R`` equals the ML Laplace objective of
:mod:`batchglm.mixed.laplace` at ``a = a*`` minus ``1/2 log det S`` plus ``p/2 log 2 pi``.

* **Inner problem.** ``J`` is concave in ``(a, v)``; damped Newton on both at once, batched
  over features, with the diagonal ``v`` block eliminated: ``S da = g_a - sum_g sigma c_g
  g_{v_g} / H_g``, ``dv_g = (g_{v_g} - sigma c_g . da) / H_g``; one pass of the family's
  derivatives per iteration, warm-started at the last joint mode.
* **Outer problem.** The parameters are ``[sigma, b]`` (``sigma`` in the engine's
  unbounded block, ``b`` with the family's scale bounds), maximised by the Newton engine of
  :mod:`batchglm.solvers.newton`. Gradient and Hessian are central differences of ``L_R``
  (``k^2 + k`` values per Newton iteration for ``k = 1 + k_scale`` outer parameters; steps
  ``1e-3 max(1, |theta|)``). ``L_R`` is smooth and every value is solved to rounding, so
  the differences are accurate to about ``1e-6`` relative, far below what the variance
  estimate needs.
* **Fixed effects and their covariance.** As glmmTMB reports them: ``a*`` at the REML
  estimates, with covariance ``S^-1 + D V D^T`` (``V`` the inverse negative Hessian of
  ``L_R``, ``D = d a* / d(sigma, b)`` from the same differences), cross-covariance ``D V``
  with the outer parameters: the marginal of TMB's joint precision (Kass and Steffey 1989).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Derivatives
from batchglm.mixed.group_pass import GroupPass, RowBasis, applies
from batchglm.mixed.laplace import MarginalObjective, OuterProblem
from batchglm.mixed.reml_derivatives import (
    MAX_RANK,
    DerivativeMoments,
    reml_derivatives,
    reml_derivatives_moments,
)
from batchglm.solvers.count_table import CountTable
from batchglm.solvers.linalg import GroupSums, PairProducts, inverse_negative, solve_or_nan
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

#: Relative step of the central differences of ``L_R``.
_STEP = 1e-3
#: Newton steps on ``a`` below this (in units of the design columns, relative) end the
#: joint mode iteration; quadratic convergence leaves an error far below it.
_TOL = 1e-11
_MAX_ITER = 30
#: Predicted gain of a Newton step on ``a`` below which it is the last one.
_GAIN_TOL = 1e-13
_MAX_HALVINGS = 30
#: Largest change of a predictor in one Newton step on ``a`` (log scale).
_MAX_ETA_STEP = 2.0
#: Central differences of ``L_R`` instead of its analytic derivatives for new objectives
#: (the method before issue 15's fourth round; kept to check and time against).
DIFFERENCED = False


class RemlProblem(OuterProblem):
    """Parameter layout of the REML objective for the Newton engine: ``[sigma, b]``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.k_loc = 1

    @property
    def units(self) -> Array:
        """Units of the parameters: 1 for ``sigma``, the scale design's for ``b``."""
        return np.concatenate([[1.0], self.base.units[self.base.k_loc :]])


@dataclass
class JointMode:
    """The joint mode of fixed effects and random intercepts at one ``(sigma, b)``.

    Attributes
    ----------
    value : ndarray
        ``(F,)`` restricted Laplace log-likelihood ``L_R``.
    a : ndarray
        ``(F, p)`` fixed effects at the joint mode.
    v : ndarray
        ``(G, F)`` standardised modes ``u / sigma``.
    schur : ndarray
        ``(F, p, p)`` the Schur complement ``S`` (information of ``a`` given ``sigma, b``).
    converged : ndarray of bool
        ``(F,)`` whether the Newton iteration on ``a`` reached its tolerance.
    """

    value: Array
    a: Array
    v: Array
    schur: Array
    converged: NDArray[np.bool_]


class RemlObjective(MarginalObjective):
    """Restricted Laplace log-likelihood of a block of features, parameters ``[sigma, b]``.

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs, family (``nb`` or ``poisson``) and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    groups : GroupSums
        Random-intercept group of each observation.
    a0 : ndarray
        ``(F, p)`` starting fixed effects (the plain GLM fit).
    """

    def __init__(
        self,
        problem: Problem,
        y: Array,
        groups: GroupSums,
        a0: Array,
        modes: Array | None = None,
        table: CountTable | None = None,
        constant: Array | None = None,
        pairs: PairProducts | None = None,
    ) -> None:
        self._set_data(problem, y, table, constant)
        self._problem = RemlProblem(problem)
        self.groups = groups
        self.a = np.array(a0, dtype=np.float64)
        self.modes = np.zeros((groups.n_groups, y.shape[1])) if modes is None else modes
        xc = problem.rows.xc
        self.pairs = PairProducts(xc, xc, symmetric=True) if pairs is None else pairs
        self._col_max = np.abs(xc).max(axis=0)
        #: Set by an order-2 evaluation: ``d a* / d theta`` ``(F, p, k)`` and ``S``.
        self.sens: Array | None = None
        self.schur: Array | None = None
        #: Central differences of ``L_R`` instead of the analytic derivatives (kept to
        #: check them).
        self.differenced = DIFFERENCED
        #: The compiled per-group pass (:mod:`batchglm.mixed.group_pass`) where it applies:
        #: one pass per joint Newton step gives ``ll``, ``X^T W X``, ``c_g``, ``S1``, ``S2``.
        self.group_pass: GroupPass | None = None
        #: Coordinates and plan of the pass that gives the analytic derivatives (where the
        #: design rows have at most ``MAX_RANK`` within-group coordinates).
        self.moments: DerivativeMoments | None = None
        if applies(problem.family.name, self.y):
            basis = RowBasis.build(xc, groups.index, groups.n_groups)
            self.group_pass = GroupPass(
                problem.family.name, self.y, groups.index, groups.n_groups, basis, None
            )
            zc = problem.scale.reduced if problem.family.has_scale else np.zeros((xc.shape[0], 0))
            moments = DerivativeMoments(xc, zc, groups.index, groups.n_groups)
            if moments.rank <= MAX_RANK:
                self.moments = moments

    @property
    def problem(self) -> RemlProblem:
        """Parameter layout for the Newton engine."""
        return self._problem

    def subset(self, keep: NDArray[np.bool_]) -> RemlObjective:
        """Restrict to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over features.

        Returns
        -------
        RemlObjective
            The objective over the kept features.
        """
        table = self.table.subset(keep) if self.table is not None else None
        out = RemlObjective(
            self.base,
            self.y[:, keep],
            self.groups,
            self.a[keep],
            self.modes[:, keep],
            table,
            self.constant[keep],
            self.pairs,
        )
        out.differenced = self.differenced
        return out

    def _schur(self, w: Array, s2: Array, sigma: Array) -> tuple[Array, Array, Array]:
        """``S`` ``(F, p, p)``, ``H_g`` ``(G, F)`` and ``c_g`` ``(G, F, p)`` for weights ``w``."""
        xc = self.base.rows.xc
        xtwx = self.pairs(w)
        c = np.stack([self.groups(w * xc[:, i : i + 1]) for i in range(xc.shape[1])], axis=-1)
        s2_sig = sigma * sigma
        h = 1.0 - s2_sig[None, :] * s2
        corr = np.einsum("gfi,gfj,gf->fij", c, c, s2_sig[None, :] / h)
        return xtwx - corr, h, c

    def _terms(self, a: Array, v: Array, sig: Array, eta_scale: Array) -> tuple[Derivatives, Array]:
        eta = self.base.eta_loc(a, out=np.empty((self.y.shape[0], a.shape[0])))
        eta += self.groups.expand(sig * v)
        der = self.base.family.derivatives(self.y, eta, eta_scale, 2)
        return der, der.ll.sum(axis=0) - 0.5 * (v * v).sum(axis=0)

    def _pass_terms(
        self, a: Array, v: Array, sig: Array, eta_scale: Array
    ) -> tuple[Derivatives | tuple[Array, Array, Array], Array]:
        """Terms of a joint Newton step at ``(a, v)`` and the joint objective ``J``."""
        if self.group_pass is None:
            return self._terms(a, v, sig, eta_scale)
        eta = self.base.eta_loc(a, out=np.empty((self.y.shape[0], a.shape[0])))
        point = self.group_pass.point(eta, eta_scale)
        ll, first, second = self.group_pass.joint_moments(point, sig * v)
        return (ll, first, second), ll.sum(axis=0) - 0.5 * (v * v).sum(axis=0)

    def _step_terms(
        self, terms: Derivatives | tuple[Array, Array, Array], sigma: Array
    ) -> tuple[Array, Array, Array, Array, Array, Array]:
        """``S1``, ``S2``, ``S``, ``H_g``, ``c_g`` and ``g_a = X^T d ll / d eta`` of a step."""
        if isinstance(terms, Derivatives):
            s1, s2 = self.groups(terms.d_loc), self.groups(terms.d2_loc)
            schur, h, c = self._schur(-terms.d2_loc, s2, sigma)
            return s1, s2, schur, h, c, (self.base.rows.xc.T @ terms.d_loc).T
        _, first, second = terms
        s1, s2 = first[..., 0], second[..., 0, 0]
        c = -second[..., 1:, 0]
        s2_sig = sigma * sigma
        h = 1.0 - s2_sig[None, :] * s2
        corr = np.einsum("gfi,gfj,gf->fij", c, c, s2_sig[None, :] / h)
        schur = -second[..., 1:, 1:].sum(axis=0) - corr
        return s1, s2, schur, h, c, first[..., 1:].sum(axis=0)

    def joint_mode(self, theta: Array, a0: Array, v0: Array) -> JointMode:
        """Solve for the joint mode of ``(a, v)`` at ``theta = [sigma, b]`` and evaluate ``L_R``.

        Damped Newton on ``(a, v)`` jointly, batched over features: the ``v`` block of the
        negative Hessian ``K`` is diagonal, so each step solves ``S da = g_a - sum_g sigma
        c_g g_{v_g} / H_g`` and sets ``dv_g = (g_{v_g} - sigma c_g . da) / H_g``; one pass of
        the family's derivatives per iteration (``J`` is concave, steps that lower it are
        halved).

        Parameters
        ----------
        theta : ndarray
            ``(F, 1 + k_scale)``.
        a0 : ndarray
            ``(F, p)`` starting fixed effects.
        v0 : ndarray
            ``(G, F)`` starting standardised modes.

        Returns
        -------
        JointMode
            The mode, ``L_R`` and ``S`` there.
        """
        sigma, b = theta[:, 0], theta[:, 1:]
        sig = sigma[None, :]
        eta_s_groups, eta_scale = self._scale(b)
        units = self.base.units[: self.base.k_loc]
        a, v = a0.copy(), v0.copy()
        der, obj = self._pass_terms(a, v, sig, eta_scale)
        n_feat = a.shape[0]
        done = np.zeros(n_feat, dtype=bool)
        final = np.zeros(n_feat, dtype=bool)
        for _ in range(_MAX_ITER):
            s1, s2, schur, h, c, g_a = self._step_terms(der, sigma)
            g_v = sig * s1 - v
            da = solve_or_nan(schur, g_a - np.einsum("gfi,gf->fi", c, sig * g_v / h))
            dv = (g_v - sig * np.einsum("gfi,fi->gf", c, da)) / h
            rel_a = np.abs(da * units) / (1.0 + np.abs(a * units))
            rel_v = np.abs(dv) / (1.0 + np.abs(v))
            size = np.maximum(rel_a.max(axis=1), rel_v.max(axis=0))
            done |= final | ~np.isfinite(size) | (size <= _TOL)
            if done.all():
                break
            # A predicted gain below the value's rounding makes a short step the last:
            # after it the error is of the order of its square. Separated features (a*
            # runs off to infinity, log det S to minus infinity: no finite L_R) keep taking
            # long steps and end without convergence (value NaN).
            gain = (g_a * da).sum(axis=1) + (g_v * dv).sum(axis=0)
            final |= (size <= 1e-3) & (gain < _GAIN_TOL)
            da[done] = 0.0
            dv[:, done] = 0.0
            reach = (np.abs(da) * self._col_max).sum(axis=1) + np.abs(sig * dv).max(axis=0)
            t = np.minimum(1.0, _MAX_ETA_STEP / np.maximum(reach, 1e-300))
            for _ in range(_MAX_HALVINGS):
                trial_a, trial_v = a + t[:, None] * da, v + t[None, :] * dv
                trial, t_obj = self._pass_terms(trial_a, trial_v, sig, eta_scale)
                bad = ~(t_obj >= obj - 1e-13 * (1.0 + np.abs(obj))) & ~done
                if not bad.any():
                    break
                t[bad] *= 0.5
            else:
                t[bad] = 0.0
                trial_a, trial_v = a + t[:, None] * da, v + t[None, :] * dv
                trial, t_obj = self._pass_terms(trial_a, trial_v, sig, eta_scale)
            a, v, der, obj = trial_a, trial_v, trial, t_obj
        else:
            _, _, schur, h, _, _ = self._step_terms(der, sigma)
        sign, logdet = np.linalg.slogdet(schur)
        logdet = np.where((sign > 0) & done, logdet, np.nan)
        ll = der.ll if isinstance(der, Derivatives) else der[0]
        # ``log det K`` and the ``log 2 pi`` of the ``p`` integrated fixed effects.
        log_2pi = -a.shape[1] * np.log(2.0 * np.pi)
        counts = self._count_terms(eta_s_groups, 0)
        value = self._value(ll, v, counts, np.log(h).sum(axis=0), logdet, log_2pi)
        return JointMode(value, a, v, schur, done)

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Restricted Laplace log-likelihood, its gradient and Hessian for every feature.

        Parameters
        ----------
        theta : ndarray
            ``(F, 1 + k_scale)``: ``sigma`` and the free scale coefficients.
        order : int
            0 for the value only, 2 for gradient and Hessian (central differences) too.

        Returns
        -------
        ll : ndarray
            ``(F,)`` restricted Laplace log-likelihood, constants included (glmmTMB's
            ``logLik`` with ``REML = TRUE``).
        grad : ndarray or None
            ``(F, k)`` gradient.
        hess : ndarray or None
            ``(F, k, k)`` Hessian.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._evaluate(theta, order)

    def _start(
        self, moved: JointMode, centre: JointMode, sign: float, other: JointMode | None = None
    ) -> tuple[Array, Array]:
        """Predict a joint mode: ``centre + sign (moved - centre)`` (plus ``other - centre``).

        Features without a finite prediction start where the centre's solve started from.
        """
        a = centre.a + sign * (moved.a - centre.a)
        v = centre.v + sign * (moved.v - centre.v)
        if other is not None:
            a = a + other.a - centre.a
            v = v + other.v - centre.v
        return _finite_start(a, v, self.a, self.modes)

    def _evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        centre = self.joint_mode(theta, self.a, self.modes)
        ok = np.asarray(np.isfinite(centre.a).all(axis=1) & np.isfinite(centre.v).all(axis=0))
        self.a = np.where(ok[:, None], centre.a, self.a)
        self.modes = np.where(ok[None, :], centre.v, self.modes)
        if order == 0:
            return centre.value, None, None
        if not self.differenced:
            return self._analytic(theta, centre)
        return self._differenced(theta, centre)

    def _analytic(self, theta: Array, centre: JointMode) -> tuple[Array, Array, Array]:
        """Value and analytic derivatives (:mod:`batchglm.mixed.reml_derivatives`)."""
        eta_s_groups, eta_scale = self._scale(theta[:, 1:])
        counts = self._count_terms(eta_s_groups, 2)
        moments = self.moments
        if moments is not None and not moments.fits(self.groups.n_groups, theta.shape[0]):
            moments = None
        if self.group_pass is not None and moments is not None:
            eta = self.base.eta_loc(centre.a, out=np.empty(self.y.shape))
            point = self.group_pass.point(eta, eta_scale)
            shift = theta[None, :, 0] * centre.v
            with np.errstate(over="ignore", invalid="ignore"):
                acc = self.group_pass.weighted_sums(point, shift, moments.coords, moments.plan)
            der = reml_derivatives_moments(self.base, moments, acc, theta, centre.v, counts)
        else:
            der = reml_derivatives(
                self.base,
                self.y,
                self.groups,
                self.pairs,
                theta,
                centre.a,
                centre.v,
                eta_scale,
                counts,
            )
        bad = ~np.isfinite(centre.value)
        der.grad[bad] = np.nan
        der.hess[bad] = np.nan
        der.sens[bad] = np.nan
        self.sens = der.sens
        self.schur = centre.schur
        return centre.value, der.grad, der.hess

    def _differenced(
        self, theta: Array, centre: JointMode
    ) -> tuple[Array, Array | None, Array | None]:
        """Value and central differences of it (the check on the analytic derivatives)."""
        finite = np.isfinite(centre.value)
        if not finite.all():
            # Differences only where the value exists (the engine drops the others).
            n_feat, k = theta.shape
            grad = np.full((n_feat, k), np.nan)
            hess = np.full((n_feat, k, k), np.nan)
            self.sens = np.full((n_feat, self.a.shape[1], k), np.nan)
            self.schur = centre.schur
            if finite.any():
                sub = self.subset(finite)
                sub.differenced = True
                _, grad[finite], hess[finite] = sub._evaluate(theta[finite], 2)
                assert sub.sens is not None
                self.sens[finite] = sub.sens
                self.a[finite], self.modes[:, finite] = sub.a, sub.modes
            return centre.value, grad, hess
        n_feat, k = theta.shape
        h = _STEP * np.maximum(1.0, np.abs(theta))
        f0 = centre.value
        grad = np.empty((n_feat, k))
        hess = np.empty((n_feat, k, k))
        sens = np.empty((n_feat, self.a.shape[1], k))
        up, down = [], []
        plus_modes, minus_modes = [], []
        for i in range(k):  # over the few outer parameters, not features
            e = np.zeros_like(theta)
            e[:, i] = h[:, i]
            plus = self.joint_mode(theta + e, self.a, self.modes)
            # The mode at -h is the mirror image of the one at +h to second order: a
            # start there saves the joint Newton iteration one step.
            minus = self.joint_mode(theta - e, *self._start(plus, centre, -1.0))
            up.append(plus.value)
            down.append(minus.value)
            plus_modes.append(plus)
            minus_modes.append(minus)
            grad[:, i] = (plus.value - minus.value) / (2.0 * h[:, i])
            hess[:, i, i] = (plus.value - 2.0 * f0 + minus.value) / (h[:, i] * h[:, i])
            sens[:, :, i] = (plus.a - minus.a) / (2.0 * h[:, i, None])
        for i in range(k):
            for j in range(i + 1, k):
                e = np.zeros_like(theta)
                e[:, i], e[:, j] = h[:, i], h[:, j]
                # Starts from the sum of the two single moves (first-order exact).
                start = self._start(plus_modes[i], centre, 1.0, plus_modes[j])
                pp = self.joint_mode(theta + e, *start).value
                start = self._start(minus_modes[i], centre, 1.0, minus_modes[j])
                mm = self.joint_mode(theta - e, *start).value
                cross = pp + mm - up[i] - down[i] - up[j] - down[j] + 2.0 * f0
                hess[:, i, j] = hess[:, j, i] = cross / (2.0 * h[:, i] * h[:, j])
        self.sens = sens
        self.schur = centre.schur
        return f0, grad, hess


def _finite_start(a: Array, v: Array, a0: Array, v0: Array) -> tuple[Array, Array]:
    """Return ``(a, v)`` where finite for a feature, else ``(a0, v0)``."""
    ok = np.asarray(np.isfinite(a).all(axis=1) & np.isfinite(v).all(axis=0))
    return np.where(ok[:, None], a, a0), np.where(ok[None, :], v, v0)


def fixed_effect_covariance(schur: Array, sens: Array, outer_cov: Array) -> Array:
    """Joint covariance of ``[a, sigma, b]`` from the REML fit (as glmmTMB's ``vcov``).

    Parameters
    ----------
    schur : ndarray
        ``(F, p, p)`` information ``S`` of ``a`` given the outer parameters.
    sens : ndarray
        ``(F, p, k)`` ``d a* / d(sigma, b)``.
    outer_cov : ndarray
        ``(F, k, k)`` inverse negative Hessian of ``L_R``.

    Returns
    -------
    ndarray
        ``(F, p + k, p + k)``: ``[[S^-1 + D V D^T, D V], [V D^T, V]]``.
    """
    n_feat, p, k = sens.shape
    dv = np.einsum("fik,fkl->fil", sens, outer_cov)
    out = np.empty((n_feat, p + k, p + k))
    out[:, :p, :p] = inverse_negative(-schur) + np.einsum("fil,fjl->fij", dv, sens)
    out[:, :p, p:] = dv
    out[:, p:, :p] = np.swapaxes(dv, 1, 2)
    out[:, p:, p:] = outer_cov
    return out
