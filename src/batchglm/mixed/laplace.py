"""The Laplace approximation of the marginal log-likelihood of a random-intercept GLM.

Model, per feature: ``log mu_j = offset_j + x_j a + u_{g(j)}``, ``u_g ~ N(0, sigma^2)``
independent, scale (NB ``log r``) from its own design as in :func:`batchglm.fit`. With
``u = sigma v`` the marginal likelihood is ``prod_g int p(y_g | v) phi(v) dv``; the Laplace
approximation of each integral (as glmmTMB/TMB and lme4 ``glmer(nAGQ = 1)`` compute it) is

    L = sum_j ll_j(eta_j + sigma v_g)  -  sum_g v_g^2 / 2  -  1/2 sum_g log H_g,
    H_g = 1 - sigma^2 sum_{j in g} d2_j

at the modes ``v_g`` (:mod:`batchglm.mixed.inner`), with ``d2`` the observed second
derivative of ``ll`` in the predictor. The parameters of a feature are ``[a, sigma, b]``:
``sigma`` enters only through ``sigma^2``, so ``L`` is even in ``sigma`` and a variance of
zero is an ordinary stationary point rather than a bound (the reason for this
parametrisation: the engine needs no bound for it). ``sigma`` sits in the engine's
location block (unbounded); ``b`` keeps the family's scale bounds.

Derivatives. The gradient is analytic: by the implicit-function theorem
``dv_g / dtheta = J_{v_g theta} / H_g``, and ``dL / dtheta = J_theta - 1/2 sum_g
(H_{g,theta} + H_{g,v} dv_g / dtheta) / H_g`` (``J`` the joint log-density; ``J_v = 0`` at
the mode), which needs the third derivatives of :mod:`batchglm.mixed.third_derivatives`.
The Hessian is analytic too (:mod:`batchglm.mixed.outer_hessian`, fourth derivatives and
second-order mode sensitivities); the central finite difference of the analytic gradient
(``2 k`` gradient evaluations, symmetrised) is kept behind ``differenced`` to check it.
Every sum over observations is a per-group sum, so with the compiled passes of
:mod:`batchglm.mixed.group_pass` an evaluation costs one exponential per observation
(the means at intercept 0), an inner step a multiplication, and the point at the mode one
pass for value, gradient and Hessian together; the NumPy derivative arrays and sparse group
sums remain the fallback (``BATCHGLM_NUMBA=0``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Family
from batchglm.mixed.group_pass import GroupPass, applies
from batchglm.mixed.inner import FusedMode, Mode, solve_modes, solve_modes_fused
from batchglm.mixed.outer_hessian import GroupMoments, laplace_hessian
from batchglm.mixed.third_derivatives import higher_derivatives, third_derivatives
from batchglm.solvers.count_table import CountTable, table_and_constant
from batchglm.solvers.linalg import GroupSums, PairProducts
from batchglm.solvers.objective import Evaluation, Problem

Array = NDArray[np.float64]

#: Relative step of the central differences of the gradient.
_FD_STEP = 1e-4


@dataclass
class OuterProblem:
    """The parameter layout of the Laplace objective, as the Newton engine reads it.

    ``k_loc`` counts the fixed location coefficients plus ``sigma``; the scale part is the
    GLM's, with its bounds.
    """

    base: Problem

    def __post_init__(self) -> None:
        self.k_loc = self.base.k_loc + 1
        self.k_scale = self.base.k_scale
        self.family: Family = self.base.family
        self.scale_rows = self.base.scale_rows
        self.pp_scale: PairProducts = getattr(self.base, "pp_scale", None)  # type: ignore[assignment]

    @property
    def n_params(self) -> int:
        """Free parameters per feature: location, ``sigma``, scale."""
        return self.k_loc + self.k_scale

    @property
    def units(self) -> Array:
        """Units of the parameters for the engine's steps: the GLM's, 1 for each ``sigma``.

        ``sigma`` multiplies a standardised random intercept on the log-mean scale, so one
        unit of it moves the linear predictor by about one unit, like a unit-size column.
        """
        kl = self.base.k_loc
        extra = np.ones(self.k_loc - kl)
        return np.concatenate([self.base.units[:kl], extra, self.base.units[kl:]])

    def eta_scale_groups(self, b: Array) -> Array:
        """Scale predictor per scale group, ``(n_groups, F)``.

        Parameters
        ----------
        b : ndarray
            Free scale coefficients ``(F, k_scale)``.

        Returns
        -------
        ndarray
            ``Z C b`` at each distinct scale-design row.
        """
        return self.base.eta_scale_groups(b)


def laplace_evaluation(
    ll: Array, grad: Array | None, hess: Array | None, constant: Array
) -> Evaluation:
    """Wrap a Laplace log-likelihood for the engine's rounding-noise test.

    Parameters
    ----------
    ll, grad, hess : ndarray
        Value ``(F,)``, gradient and Hessian of the Laplace log-likelihood.
    constant : ndarray
        ``(F,)`` the count-only constant summed into ``ll``.

    Returns
    -------
    Evaluation
        With ``magnitude = |ll - constant| + |constant|``: the size of the two large sums
        whose rounding ``ll`` inherits.
    """
    magnitude = np.abs(ll - constant) + np.abs(constant)
    return Evaluation(ll=ll, grad=grad, hess=hess, magnitude=magnitude)


def differenced_hessian(theta: Array, gradient: Callable[[Array, int, Array], Array]) -> Array:
    """Hessian by central differences of an analytic gradient, symmetrised.

    Parameters
    ----------
    theta : ndarray
        ``(F, k)`` point.
    gradient : callable
        ``gradient(point, i, h)`` returns the ``(F, k)`` gradient at ``point``, which is
        ``theta`` moved by ``+-h`` (``(F,)``) along parameter ``i``.

    Returns
    -------
    ndarray
        ``(F, k, k)``; steps ``1e-4 max(1, |theta_i|)``.
    """
    k = theta.shape[1]
    hess = np.empty((theta.shape[0], k, k))
    for i in range(k):  # over parameters (a handful), not features
        h = _FD_STEP * np.maximum(1.0, np.abs(theta[:, i]))
        up = theta.copy()
        up[:, i] += h
        down = theta.copy()
        down[:, i] -= h
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            hess[:, :, i] = (gradient(up, i, h) - gradient(down, i, h)) / (2.0 * h[:, None])
    return 0.5 * (hess + np.swapaxes(hess, 1, 2))


def _sigma_gradient(sig: Array, v: Array, s1: Array, s2: Array, s3: Array, inv_h: Array) -> Array:
    """``dL / dsigma`` ``(F,)`` of the one-factor Laplace objective from per-group sums.

    ``J_sigma - 1/2 sum_g (H_{g,sigma} + H_{g,v} dv_g/dsigma) / H_g`` with ``H_{g,v} =
    -sigma^3 S3_g`` and ``dv_g / dsigma = (S1_g + sigma v_g S2_g) / H_g``; all arrays
    ``(G, F)`` (``sig`` ``(1, F)``).
    """
    h_v = -(sig**3) * s3
    j_v_sigma = s1 + sig * v * s2
    h_sigma = -2.0 * sig * s2 - sig * sig * v * s3
    return np.asarray(
        (v * s1).sum(axis=0) - 0.5 * ((h_sigma + h_v * j_v_sigma * inv_h) * inv_h).sum(axis=0)
    )


class MarginalObjective:
    """What the Laplace objectives (ML, REML, several factors) share: data and value.

    Holds the fixed-effect problem, the counts and the count-only parts of the
    log-likelihood (:func:`batchglm.solvers.count_table.table_and_constant`); assembles
    the Laplace value ``sum ll + constant - 1/2 |v|^2 - 1/2 log det(curvature)`` plus the
    count table's scale terms, and wraps evaluations for the engine.
    """

    base: Problem
    y: Array
    table: CountTable | None
    constant: Array

    def _set_data(
        self, problem: Problem, y: Array, table: CountTable | None, constant: Array | None
    ) -> None:
        self.base = problem
        self.y = np.ascontiguousarray(y)
        sg = problem.scale_groups
        self.table, self.constant = table_and_constant(
            problem.family, self.y, sg.index, sg.n_groups, table, constant
        )

    def _scale(self, b: Array) -> tuple[Array, Array]:
        """Scale predictor per scale group ``(n_groups, F)`` and per observation."""
        p = self.base
        if p.family.has_scale:
            groups = p.eta_scale_groups(b)
            return groups, p.scale_groups.expand(groups)
        zeros = np.zeros((1, b.shape[0]))
        return zeros, zeros

    def _count_terms(
        self, eta_s_groups: Array, order: int
    ) -> tuple[Array, Array | None, Array | None] | None:
        """Return the count table's scale terms (value, first, second derivatives) or ``None``."""
        if self.table is None:
            return None
        return self.table.group_sums(self.base.family, eta_s_groups, order)

    def _value(
        self,
        ll: Array,
        v: Array,
        counts: tuple[Array, Array | None, Array | None] | None,
        *log_curvature: Array,
    ) -> Array:
        """Assemble the Laplace value ``(F,)``.

        From ``ll`` ``(n, F)`` or ``(G, F)``, the modes ``v`` and the terms of the log
        determinant of the curvature ``(F,)`` each (for REML also ``-p log 2 pi``, the
        constant of the integrated fixed effects), subtracted one by one, halved.
        """
        value = ll.sum(axis=0) + self.constant - 0.5 * (v * v).sum(axis=0)
        for term in log_curvature:
            value = value - 0.5 * term
        if counts is not None:
            value = value + counts[0].sum(axis=0)
        return value

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Value, gradient and Hessian per feature (each objective defines it).

        Parameters
        ----------
        theta : ndarray
            ``(F, k)`` parameters in the objective's layout.
        order : int
            0 for the value only, 2 for gradient and Hessian too.

        Returns
        -------
        ll, grad, hess : ndarray
            ``(F,)``, ``(F, k)``, ``(F, k, k)`` (``None`` for order 0).

        Raises
        ------
        NotImplementedError
            On the base class itself.
        """
        raise NotImplementedError

    def evaluate_terms(self, theta: Array, order: int) -> Evaluation:
        """:meth:`evaluate` with the size of the summed terms (for the engine's noise test).

        Parameters
        ----------
        theta : ndarray
            As in :meth:`evaluate`.
        order : int
            As in :meth:`evaluate`.

        Returns
        -------
        Evaluation
            Value, gradient, Hessian and magnitude.
        """
        return laplace_evaluation(*self.evaluate(theta, order), self.constant)


class LaplaceObjective(MarginalObjective):
    """Laplace marginal log-likelihood of a block of features, parameters ``[a, sigma, b]``.

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs, family (``nb`` or ``poisson``) and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    groups : GroupSums
        Random-intercept group of each observation.
    modes : ndarray, optional
        Starting modes ``(n_groups, F)`` (standardised, ``u / sigma``).
    """

    def __init__(
        self,
        problem: Problem,
        y: Array,
        groups: GroupSums,
        modes: Array | None = None,
        table: CountTable | None = None,
        constant: Array | None = None,
        moments: GroupMoments | None = None,
    ) -> None:
        self._set_data(problem, y, table, constant)
        self._problem = OuterProblem(problem)
        self.groups = groups
        self.modes = np.zeros((groups.n_groups, y.shape[1])) if modes is None else modes
        self.last_mode: Mode | FusedMode | None = None
        if moments is None:
            zc = problem.scale.reduced if problem.family.has_scale else None
            moments = GroupMoments(problem.rows.xc, zc, groups)
        self.moments = moments
        #: The compiled per-group passes (:mod:`batchglm.mixed.group_pass`) where they
        #: apply; otherwise NumPy derivative arrays and sparse group sums.
        self.group_pass: GroupPass | None = None
        if applies(problem.family.name, self.y):
            loc_basis, scale_basis = moments.bases()
            self.group_pass = GroupPass(
                problem.family.name,
                self.y,
                groups.index,
                groups.n_groups,
                loc_basis,
                scale_basis,
            )
        #: Mode derivatives ``dv_g / dtheta`` ``(G, F, k)`` at ``theta_ref`` (the last
        #: order-2 point): the next evaluation starts its inner solve at the modes predicted
        #: to first order, so one or two inner Newton steps reach them.
        self.sens: Array | None = None
        self.theta_ref: Array | None = None
        #: Use the central differences of the gradient instead of the analytic Hessian
        #: (kept to check the analytic one).
        self.differenced = False

    @property
    def problem(self) -> OuterProblem:
        """Parameter layout for the Newton engine."""
        return self._problem

    def subset(self, keep: NDArray[np.bool_]) -> LaplaceObjective:
        """Restrict to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over features.

        Returns
        -------
        LaplaceObjective
            The objective over the kept features.
        """
        table = self.table.subset(keep) if self.table is not None else None
        out = LaplaceObjective(
            self.base,
            self.y[:, keep],
            self.groups,
            self.modes[:, keep],
            table,
            self.constant[keep],
            self.moments,
        )
        if self.sens is not None and self.theta_ref is not None:
            out.sens, out.theta_ref = self.sens[:, keep], self.theta_ref[keep]
        out.differenced = self.differenced
        if self.group_pass is None:
            out.group_pass = None
        return out

    def _value_and_gradient(
        self, theta: Array, order: int, start: Array, hessian: bool = False
    ) -> tuple[Array, Array | None, Mode | FusedMode, Array | None]:
        if self.group_pass is not None:
            return self._fused_value_and_gradient(theta, order, start, hessian)
        p = self.base
        fam = p.family
        kl = p.k_loc
        a, sigma, b = theta[:, :kl], theta[:, kl], theta[:, kl + 1 :]
        eta_fixed = p.eta_loc(a, out=np.empty((self.y.shape[0], theta.shape[0])))
        eta_s_groups, eta_scale = self._scale(b)
        mode = solve_modes(fam, self.y, eta_fixed, eta_scale, sigma, self.groups, start)
        sig = sigma[None, :]
        v = mode.v
        curv = 1.0 - sig * sig * mode.s2
        counts = self._count_terms(eta_s_groups, order)
        ll = self._value(mode.der.ll, v, counts, np.log(curv).sum(axis=0))
        if order == 0:
            return ll, None, mode, None
        der = mode.der
        if hessian:
            hd = higher_derivatives(fam.name, self.y, mode.eta, eta_scale)
            d3, c3 = hd.d3, hd.c3
        else:
            d3, c3 = third_derivatives(fam.name, self.y, mode.eta, eta_scale)
        s3 = self.groups(d3)
        h_v = -(sig**3) * s3
        # Per-group factors of the curvature correction -1/2 sum_g (H_theta + H_v dv/dtheta)/H.
        inv_h = 1.0 / curv
        dir_w = self.groups.expand(sig * h_v * inv_h * inv_h)
        third_w = self.groups.expand(sig * sig * inv_h)
        grad = np.empty_like(theta)
        w_loc = der.d_loc - 0.5 * (dir_w * der.d2_loc - third_w * d3)
        grad[:, :kl] = (p.rows.xc.T @ w_loc).T
        grad[:, kl] = _sigma_gradient(sig, v, mode.s1, mode.s2, s3, inv_h)
        scale_counts = None
        if fam.has_scale:
            assert der.d_scale is not None and der.d2_cross is not None and c3 is not None
            w_scale = der.d_scale - 0.5 * (dir_w * der.d2_cross - third_w * c3)
            d_s = p.scale_groups(w_scale)
            if counts is not None:
                assert counts[1] is not None and counts[2] is not None
                d_s = d_s + counts[1]
                zr = p.scale_rows
                scale_counts = np.einsum("gf,gi,gj->fij", counts[2], zr, zr)
            grad[:, kl + 1 :] = (p.scale_rows.T @ d_s).T
        if not hessian:
            return ll, grad, mode, None
        mom = self.moments
        raw = (
            mom.raw(der.d2_loc, der.d2_cross, der.d2_scale),
            mom.raw(hd.d3, hd.c3, hd.e3),
            mom.raw(hd.d4, hd.c4, hd.e4),
        )
        hess = laplace_hessian(mom, sigma, v, mode.s1, mode.s2, raw, scale_counts)
        return ll, grad, mode, hess

    def _fused_value_and_gradient(
        self, theta: Array, order: int, start: Array, hessian: bool
    ) -> tuple[Array, Array | None, FusedMode, Array | None]:
        """:meth:`_value_and_gradient` from the per-group sums of the compiled passes.

        The same formulas, with every sum over observations taken by group in the pass at
        the mode: ``x^T w`` of a weight ``w = d - 1/2 (dir_g d2 - third_g d3)`` whose
        per-group factors multiply group sums is ``sum_g (M1(d) - 1/2 dir_g M1(d2) + 1/2
        third_g M1(d3))``, with ``M1`` the first moments of the design rows.
        """
        p = self.base
        fam = p.family
        kl = p.k_loc
        assert self.group_pass is not None
        a, sigma, b = theta[:, :kl], theta[:, kl], theta[:, kl + 1 :]
        eta_fixed = p.eta_loc(a, out=np.empty((self.y.shape[0], theta.shape[0])))
        eta_s_groups, eta_scale = self._scale(b)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mode = solve_modes_fused(
                self.group_pass, eta_fixed, eta_scale, sigma, start, with_moments=order > 0
            )
        sig = sigma[None, :]
        v = mode.v
        curv = 1.0 - sig * sig * mode.s2
        counts = self._count_terms(eta_s_groups, order)
        ll = self._value(mode.ll, v, counts, np.log(curv).sum(axis=0))
        if order == 0:
            return ll, None, mode, None
        mm = mode.moments
        assert mm is not None
        loc2, loc3 = mm.loc[0], mm.loc[1]
        s3 = loc3[..., 0, 0]
        h_v = -(sig**3) * s3
        inv_h = 1.0 / curv
        dir_w = (sig * h_v * inv_h * inv_h)[..., None]
        third_w = (sig * sig * inv_h)[..., None]
        grad = np.empty_like(theta)
        g_loc = mm.first_loc[..., 1:] - 0.5 * (
            dir_w * loc2[..., 1:, 0] - third_w * loc3[..., 1:, 0]
        )
        grad[:, :kl] = g_loc.sum(axis=0)
        grad[:, kl] = _sigma_gradient(sig, v, mode.s1, mode.s2, s3, inv_h)
        scale_counts = None
        if fam.has_scale:
            assert mm.first_scale is not None and mm.cross is not None
            c2, c3 = mm.cross[0], mm.cross[1]
            g_s = (
                mm.first_scale[..., 1:] - 0.5 * (dir_w * c2[..., 0, 1:] - third_w * c3[..., 0, 1:])
            ).sum(axis=0)
            if counts is not None:
                assert counts[1] is not None and counts[2] is not None
                g_s = g_s + (p.scale_rows.T @ counts[1]).T
                zr = p.scale_rows
                scale_counts = np.einsum("gf,gi,gj->fij", counts[2], zr, zr)
            grad[:, kl + 1 :] = g_s
        if not hessian:
            return ll, grad, mode, None
        raw = (mm.raw(2), mm.raw(3), mm.raw(4))
        hess = laplace_hessian(self.moments, sigma, v, mode.s1, mode.s2, raw, scale_counts)
        return ll, grad, mode, hess

    def _mode_sensitivities(self, theta: Array, mode: Mode | FusedMode) -> list[Array]:
        """``dv_g / dtheta_i = J_{v_g theta_i} / H_g`` per parameter, each ``(n_groups, F)``."""
        p = self.base
        kl = p.k_loc
        sig = theta[None, :, kl]
        inv_h = 1.0 / (1.0 - sig * sig * mode.s2)
        if isinstance(mode, FusedMode):
            mm = mode.moments
            assert mm is not None
            out = [sig * mm.loc[0][..., 1 + i, 0] * inv_h for i in range(kl)]
            out.append((mode.s1 + sig * mode.v * mode.s2) * inv_h)
            if mm.cross is not None:
                out += [sig * mm.cross[0][..., 0, 1 + i] * inv_h for i in range(p.k_scale)]
            return out
        d2 = mode.der.d2_loc
        out = [sig * self.groups(d2 * p.rows.xc[:, i : i + 1]) * inv_h for i in range(kl)]
        out.append((mode.s1 + sig * mode.v * mode.s2) * inv_h)
        if p.family.has_scale:
            c2 = mode.der.d2_cross
            assert c2 is not None
            zc = p.scale.reduced
            out += [sig * self.groups(c2 * zc[:, i : i + 1]) * inv_h for i in range(p.k_scale)]
        return out

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Laplace log-likelihood, its gradient and its Hessian for every feature.

        Parameters
        ----------
        theta : ndarray
            ``(F, k_loc + 1 + k_scale)``: free location coefficients, ``sigma``, free scale
            coefficients.
        order : int
            0 for the value only, 2 for gradient and Hessian too.

        Returns
        -------
        ll : ndarray
            ``(F,)`` Laplace marginal log-likelihood, constants included.
        grad : ndarray or None
            ``(F, k)`` analytic gradient.
        hess : ndarray or None
            ``(F, k, k)`` analytic Hessian (:mod:`batchglm.mixed.outer_hessian`), or the
            symmetrised central differences of the gradient when ``differenced`` is set.
        """
        start = self.modes
        if self.sens is not None and self.theta_ref is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                shift = np.einsum("gfk,fk->gf", self.sens, theta - self.theta_ref)
                # Trust the first-order prediction only for small moves of the predictor
                # (long trial steps of the outer Newton iteration start from the old modes).
                small = np.all(np.abs(shift * theta[None, :, self.base.k_loc]) <= 0.5, axis=0)
            start = np.where(small[None, :], self.modes + shift, self.modes)
        analytic = order > 0 and not self.differenced
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, grad, mode, hess = self._value_and_gradient(theta, order, start, analytic)
        # A failed inner solve (overflow far from the optimum) must not poison later starts.
        self.modes = np.where(np.isfinite(mode.v), mode.v, 0.0)
        self.last_mode = mode
        if order == 0:
            if self.sens is not None:
                self.theta_ref = theta.copy()  # the modes now belong to ``theta``
            return ll, None, None
        assert grad is not None
        sens = self._mode_sensitivities(theta, mode)
        self.sens = np.stack(sens, axis=-1)
        self.theta_ref = theta.copy()
        if hess is not None:
            return ll, grad, hess

        def gradient(point: Array, i: int, h: Array) -> Array:
            shift = sens[i] * (h * np.sign(point[:, i] - theta[:, i]))[None, :]
            g = self._value_and_gradient(point, 2, mode.v + shift)[1]
            assert g is not None
            return g

        return ll, grad, differenced_hessian(theta, gradient)
