"""Analytic gradient and Hessian of the restricted Laplace likelihood in ``(sigma, b)``.

:mod:`batchglm.mixed.reml` defines ``L_R(theta) = J(xi*, theta) - 1/2 log det K(xi*, theta)
+ p/2 log 2 pi`` with ``xi = (a, v)`` the fixed effects and standardised random intercepts,
``xi*`` their joint mode and ``K = -d^2 J / d xi^2``. Every observation enters through its
predictor ``eta_j = s_j . xi`` with ``s_j = (x_j, sigma e_g(j))`` (linear in ``sigma``:
``ds_j / dsigma = e'_g = (0, e_g)``) and its scale predictor ``zeta_j = z_j b``, so

    K = sum_j w_j s_j s_j^T + diag(0_p, I_G),     w_j = -d^2 ll_j / d eta^2.

Implicit differentiation of the mode equation ``J_xi = 0`` (derived here; the same steps as
the ML Laplace gradient of :mod:`batchglm.mixed.laplace`, one level up):

* ``xi_i = d xi* / d theta_i = K^-1 r_i``, ``r_i = J_{xi theta_i}``;
* ``dL_R / d theta_i = J_{theta_i} - 1/2 tr(K^-1 K_i)`` with ``K_i = dK / d theta_i`` (total
  derivative: the weights move with ``eta_j`` and ``zeta_j``, and ``s_j`` with ``sigma``);
* ``d^2 L_R / d theta_i d theta_j = J_{theta_i theta_j} + r_i . xi_j - 1/2 tr(K^-1 K_ij) +
  1/2 tr(K^-1 K_i K^-1 K_j)``, where ``K_ij`` needs the second derivatives of the mode,
  ``xi_ij = K^-1 rho_ij`` from differentiating ``J_xi(xi*(theta), theta) = 0`` twice.

All of these are per-observation weights (third and fourth derivatives of the
log-likelihood in ``eta`` and ``zeta``, :mod:`batchglm.mixed.third_derivatives`) times the
rows ``s_j``, summed by sparse group sums and design products: no loop over features or
groups and nothing of size ``n_obs x n_obs``. The traces use ``K^-1`` as a dense ``(p + G)``
square per feature (``G`` the number of groups: fine for up to a few hundred donors);
``tr(K^-1 K_ij) = sum_j alpha_ij c_j`` (+ the ``sigma`` terms) with the leverages ``c_j =
s_j^T K^-1 s_j``, so only ``K`` and the first derivatives ``K_i`` are formed densely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.mixed.third_derivatives import higher_derivatives
from batchglm.solvers.linalg import GroupSums, PairProducts
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]


@dataclass
class RemlDerivatives:
    """Analytic derivatives of ``L_R`` at one point.

    Attributes
    ----------
    grad : ndarray
        ``(F, k)`` gradient in ``[sigma, b]`` (``k = 1 + k_scale``).
    hess : ndarray
        ``(F, k, k)`` Hessian.
    sens : ndarray
        ``(F, p, k)`` ``d a* / d(sigma, b)``.
    """

    grad: Array
    hess: Array
    sens: Array


class _Rows:
    """Sums of per-observation weights times the rows ``s_j = (x_j, sigma e_g)``."""

    def __init__(self, xc: Array, groups: GroupSums, pairs: PairProducts, sigma: Array) -> None:
        self.xc, self.groups, self.pairs = xc, groups, pairs
        self.sig = sigma[None, :]
        self.p = xc.shape[1]

    def dot(self, xi: Array) -> Array:
        """``s_j . xi`` per observation ``(n, F)`` for ``xi`` ``(F, p + G)``."""
        p = self.p
        return self.xc @ xi[:, :p].T + self.groups.expand(self.sig * xi[:, p:].T)

    def vec(self, gamma: Array, delta: Array | None = None) -> Array:
        """``sum_j gamma_j s_j + sum_j delta_j e'_g(j)`` ``(F, p + G)``."""
        v_part = self.sig * self.groups(gamma)
        if delta is not None:
            v_part = v_part + self.groups(delta)
        return np.concatenate([(self.xc.T @ gamma).T, v_part.T], axis=1)

    def dense(self, alpha: Array, omega: Array | None = None, tau: Array | None = None) -> Array:
        """``sum_j alpha_j s_j s_j^T + sum_j omega_j (e'_g s_j^T + s_j e'_g^T) + diag(0, tau)``.

        ``(F, p + G, p + G)``; ``tau`` ``(G, F)``.
        """
        p, xc = self.p, self.xc
        n_groups = self.groups.n_groups
        sig = self.sig
        cols = np.stack([self.groups(alpha * xc[:, i : i + 1]) for i in range(p)], axis=-1)
        av = sig[..., None] * cols
        vv = sig * sig * self.groups(alpha)
        if omega is not None:
            av = av + np.stack([self.groups(omega * xc[:, i : i + 1]) for i in range(p)], axis=-1)
            vv = vv + 2.0 * sig * self.groups(omega)
        if tau is not None:
            vv = vv + tau
        out = np.zeros((alpha.shape[1], p + n_groups, p + n_groups))
        out[:, :p, :p] = self.pairs(alpha)
        out[:, :p, p:] = np.transpose(av, (1, 2, 0))
        out[:, p:, :p] = np.transpose(av, (1, 0, 2))
        diag = np.arange(p, p + n_groups)
        out[:, diag, diag] = vv.T
        return out


