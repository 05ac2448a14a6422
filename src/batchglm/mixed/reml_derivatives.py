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
    # Cross derivatives in eta and zeta (zeros without a scale, where none is used).
    c2, c3, e3, c4, e4 = hd.cross_terms(der.d2_cross)

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


#: Highest degree in the coordinates ``t_j`` that each derivative term of the compiled
#: pass (numbered as in :meth:`batchglm.mixed.group_pass.GroupPass.weighted_sums`) is
#: summed with: ``d4 e_i e_j c_j`` is of degree four, ``d3 e_i s_j s_j^T`` of three, etc.
_DEGREE = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 2, 7: 3, 8: 4, 9: 2, 10: 3, 11: 4}
#: Largest number of coordinates for which the moments are used (``C(r + 3, 4)`` monomials
#: per term: 35 at 4); wider designs use the per-observation NumPy path.
MAX_RANK = 4
#: Largest size of the moment tensors of one block (11 terms of ``G x F x r^4`` floats);
#: larger blocks (many donors and features, several within-donor columns) use the
#: per-observation NumPy path, whose arrays are ``n_obs x F`` like the fit's others.
MAX_TENSOR_BYTES = 2**28


class DerivativeMoments:
    """Per-group moment tensors of the derivative terms, from one compiled pass.

    The location and scale rows of group ``g`` are ``x_j = X_g t_j`` and ``z_j = Z_g t_j``
    exactly (:class:`batchglm.mixed.group_pass.RowBasis` over both designs, ``t_j = (1,
    varying columns)``). Every sum of :func:`reml_derivatives` is a derivative term times a
    polynomial of degree at most four in ``t_j`` with per-group coefficients, so it is a
    contraction of the tensors ``M_D[g] = sum_{j in g} D_j t_j^{x4}`` (lower degrees are
    the contractions with ``e_0``, since ``t_0 = 1``). The pass sums each distinct
    monomial once, as a product of two monomials of degree two.

    Parameters
    ----------
    xc : ndarray
        ``(n_obs, p)`` free location columns.
    zc : ndarray
        ``(n_obs, k_scale)`` free scale columns (``(n_obs, 0)`` without a scale).
    index : ndarray of int
        ``(n_obs,)`` group of each observation.
    n_groups : int
        Number of groups.
    """

    def __init__(self, xc: Array, zc: Array, index: NDArray[np.intp], n_groups: int) -> None:
        from itertools import combinations_with_replacement, product

        from batchglm.mixed.group_pass import RowBasis

        p = xc.shape[1]
        basis = RowBasis.build(np.column_stack([xc, zc]), index, n_groups)
        r = basis.rank
        self.rank = r
        self.ex = basis.embed[:, 1 : 1 + p, :]
        self.ez = basis.embed[:, 1 + p :, :]
        t = basis.coords
        pairs = [(a, b) for a in range(r) for b in range(a, r)]
        pair_id = {pr: k for k, pr in enumerate(pairs)}
        self.coords = np.ascontiguousarray(np.column_stack([t[:, a] * t[:, b] for a, b in pairs]))
        multisets = list(combinations_with_replacement(range(r), 4))
        ms_id: dict[tuple[int, ...], int] = {m: k for k, m in enumerate(multisets)}
        self.n_mono = len(multisets)
        terms, first, second, slots = [], [], [], []
        for term, degree in _DEGREE.items():
            for k, m in enumerate(multisets):
                if all(x == 0 for x in m[: 4 - degree]):
                    terms.append(term)
                    first.append(pair_id[(m[0], m[1])])
                    second.append(pair_id[(m[2], m[3])])
                    slots.append((term, k))
        self.plan = (
            np.asarray(terms, dtype=np.intp),
            np.asarray(first, dtype=np.intp),
            np.asarray(second, dtype=np.intp),
        )
        self.slots = slots
        self.full_index = np.array(
            [ms_id[tuple(sorted(ix))] for ix in product(range(r), repeat=4)], dtype=np.intp
        )

    def fits(self, n_groups: int, n_feat: int) -> bool:
        """Tell whether the moment tensors of a block stay within ``MAX_TENSOR_BYTES``.

        Parameters
        ----------
        n_groups, n_feat : int
            Groups and features of the block.

        Returns
        -------
        bool
            True where the compiled moments are used.
        """
        size = len(_DEGREE) * n_groups * n_feat * self.rank**4 * 8
        return self.rank <= MAX_RANK and size <= MAX_TENSOR_BYTES

    def tensors(self, acc: Array) -> dict[int, Array]:
        """``M_D`` ``(G, F, r, r, r, r)`` per term from the pass's ``(G, width, F)`` sums."""
        n_groups, _, n_feat = acc.shape
        mono = {t: np.zeros((n_groups, n_feat, self.n_mono)) for t in _DEGREE}
        for col, (term, k) in enumerate(self.slots):
            mono[term][..., k] = acc[:, col, :]
        r = self.rank
        return {
            t: m[..., self.full_index].reshape(n_groups, n_feat, r, r, r, r)
            for t, m in mono.items()
        }


