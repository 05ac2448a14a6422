"""Laplace objective for several random-intercept factors (crossed or nested).

With factors ``k = 1..K`` (e.g. donor within batch) the random intercepts of all
``q`` groups enter every observation through its group in each factor, and the modes no
longer separate by group: the inner problem is one ``q``-dimensional concave problem per
feature,

    max_v  sum_j ll_j(eta_j + s_j . v) - |v|^2 / 2,    s_j = Lambda z_j,

``z_j`` the indicator of the observation's groups and ``Lambda = diag(sigma_{k(g)})``. It is
solved by damped Newton with ``(F, q, q)`` batched linear algebra (``H = I - Lambda Z^T
D2 Z Lambda``), fine for ``q`` up to a few hundred. The Laplace objective is ``sum_j ll_j -
|v|^2 / 2 - 1/2 log det H``; its analytic gradient generalises the one-factor formulas of
:mod:`batchglm.mixed.laplace` with ``c_j = s_j^T H^-1 s_j`` and ``r = H^-1 t``,
``t_g = sigma_g sum_{j in g} d3_j c_j``:

* ``dL/da = X^T (d1 + (d3 c + d2 w) / 2)``, ``w_j = s_j . r``;
* ``dL/db`` likewise with the scale derivatives ``c1, c2, c3``;
* ``dL/dsigma_k = sum_j d1_j e_jk + sum_{g in k} diag(M Lambda H^-1)_g + 1/2 sum_j d3_j
  c_j e_jk + 1/2 (sum_{g in k} r_g (Z^T d1)_g + sum_j d2_j e_jk w_j)``, ``e_jk`` the mode
  of the observation's group in factor ``k`` and ``M = Z^T D2 Z``.

The Hessian is analytic (:mod:`batchglm.mixed.joint_derivatives`); the central difference of
this gradient stays behind ``DIFFERENCED`` to check it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.families import Derivatives
from batchglm.mixed.grouping import Grouping
from batchglm.mixed.joint_derivatives import joint_hessian
from batchglm.mixed.laplace import MarginalObjective, OuterProblem, differenced_hessian
from batchglm.mixed.third_derivatives import higher_derivatives, third_derivatives
from batchglm.solvers.count_table import CountTable
from batchglm.solvers.linalg import solve_or_nan
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]

_TOL = 1e-10
_MAX_ITER = 100
_MAX_HALVINGS = 40
#: Difference the analytic gradient for the Hessian in new objectives (the method before
#: issue 15's fourth round; kept to check and time against).
DIFFERENCED = False


class JointLayout:
    """Where every observation sits among the ``q`` groups of all factors.

    Parameters
    ----------
    groupings : list of Grouping
        The factors.
    n_obs : int
        Number of observations.
    """

    def __init__(self, groupings: list[Grouping], n_obs: int) -> None:
        sizes = [g.n_groups for g in groupings]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        self.q = int(sum(sizes))
        #: Column of each observation's group in each factor, ``(K, n_obs)``.
        self.cols = np.stack([g.sums.index + o for g, o in zip(groupings, offsets, strict=True)])
        rows = np.tile(np.arange(n_obs), len(groupings))
        self.z = sparse.csr_array(
            (np.ones(rows.size), (rows, self.cols.ravel())), shape=(n_obs, self.q)
        )
        self.zt = self.z.T.tocsr()
        self.factor_of = np.repeat(np.arange(len(groupings)), sizes)
        # Per pair of factors, the distinct (group, group) cells that occur: Z^T D Z has
        # entries only there, so it is built from sums over cells (no q^2 x n_obs array).
        self.cells: list[tuple[sparse.csr_array, NDArray[np.intp], NDArray[np.intp]]] = []
        for k in range(len(groupings)):
            for kk in range(k, len(groupings)):
                pairs, index = np.unique(
                    np.stack([self.cols[k], self.cols[kk]], axis=1), axis=0, return_inverse=True
                )
                index = index.ravel()
                ind = sparse.csr_array(
                    (np.ones(n_obs), (index, np.arange(n_obs))), shape=(pairs.shape[0], n_obs)
                )
                self.cells.append((ind, pairs[:, 0], pairs[:, 1]))

    def cross(self, w: Array) -> Array:
        """``Z^T diag(w_f) Z`` for every feature, ``(F, q, q)``.

        Parameters
        ----------
        w : ndarray
            Per-observation weights ``(n_obs, F)``.

        Returns
        -------
        ndarray
            The batched matrices.
        """
        out = np.zeros((w.shape[1], self.q, self.q))
        for ind, rows, cols in self.cells:
            sums = np.asarray(ind @ w).T
            out[:, rows, cols] = sums
            out[:, cols, rows] = sums
        return out


class JointProblem(OuterProblem):
    """Parameter layout ``[a, sigma_1..sigma_K, b]`` for the Newton engine."""

    n_factors: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.k_loc = self.base.k_loc + self.n_factors


class JointLaplaceObjective(MarginalObjective):
    """Laplace marginal log-likelihood with several random-intercept factors.

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs, family (``nb`` or ``poisson``) and offsets.
    y : ndarray
        Counts ``(n_obs, F)``.
    groupings : list of Grouping
        The factors.
    modes : ndarray, optional
        Starting standardised modes ``(q, F)``.
    """

    def __init__(
        self,
        problem: Problem,
        y: Array,
        groupings: list[Grouping],
        modes: Array | None = None,
        table: CountTable | None = None,
        constant: Array | None = None,
        layout: JointLayout | None = None,
    ) -> None:
        self._set_data(problem, y, table, constant)
        self._problem = JointProblem(problem)
        self._problem.n_factors = len(groupings)
        self._problem.k_loc = problem.k_loc + len(groupings)
        self.groupings = groupings
        self.layout = layout if layout is not None else JointLayout(groupings, y.shape[0])
        self.q = self.layout.q
        self.cols = self.layout.cols
        self.z = self.layout.z
        self.zt = self.layout.zt
        self.factor_of = self.layout.factor_of
        self.modes = np.zeros((self.q, y.shape[1])) if modes is None else modes
        #: Central differences of the gradient instead of the analytic Hessian
        #: (:mod:`batchglm.mixed.joint_derivatives`; kept to check it).
        self.differenced = DIFFERENCED
        self.last_hessian: Array | None = None

    @property
    def problem(self) -> JointProblem:
        """Parameter layout for the Newton engine."""
        return self._problem

    def subset(self, keep: NDArray[np.bool_]) -> JointLaplaceObjective:
        """Restrict to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over features.

        Returns
        -------
        JointLaplaceObjective
            The objective over the kept features.
        """
        table = self.table.subset(keep) if self.table is not None else None
        out = JointLaplaceObjective(
            self.base,
            self.y[:, keep],
            self.groupings,
            self.modes[:, keep],
            table,
            self.constant[keep],
            self.layout,
        )
        out.differenced = self.differenced
        return out

    def _eta(self, eta_fixed: Array, sig_g: Array, v: Array) -> Array:
        return eta_fixed + np.asarray(self.z @ (sig_g * v))

    def _objective(self, ll: Array, v: Array) -> Array:
        return ll.sum(axis=0) - 0.5 * (v * v).sum(axis=0)

    def solve_modes(
        self, eta_fixed: Array, eta_scale: Array, sig_g: Array, v0: Array
    ) -> tuple[Array, Array, Derivatives, Array, Array]:
        """Joint modes ``(q, F)``, predictor, terms, ``Z^T d1`` and ``H`` at the modes.

        A feature is done when its Newton step is below tolerance, is not finite, or cannot
        be made to gain by halving (at its mode to rounding; the same step would fail
        again). Later iterations work on the features not yet done only, so one slow
        feature no longer makes every feature of the block pay for its iterations.
        """
        fam = self.base.family
        n_feat = v0.shape[1]
        v = v0.copy()
        eye = np.eye(self.q)
        zd1 = np.zeros((self.q, n_feat))
        h = np.tile(eye, (n_feat, 1, 1))
        act = np.arange(n_feat)
        y, e_fix, e_scale, sg, va = self.y, eta_fixed, eta_scale, sig_g, v.copy()
        eta = self._eta(e_fix, sg, va)
        der = fam.derivatives(y, eta, e_scale, 2)
        stale = False
        for _ in range(_MAX_ITER + 1):
            zd1_a = np.asarray(self.zt @ der.d_loc)
            m = self.layout.cross(der.d2_loc)
            sgt = sg.T
            h_a = eye - sgt[:, :, None] * m * sgt[:, None, :]
            zd1[:, act], h[act] = zd1_a, h_a
            grad = sg * zd1_a - va
            # NaN (the feature stops) where a trial overflowed the predictor, never a raise.
            step = solve_or_nan(h_a, grad.T).T
            stop = ~np.isfinite(step).all(axis=0) | np.all(
                np.abs(step) <= _TOL * (1.0 + np.abs(va)), axis=0
            )
            if stop.all():
                break
            step[:, stop] = 0.0
            # At most one unit of predictor change per factor and step.
            big = np.abs(sg * step).max(axis=0) * len(self.groupings)
            step = step / np.maximum(big, 1.0)
            base = self._objective(der.ll, va)
            trial = va + step
            eta = self._eta(e_fix, sg, trial)
            der = fam.derivatives(y, eta, e_scale, 2)
            # A trial whose value is not finite (a predictor overflowed) is rejected too.
            floor = base - 1e-13 * (1.0 + np.abs(base))
            bad = ~stop & ~(self._objective(der.ll, trial) >= floor)
            for _ in range(_MAX_HALVINGS):
                if not bad.any():
                    break
                step[:, bad] /= 2
                trial = np.where(bad[None, :], va + step, trial)
                eta = self._eta(e_fix, sg, trial)
                der = fam.derivatives(y, eta, e_scale, 2)
                bad &= ~(self._objective(der.ll, trial) >= floor)
            trial[:, bad] = va[:, bad]
            stop |= bad
            va = trial
            v[:, act] = va
            if stop.all():
                stale = bool(bad.any())  # eta and der are at the last rejected trial
                break
            if stop.any():
                keep = ~stop
                act = act[keep]
                y = self.y[:, act]
                e_fix, sg, va = e_fix[:, keep], sg[:, keep], va[:, keep]
                e_scale = e_scale[:, keep]
                eta = self._eta(e_fix, sg, va)
                der = fam.derivatives(y, eta, e_scale, 2)
            elif bad.any():
                eta = self._eta(e_fix, sg, va)
                der = fam.derivatives(y, eta, e_scale, 2)
        if stale or act.size < n_feat:
            eta = self._eta(eta_fixed, sig_g, v)
            der = fam.derivatives(self.y, eta, eta_scale, 2)
        return v, eta, der, zd1, h

    def _value_and_gradient(
        self, theta: Array, order: int, start: Array
    ) -> tuple[Array, Array | None, Array]:
        p = self.base
        fam = p.family
        kl = p.k_loc
        n_fac = len(self.groupings)
        a, sigma, b = theta[:, :kl], theta[:, kl : kl + n_fac], theta[:, kl + n_fac :]
        sig_g = sigma.T[self.factor_of]  # (q, F)
        eta_fixed = p.eta_loc(a, out=np.empty((self.y.shape[0], theta.shape[0])))
        eta_s_groups, eta_scale = self._scale(b)
        v, eta, der, zd1, h = self.solve_modes(eta_fixed, eta_scale, sig_g, start)
        counts = self._count_terms(eta_s_groups, order)
        # A trial step can make the inner Hessian singular (a variance near e^40); such a
        # feature's Laplace value is undefined (log det -inf would read as +inf), so it is
        # NaN and the step is rejected, and its inverse below is NaN instead of failing the
        # whole batch.
        sign, logdet = np.linalg.slogdet(h)
        singular = (sign <= 0) | ~np.isfinite(logdet)
        ll = self._value(der.ll, v, counts, np.where(singular, 0.0, logdet))
        ll = np.where(singular, np.nan, ll)
        if order == 0:
            return ll, None, v
        hd = None if self.differenced else higher_derivatives(fam.name, self.y, eta, eta_scale)
        d3, c3 = (
            third_derivatives(fam.name, self.y, eta, eta_scale) if hd is None else (hd.d3, hd.c3)
        )
        eye = np.eye(h.shape[-1])
        hinv: Array = np.asarray(
            np.linalg.inv(np.where(singular[:, None, None], eye, h)), dtype=np.float64
        )  # (F, q, q)
        hinv[singular] = np.nan
        # c_j = s_j^T H^-1 s_j over the observation's groups in every pair of factors.
        sig_obs = [sig_g[c] for c in self.cols]  # each (n, F)
        c = np.zeros_like(eta)
        feat = np.arange(theta.shape[0])[None, :]
        for k, ck in enumerate(self.cols):
            for kk, cm in enumerate(self.cols):
                c += sig_obs[k] * sig_obs[kk] * hinv[feat, ck[:, None], cm[:, None]]
        t = sig_g * np.asarray(self.zt @ (d3 * c))
        r = np.einsum("fgh,hf->gf", hinv, t)
        w = np.zeros_like(eta)
        for k, ck in enumerate(self.cols):
            w += sig_obs[k] * r[ck]
        grad = np.empty_like(theta)
        w_loc = der.d_loc + 0.5 * (d3 * c + der.d2_loc * w)
        grad[:, :kl] = (p.rows.xc.T @ w_loc).T
        m = self.layout.cross(der.d2_loc)
        diag = np.einsum("fgh,hf,fhg->gf", m, sig_g, hinv)  # diag(M Lambda H^-1)
        for k, ck in enumerate(self.cols):
            e = v[ck]  # (n, F) mode of each observation's group in factor k
            in_k = self.factor_of == k
            grad[:, kl + k] = (
                (der.d_loc * e).sum(axis=0)
                + diag[in_k].sum(axis=0)
                + 0.5 * (d3 * c * e).sum(axis=0)
                + 0.5 * ((r * zd1)[in_k].sum(axis=0) + (der.d2_loc * e * w).sum(axis=0))
            )
        if fam.has_scale:
            assert der.d_scale is not None and der.d2_cross is not None and c3 is not None
            w_scale = der.d_scale + 0.5 * (c3 * c + der.d2_cross * w)
            d_s = p.scale_groups(w_scale)
            if counts is not None:
                assert counts[1] is not None
                d_s = d_s + counts[1]
            grad[:, kl + n_fac :] = (p.scale_rows.T @ d_s).T
        self.last_hessian = None
        if hd is not None:
            self.last_hessian = joint_hessian(p, self.layout, theta, v, der, hd, hinv, counts)[1]
        return ll, grad, v

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Laplace log-likelihood, its gradient and Hessian per feature (analytic by default).

        Parameters
        ----------
        theta : ndarray
            ``(F, k_loc + K + k_scale)``: location, ``sigma`` per factor, scale.
        order : int
            0 for the value only, 2 for gradient and Hessian too.

        Returns
        -------
        ll, grad, hess : ndarray
            ``(F,)``, ``(F, k)``, ``(F, k, k)`` (``None`` for order 0).
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, grad, v = self._value_and_gradient(theta, order, self.modes)
        # Non-finite modes (a trial point whose predictor overflowed) are never reused as
        # the next start: they would make every later evaluation of the feature NaN,
        # including the boundary fallback's (as with one factor, mixed.laplace).
        self.modes = np.where(np.isfinite(v), v, 0.0)
        if order == 0:
            return ll, None, None
        assert grad is not None
        if self.last_hessian is not None:
            return ll, grad, self.last_hessian

        def gradient(point: Array, i: int, h: Array) -> Array:
            g = self._value_and_gradient(point, 2, v)[1]
            assert g is not None
            return g

        return ll, grad, differenced_hessian(theta, gradient)