def _inverse(k: Array) -> Array:
    """Batched inverse; NaN for features whose ``K`` is not finite or singular."""
    finite = np.asarray(np.isfinite(k).all(axis=(1, 2)))
    safe = np.where(finite[:, None, None], k, np.eye(k.shape[1]))
    try:
        out = np.linalg.inv(safe)
    except np.linalg.LinAlgError:
        out = np.linalg.pinv(safe)
    out[~finite] = np.nan
    return np.asarray(out)


def reml_derivatives(
    problem: Problem,
    y: Array,
    groups: GroupSums,
    pairs: PairProducts,
    theta: Array,
    a: Array,
    v: Array,
    eta_scale: Array,
    counts: tuple[Array, Array | None, Array | None] | None,
) -> RemlDerivatives:
    """Analytic gradient and Hessian of ``L_R`` at the joint mode (formulas: module docstring).

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs and family (``nb`` or ``poisson``).
    y : ndarray
        Counts ``(n_obs, F)``.
    groups : GroupSums
        Random-intercept group of each observation.
    pairs : PairProducts
        ``X^T diag(w) X`` of the free location columns.
    theta : ndarray
        ``(F, 1 + k_scale)``: ``sigma`` and the free scale coefficients.
    a : ndarray
        ``(F, p)`` fixed effects at the joint mode.
    v : ndarray
        ``(G, F)`` standardised random intercepts at the joint mode.
    eta_scale : ndarray
        Scale predictor ``log r`` per observation, broadcastable to ``y``.
    counts : tuple or None
        The count table's scale terms at ``theta`` (order 2), or ``None``.

    Returns
    -------
    RemlDerivatives
        Gradient, Hessian and ``d a* / d(sigma, b)``; NaN for features whose joint mode
        is not finite.
    """
    fam = problem.family
    xc = problem.rows.xc
    sigma = theta[:, 0]
    k = theta.shape[1]
    rows = _Rows(xc, groups, pairs, sigma)
    p = xc.shape[1]
    v_obs = groups.expand(v)
    eta = problem.eta_loc(a, out=np.empty(y.shape)) + groups.expand(sigma[None, :] * v)
    der = fam.derivatives(y, eta, eta_scale, 2)
    hd = higher_derivatives(fam.name, y, eta, eta_scale)
    d1, d2, d3, d4 = der.d_loc, der.d2_loc, hd.d3, hd.d4
    w = -d2
    zc = problem.scale.reduced if fam.has_scale else np.zeros((y.shape[0], 0))
    # Cross derivatives in eta and zeta (absent without a scale: then k = 1, never used).
    none = np.zeros((1, 1))
    c2 = der.d2_cross if der.d2_cross is not None else none
    c3 = hd.c3 if hd.c3 is not None else none
    e3 = hd.e3 if hd.e3 is not None else none
    c4 = hd.c4 if hd.c4 is not None else none
    e4 = hd.e4 if hd.e4 is not None else none

    def zs(i: int) -> Array | None:
        return None if i == 0 else zc[:, i - 1 : i]

    kmat = rows.dense(w, tau=np.ones_like(v))
    pinv = _inverse(kmat)
    # Leverages c_j = s_j^T P s_j and q_j = e'_g^T P s_j, per observation.
    p_aa, p_av = pinv[:, :p, :p], pinv[:, :p, p:]
    p_vv = np.diagonal(pinv[:, p:, p:], axis1=1, axis2=2).T  # (G, F)
    sig = sigma[None, :]
    xpx = np.zeros(y.shape)
    xpv_own = np.zeros(y.shape)  # x_j^T P_av[:, g(j)]
    for i in range(p):  # over design columns
        xpv_own += xc[:, i : i + 1] * groups.expand(p_av[:, i, :].T)
        xpx += xc[:, i : i + 1] * (xc @ p_aa[:, i, :].T)
    pvv = groups.expand(p_vv)
    lev = xpx + 2.0 * sig * xpv_own + sig * sig * pvv
    q_lev = xpv_own + sig * pvv

    # First derivatives: r_i, xi_i, e_i (total d eta / d theta_i), alpha_i = dw / d theta_i.
    r, xi, e, alpha, dk = [], [], [], [], []
    for i in range(k):  # over the outer parameters (1 + k_scale), not features
        z_i = zs(i)
        r_i = rows.vec(d2 * v_obs, d1) if z_i is None else rows.vec(c2 * z_i)
        xi_i = np.einsum("fmn,fn->fm", pinv, r_i)
        e_i = rows.dot(xi_i) + (v_obs if i == 0 else 0.0)
        a_i = -d3 * e_i if z_i is None else -d3 * e_i - c3 * z_i
        r.append(r_i)
        xi.append(xi_i)
        e.append(e_i)
        alpha.append(a_i)
        dk.append(rows.dense(a_i, omega=w if i == 0 else None))

    grad = np.empty_like(theta)
    grad[:, 0] = (d1 * v_obs).sum(axis=0)
    if k > 1:
        assert der.d_scale is not None
        j_b = (zc.T @ der.d_scale).T
        if counts is not None and counts[1] is not None:
            j_b = j_b + (problem.scale_rows.T @ counts[1]).T
        grad[:, 1:] = j_b
    for i in range(k):
        grad[:, i] -= 0.5 * np.einsum("fmn,fnm->f", pinv, dk[i])

    # J_theta_theta at the mode.
    hess = np.empty((theta.shape[0], k, k))
    hess[:, 0, 0] = (d2 * v_obs * v_obs).sum(axis=0)
    if k > 1:
        assert der.d2_scale is not None
        hess[:, 0, 1:] = (zc.T @ (c2 * v_obs)).T
        hess[:, 1:, 0] = hess[:, 0, 1:]
        zr = problem.scale_rows
        d2s = problem.scale_groups(der.d2_scale)
        if counts is not None and counts[2] is not None:
            d2s = d2s + counts[2]
        hess[:, 1:, 1:] = np.einsum("gf,gi,gj->fij", d2s, zr, zr)
    pk = [np.einsum("fmn,fnl->fml", pinv, dk[i]) for i in range(k)]
    for i in range(k):
        for j in range(i, k):  # over pairs of outer parameters
            zi, zj = zs(i), zs(j)
            beta_i, beta_j = xi[i][:, p:].T, xi[j][:, p:].T
            # rho_ij: the second-order terms of the mode equation.
            gamma = d3 * e[i] * e[j]
            extra = np.zeros_like(v)
            if i == 0:
                extra = extra + beta_j
            if j == 0:
                extra = extra + beta_i
            gamma = gamma + d2 * groups.expand(extra)
            delta = None
            if zj is not None:
                gamma = gamma + c3 * e[i] * zj
            if zi is not None:
                gamma = gamma + c3 * e[j] * zi
            if zi is not None and zj is not None:
                gamma = gamma + e3 * zi * zj
            # i == 0 makes zi None and j == 0 makes zj None (sigma is the first parameter).
            if i == 0:
                delta = d2 * e[j] if zj is None else d2 * e[j] + c2 * zj
            if j == 0:
                delta = d2 * e[i] if delta is None else delta + d2 * e[i]
            rho = rows.vec(gamma, delta)
            xi_ij = np.einsum("fmn,fn->fm", pinv, rho)
            big_e = rows.dot(xi_ij) + groups.expand(extra)
            a_ij = -(d4 * e[i] * e[j] + d3 * big_e)
            if zj is not None:
                a_ij = a_ij - c4 * e[i] * zj
            if zi is not None:
                a_ij = a_ij - c4 * e[j] * zi
            if zi is not None and zj is not None:
                a_ij = a_ij - e4 * zi * zj
            tr_kij = (a_ij * lev).sum(axis=0)
            if i == 0:
                tr_kij += 2.0 * (alpha[j] * q_lev).sum(axis=0)
            if j == 0:
                tr_kij += 2.0 * (alpha[i] * q_lev).sum(axis=0)
            if i == 0 and j == 0:
                tr_kij += 2.0 * (groups(w) * p_vv).sum(axis=0)
            tr_two = np.einsum("fmn,fnm->f", pk[i], pk[j])
            h_ij = (r[i] * xi[j]).sum(axis=1) - 0.5 * tr_kij + 0.5 * tr_two
            hess[:, i, j] += h_ij
            if j != i:
                hess[:, j, i] = hess[:, i, j]
    sens = np.stack([x[:, :p] for x in xi], axis=-1)
    return RemlDerivatives(grad=grad, hess=hess, sens=sens)