def _free(m: Array, n_free: int) -> Array:
    """Contract the trailing indices of a moment tensor with ``e_0`` down to ``n_free``."""
    while m.ndim > 2 + n_free:
        m = m[..., 0]
    return m


def _con(m: Array, *vecs: Array, free: int = 0) -> Array:
    """Contract the leading indices of ``m`` ``(G, F, r, ...)`` with ``(G, F, r)`` vectors."""
    for vec in vecs:
        m = np.einsum("gfa...,gfa->gf...", m, np.broadcast_to(vec, m.shape[:3]))
    return _free(m, free)


def reml_derivatives_moments(
    problem: Problem,
    moments: DerivativeMoments,
    acc: Array,
    theta: Array,
    v: Array,
    counts: tuple[Array, Array | None, Array | None] | None,
) -> RemlDerivatives:
    """:func:`reml_derivatives` from the per-group moments of one compiled pass.

    The same formulas with every sum over observations written as a contraction of the
    moment tensors of :class:`DerivativeMoments`: the per-observation linear forms
    ``e_i`` become per-group vectors ``phi_i`` (``e_i(j) = t_j . phi_i[g]``), the
    leverages ``c_j = t_j^T Lambda_g t_j`` and ``q_j = t_j . kappa_g``.

    Parameters
    ----------
    problem : Problem
        Fixed-effect designs and family.
    moments : DerivativeMoments
        Coordinates and plan of the pass.
    acc : ndarray
        ``(G, width, F)`` sums of :meth:`GroupPass.weighted_sums` at the joint mode.
    theta : ndarray
        ``(F, 1 + k_scale)``: ``sigma`` and the free scale coefficients.
    v : ndarray
        ``(G, F)`` standardised random intercepts at the joint mode.
    counts : tuple or None
        The count table's scale terms at ``theta`` (order 2), or ``None``.

    Returns
    -------
    RemlDerivatives
        Gradient, Hessian and ``d a* / d(sigma, b)``.
    """
    tens = moments.tensors(acc)
    t1, ts, t2, t3, t4 = tens[1], tens[2], tens[3], tens[4], tens[5]
    c2, c3, c4, e2, e3, e4 = tens[6], tens[7], tens[8], tens[9], tens[10], tens[11]
    ex, ez = moments.ex, moments.ez
    n_groups, n_feat = v.shape
    p = ex.shape[1]
    k = theta.shape[1]
    sigma = theta[:, 0]
    sig = sigma[None, :]
    r = moments.rank
    e0 = np.zeros(r)
    e0[0] = 1.0

    def dense(a2: Array, o2: Array | None = None, tau: Array | None = None) -> Array:
        av = sig[..., None] * np.einsum("gpr,gfr->gfp", ex, a2[..., :, 0])
        vv = sig * sig * a2[..., 0, 0]
        if o2 is not None:
            av = av + np.einsum("gpr,gfr->gfp", ex, o2[..., :, 0])
            vv = vv + 2.0 * sig * o2[..., 0, 0]
        if tau is not None:
            vv = vv + tau
        out = np.zeros((n_feat, p + n_groups, p + n_groups))
        out[:, :p, :p] = np.einsum("gpr,gfrs,gqs->fpq", ex, a2, ex)
        out[:, :p, p:] = np.transpose(av, (1, 2, 0))
        out[:, p:, :p] = np.transpose(av, (1, 0, 2))
        diag = np.arange(p, p + n_groups)
        out[:, diag, diag] = vv.T
        return out

    def vec(g1: Array, d0: Array | None = None) -> Array:
        v_part = sig * g1[..., 0]
        if d0 is not None:
            v_part = v_part + d0
        return np.concatenate([np.einsum("gpr,gfr->fp", ex, g1), v_part.T], axis=1)

    def phi(xi: Array, add: Array | None) -> Array:
        out = np.einsum("gpr,fp->gfr", ex, xi[:, :p])
        shift = sig * xi[:, p:].T
        out[..., 0] += shift if add is None else shift + add
        return np.asarray(out)

    def zeta(i: int) -> Array | None:
        if i == 0:
            return None
        return np.broadcast_to(ez[:, None, i - 1, :], (n_groups, n_feat, r))

    w2 = -_free(t2, 2)
    pinv = _inverse(dense(w2, tau=np.ones_like(v)))
    p_aa, p_av = pinv[:, :p, :p], pinv[:, :p, p:]
    p_vv = np.diagonal(pinv[:, p:, p:], axis1=1, axis2=2).T  # (G, F)
    u = np.einsum("gpr,fpg->gfr", ex, p_av)
    lam = np.einsum("gpr,fpq,gqs->gfrs", ex, p_aa, ex)
    lam += sig[..., None, None] * (u[..., :, None] * e0 + e0[:, None] * u[..., None, :])
    lam += (sig * sig * p_vv)[..., None, None] * np.outer(e0, e0)
    kappa = u + (sig * p_vv)[..., None] * e0

    r_l, xi_l, phi_l, dk = [], [], [], []
    for i in range(k):  # over the outer parameters, not features
        z_i = zeta(i)
        if z_i is None:
            r_i = vec(v[..., None] * _free(t2, 1), _free(t1, 0))
        else:
            r_i = vec(_con(c2, z_i, free=1))
        xi_i = np.einsum("fmn,fn->fm", pinv, r_i)
        phi_i = phi(xi_i, v if i == 0 else None)
        a2 = -_con(t3, phi_i, free=2)
        if z_i is not None:
            a2 = a2 - _con(c3, z_i, free=2)
        r_l.append(r_i)
        xi_l.append(xi_i)
        phi_l.append(phi_i)
        dk.append(dense(a2, w2 if i == 0 else None))

    grad = np.empty_like(theta)
    grad[:, 0] = (v * _free(t1, 0)).sum(axis=0)
    hess = np.empty((n_feat, k, k))
    hess[:, 0, 0] = (v * v * _free(t2, 0)).sum(axis=0)
    if k > 1:
        grad[:, 1:] = np.einsum("gkr,gfr->fk", ez, _free(ts, 1))
        hess[:, 0, 1:] = np.einsum("gkr,gfr,gf->fk", ez, _free(c2, 1), v)
        hess[:, 1:, 0] = hess[:, 0, 1:]
        hess[:, 1:, 1:] = np.einsum("gkr,gfrs,gls->fkl", ez, _free(e2, 2), ez)
        if counts is not None and counts[1] is not None and counts[2] is not None:
            zr = problem.scale_rows
            grad[:, 1:] += (zr.T @ counts[1]).T
            hess[:, 1:, 1:] += np.einsum("gf,gi,gj->fij", counts[2], zr, zr)
    for i in range(k):
        grad[:, i] -= 0.5 * np.einsum("fmn,fnm->f", pinv, dk[i])

    pk = [np.einsum("fmn,fnl->fml", pinv, dk[i]) for i in range(k)]
    t3_full = _free(t3, 3)
    for i in range(k):
        for j in range(i, k):  # over pairs of outer parameters
            zi, zj = zeta(i), zeta(j)
            beta_i, beta_j = xi_l[i][:, p:].T, xi_l[j][:, p:].T
            extra = np.zeros_like(v)
            if i == 0:
                extra = extra + beta_j
            if j == 0:
                extra = extra + beta_i
            g1 = _con(t3, phi_l[i], phi_l[j], free=1) + extra[..., None] * _free(t2, 1)
            if zj is not None:
                g1 = g1 + _con(c3, phi_l[i], zj, free=1)
            if zi is not None:
                g1 = g1 + _con(c3, phi_l[j], zi, free=1)
            if zi is not None and zj is not None:
                g1 = g1 + _con(e3, zi, zj, free=1)
            d0 = None
            if i == 0:
                d0 = _con(t2, phi_l[j])
                if zj is not None:
                    d0 = d0 + _con(c2, zj)
            if j == 0:
                d0 = _con(t2, phi_l[i]) if d0 is None else d0 + _con(t2, phi_l[i])
            xi_ij = np.einsum("fmn,fn->fm", pinv, vec(g1, d0))
            phi_e = phi(xi_ij, extra)
            # sum_j alpha_ij c_j, alpha_ij = -(d4 e_i e_j + c4 (..) + e4 z_i z_j + d3 E_ij).
            quad = np.einsum("gfab,gfab->gf", _con(t4, phi_l[i], phi_l[j], free=2), lam)
            quad += np.einsum("gfab,gfab->gf", _con(t3_full, phi_e, free=2), lam)
            if zj is not None:
                quad += np.einsum("gfab,gfab->gf", _con(c4, phi_l[i], zj, free=2), lam)
            if zi is not None:
                quad += np.einsum("gfab,gfab->gf", _con(c4, phi_l[j], zi, free=2), lam)
            if zi is not None and zj is not None:
                quad += np.einsum("gfab,gfab->gf", _con(e4, zi, zj, free=2), lam)
            tr_kij = -quad.sum(axis=0)
            for first, other, z_other in ((i, j, zj), (j, i, zi)):
                if first == 0:
                    # 2 sum_j alpha_other q_j, alpha = -(d3 e + c3 z).
                    lin = _con(t3, phi_l[other], kappa)
                    if z_other is not None:
                        lin = lin + _con(c3, z_other, kappa)
                    tr_kij -= 2.0 * lin.sum(axis=0)
            if i == 0 and j == 0:
                tr_kij += 2.0 * (w2[..., 0, 0] * p_vv).sum(axis=0)
            tr_two = np.einsum("fmn,fnm->f", pk[i], pk[j])
            hess[:, i, j] += (r_l[i] * xi_l[j]).sum(axis=1) - 0.5 * tr_kij + 0.5 * tr_two
            if j != i:
                hess[:, j, i] = hess[:, i, j]
    sens = np.stack([x[:, :p] for x in xi_l], axis=-1)
    return RemlDerivatives(grad=grad, hess=hess, sens=sens)
