"""Analytic Hessian of the Laplace likelihood with several random-intercept factors.

The objective of :mod:`batchglm.mixed.joint`: ``L(theta) = J(v*, theta) - 1/2 log det K``
with ``v`` the standardised intercepts of all ``q`` groups of all factors, ``theta = (a,
sigma_1..sigma_K, b)``, ``J = sum_j ll_j(eta_j, zeta_j) - |v|^2 / 2``, ``eta_j = x_j a +
s_j . v`` and ``s_j = sum_k sigma_k e_{g_k(j)}`` (the observation's groups, scaled), so
``K = I + sum_j w_j s_j s_j^T``, ``w_j = -d^2 ll_j / d eta^2``. The same implicit
differentiation as the REML derivatives (:mod:`batchglm.mixed.reml_derivatives`, whose
module docstring has the formulas) with each outer parameter described by what it moves at
fixed ``v``: ``a_l`` the predictor by ``x_jl``; ``sigma_k`` the predictor by ``v_{g_k(j)}``
and the row ``s_j`` by ``e_{g_k(j)}``; ``b_m`` the scale predictor by ``z_jm``:

* ``v_i = dv*/dtheta_i = K^-1 r_i``; ``e_i = s_j . v_i + d eta_j / d theta_i``;
* ``dL/dtheta_i = J_theta_i - 1/2 tr(K^-1 K_i)``;
* ``d^2 L = J_thth + r_i . v_j - 1/2 tr(K^-1 K_ij) + 1/2 tr(K^-1 K_i K^-1 K_j)``.

Per-observation weights times the rows, summed by the layout's sparse products; ``K^-1``
is the ``(q, q)`` inverse the objective already forms. Before, the Hessian was the central
difference of the analytic gradient (``2 k`` gradients per Newton iteration, each with its
own inner solve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Derivatives
from batchglm.mixed.third_derivatives import Higher
from batchglm.solvers.objective import Problem

Array = NDArray[np.float64]


@dataclass
class _Param:
    """What one outer parameter moves at fixed modes (``None``: nothing)."""

    eta: Array | None  # d eta_j / d theta_i, (n, 1) or (n, F)
    zeta: Array | None  # d zeta_j / d theta_i, (n, 1)
    factor: int | None  # sigma_k: the rows s_j move by e_{g_k(j)}


def joint_hessian(
    problem: Problem,
    layout: object,
    theta: Array,
    v: Array,
    der: Derivatives,
    hd: Higher,
    hinv: Array,
    counts: tuple[Array, Array | None, Array | None] | None,
) -> tuple[Array, Array]:
    """Analytic gradient and Hessian of the several-factor Laplace likelihood.

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs and family (``nb`` or ``poisson``).
    layout : JointLayout
        Groups of every observation in every factor (:class:`batchglm.mixed.joint.JointLayout`).
    theta : ndarray
        ``(F, k_loc + K + k_scale)``: location, ``sigma`` per factor, scale.
    v : ndarray
        ``(q, F)`` standardised modes.
    der : Derivatives
        Family derivatives (order 2) at the modes.
    hd : Higher
        Third and fourth derivatives at the modes.
    hinv : ndarray
        ``(F, q, q)`` inverse of ``K`` at the modes.
    counts : tuple or None
        The count table's scale terms (order 2), or ``None``.

    Returns
    -------
    grad : ndarray
        ``(F, k)`` gradient.
    hess : ndarray
        ``(F, k, k)`` Hessian.
    """
    cols: NDArray[np.intp] = layout.cols  # type: ignore[attr-defined]
    z = layout.z  # type: ignore[attr-defined]
    zt = layout.zt  # type: ignore[attr-defined]
    factor_of: NDArray[np.intp] = layout.factor_of  # type: ignore[attr-defined]
    cross = layout.cross  # type: ignore[attr-defined]
    n_fac = cols.shape[0]
    kl = problem.k_loc
    xc = problem.rows.xc
    n_feat, k = theta.shape
    sigma = theta[:, kl : kl + n_fac]
    sig_g = sigma.T[factor_of]  # (q, F)
    feat = np.arange(n_feat)[None, :]
    fam = problem.family
    d1, d2, d3, d4 = der.d_loc, der.d2_loc, hd.d3, hd.d4
    w = -d2
    # Cross derivatives in eta and zeta (zeros without a scale, where none is used).
    c2, c3, e3, c4, e4 = hd.cross_terms(der.d2_cross)
    zc = problem.scale.reduced if fam.has_scale else np.zeros((xc.shape[0], 0))
    in_factor = [factor_of == f for f in range(n_fac)]

    params: list[_Param] = [_Param(xc[:, i : i + 1], None, None) for i in range(kl)]
    params += [_Param(v[cols[f]], None, f) for f in range(n_fac)]
    params += [_Param(None, zc[:, i : i + 1], None) for i in range(zc.shape[1])]

    def dot(xi: Array) -> Array:
        return np.asarray(z @ (sig_g * xi.T))

    def vec(gamma: Array, deltas: dict[int, Array]) -> Array:
        out = sig_g * np.asarray(zt @ gamma)
        for f, delta in deltas.items():
            out = out + np.where(in_factor[f][:, None], np.asarray(zt @ delta), 0.0)
        return np.asarray(out.T)

    def dense(alpha: Array, omegas: dict[int, Array]) -> Array:
        sgt = sig_g.T  # (F, q)
        out = sgt[:, :, None] * cross(alpha) * sgt[:, None, :]
        for f, omega in omegas.items():
            m = np.where(in_factor[f][None, :, None], cross(omega) * sgt[:, None, :], 0.0)
            out = out + m + np.swapaxes(m, 1, 2)
        return np.asarray(out)

    def pick(a: Array, f: int, g: int) -> Array:
        """``a[f', cols[f, j], cols[g, j]]`` per observation and feature ``(n, F)``."""
        return np.asarray(a[feat, cols[f][:, None], cols[g][:, None]])

    sig_obs = [sig_g[c] for c in cols]  # (n, F) each
    lev = np.zeros_like(d1)
    q_lev = [np.zeros_like(d1) for _ in range(n_fac)]
    for f in range(n_fac):
        for g in range(n_fac):
            pfg = pick(hinv, f, g)
            lev += sig_obs[f] * sig_obs[g] * pfg
            q_lev[f] += sig_obs[g] * pfg

    def ds_dot(f: int | None, xi: Array) -> Array | float:
        return 0.0 if f is None else np.asarray(xi.T[cols[f]])

    r_l, xi_l, e_l, a_l, dk = [], [], [], [], []
    for par in params:  # over the outer parameters (a handful), not features
        gamma = np.zeros_like(d1)
        if par.eta is not None:
            gamma = gamma + d2 * par.eta
        if par.zeta is not None:
            gamma = gamma + c2 * par.zeta
        r_i = vec(gamma, {} if par.factor is None else {par.factor: d1})
        xi_i = np.einsum("fmn,fn->fm", hinv, r_i)
        e_i = dot(xi_i) + (par.eta if par.eta is not None else 0.0)
        a_i = -d3 * e_i - (c3 * par.zeta if par.zeta is not None else 0.0)
        r_l.append(r_i)
        xi_l.append(xi_i)
        e_l.append(e_i)
        a_l.append(a_i)
        dk.append(dense(a_i, {} if par.factor is None else {par.factor: w}))

    grad = np.empty_like(theta)
    hess = np.empty((n_feat, k, k))
    zr = problem.scale_rows
    for i, pi in enumerate(params):
        g_i = np.zeros(n_feat)
        if pi.eta is not None:
            g_i = g_i + (d1 * pi.eta).sum(axis=0)
        if pi.zeta is not None:
            assert der.d_scale is not None
            g_i = g_i + (der.d_scale * pi.zeta).sum(axis=0)
        grad[:, i] = g_i - 0.5 * np.einsum("fmn,fnm->f", hinv, dk[i])
        for j in range(i, k):
            pj = params[j]
            h = np.zeros(n_feat)
            if pi.eta is not None and pj.eta is not None:
                h = h + (d2 * pi.eta * pj.eta).sum(axis=0)
            if pi.eta is not None and pj.zeta is not None:
                h = h + (c2 * pi.eta * pj.zeta).sum(axis=0)
            if pi.zeta is not None and pj.eta is not None:
                h = h + (c2 * pj.eta * pi.zeta).sum(axis=0)
            if pi.zeta is not None and pj.zeta is not None:
                assert der.d2_scale is not None
                h = h + (der.d2_scale * pi.zeta * pj.zeta).sum(axis=0)
            hess[:, i, j] = h
    if counts is not None and counts[1] is not None and counts[2] is not None and zc.shape[1]:
        s0 = kl + n_fac
        grad[:, s0:] += (zr.T @ counts[1]).T
        hess[:, s0:, s0:] += np.einsum("gf,gi,gj->fij", counts[2], zr, zr)

    pk = [np.einsum("fmn,fnl->fml", hinv, m) for m in dk]
    for i, pi in enumerate(params):
        for j in range(i, k):  # over pairs of outer parameters
            pj = params[j]
            e_i, e_j = e_l[i], e_l[j]
            cross_v = ds_dot(pi.factor, xi_l[j]) + ds_dot(pj.factor, xi_l[i])
            gamma = d3 * e_i * e_j + d2 * cross_v
            if pj.zeta is not None:
                gamma = gamma + c3 * e_i * pj.zeta
            if pi.zeta is not None:
                gamma = gamma + c3 * e_j * pi.zeta
            if pi.zeta is not None and pj.zeta is not None:
                gamma = gamma + e3 * pi.zeta * pj.zeta
            deltas: dict[int, Array] = {}
            if pi.factor is not None:
                deltas[pi.factor] = d2 * e_j + (c2 * pj.zeta if pj.zeta is not None else 0.0)
            if pj.factor is not None:
                part = d2 * e_i + (c2 * pi.zeta if pi.zeta is not None else 0.0)
                deltas[pj.factor] = deltas.get(pj.factor, 0.0) + part
            xi_ij = np.einsum("fmn,fn->fm", hinv, vec(gamma, deltas))
            big_e = dot(xi_ij) + cross_v
            a_ij = -(d4 * e_i * e_j + d3 * big_e)
            if pj.zeta is not None:
                a_ij = a_ij - c4 * e_i * pj.zeta
            if pi.zeta is not None:
                a_ij = a_ij - c4 * e_j * pi.zeta
            if pi.zeta is not None and pj.zeta is not None:
                a_ij = a_ij - e4 * pi.zeta * pj.zeta
            tr_kij = (a_ij * lev).sum(axis=0)
            if pi.factor is not None:
                tr_kij += 2.0 * (a_l[j] * q_lev[pi.factor]).sum(axis=0)
            if pj.factor is not None:
                tr_kij += 2.0 * (a_l[i] * q_lev[pj.factor]).sum(axis=0)
            if pi.factor is not None and pj.factor is not None:
                tr_kij += 2.0 * (w * pick(hinv, pi.factor, pj.factor)).sum(axis=0)
            tr_two = np.einsum("fmn,fnm->f", pk[i], pk[j])
            hess[:, i, j] += (r_l[i] * xi_l[j]).sum(axis=1) - 0.5 * tr_kij + 0.5 * tr_two
            hess[:, j, i] = hess[:, i, j]
    return grad, hess
