"""Analytic Hessian of the one-factor Laplace objective.

Notation as in :mod:`batchglm.mixed.laplace`: parameters ``theta = [a, sigma, b]`` (``k``
of them), modes ``v_g(theta)``, ``J(theta, v) = sum_j ll_j - sum_g v_g^2 / 2`` and
``H_g = 1 - sigma^2 S2_g`` with ``S2_g = sum_{j in g} d2_j``; ``L = J(theta, v(theta)) -
1/2 sum_g log H_g``. With one random-intercept factor the inner problem separates by group,
so every mode derivative and every curvature term is a per-group scalar (per feature), and
the Hessian is assembled from per-group weighted moments of the design rows:

* ``d^2/dtheta^2 J(theta, v(theta)) = J_thth + sum_g J_{th v_g} J_{v_g th} / H_g``
  (``J_v = 0`` at the mode, ``J_vv = -H_g``);
* ``Dv_g = J_{v_g th} / H_g`` (implicit function theorem), ``D eta_j = P_j + sigma Dv_g``
  with ``P_j = (x_j, v_g, 0)`` the direct derivative of the predictor, ``D zeta_j =
  (0, 0, z_j)``;
* the second derivatives of the modes follow from differentiating the mode equation
  ``sigma S1_g - v_g = 0`` twice:
  ``H_g D^2 v_g = e_s DS1^T + DS1 e_s^T + sigma M3_g + sigma S2_g (e_s Dv^T + Dv e_s^T)``,
  ``M3_g = sum_{j in g} [d3 D eta D eta^T + c3 (D eta D zeta^T + D zeta D eta^T) +
  e3 D zeta D zeta^T]``, ``DS1 = sum_j (d2 D eta_j + c2 D zeta_j)``;
* ``D^2 log H_g = D^2 H_g / H_g - DH_g DH_g^T / H_g^2`` with ``DH_g = -2 sigma S2_g e_s -
  sigma^2 DS2_g``, ``D^2 H_g = -2 S2_g e_s e_s^T - 2 sigma (e_s DS2^T + DS2 e_s^T) -
  sigma^2 D^2 S2_g`` and ``D^2 S2_g = M4_g + S3_g D^2 eta_g``, ``D^2 eta_g = e_s Dv^T +
  Dv e_s^T + sigma D^2 v_g``, ``M4_g`` like ``M3_g`` with the fourth derivatives of
  :mod:`batchglm.mixed.third_derivatives`.

(Standard implicit differentiation of a Laplace approximation, as in TMB's automatic
differentiation of the inner problem; written out here for the scalar per-group case.)
The moments are one sparse product per derivative with all observations (no
``n_obs x n_obs`` array), so one Hessian costs about as much as one gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]


def _outer(a: Array, b: Array) -> Array:
    return a[..., :, None] * b[..., None, :]


def _sym(a: Array) -> Array:
    return a + np.swapaxes(a, -1, -2)


class GroupMoments:
    """Per-group weighted moments of the design rows, embedded in parameter space.

    Parameters
    ----------
    xc : ndarray
        Reduced location design ``(n_obs, k_loc)``.
    zc : ndarray or None
        Reduced scale design ``(n_obs, k_scale)``; ``None`` without a scale.
    groups : GroupSums
        Random-intercept group of each observation.

    Notes
    -----
    Parameter ``i < k_loc`` is a location coefficient, ``k_loc`` is ``sigma``, the rest are
    scale coefficients.
    """

    def __init__(self, xc: Array, zc: Array | None, groups: GroupSums) -> None:
        n = xc.shape[0]
        self.kl = xc.shape[1]
        self.ks = 0 if zc is None else zc.shape[1]
        self.k = self.kl + 1 + self.ks
        self.n_groups = groups.n_groups
        xa = np.column_stack([np.ones(n), xc])
        ones = np.ones((n, 1))
        # Second moments only where `second` needs them, symmetric ones as upper triangles;
        # `first` needs only the first moments (a quarter of the products or fewer).
        self._hh = self._operator(xa, xa, groups.index, symmetric=True)
        self._h1 = self._operator(xa, ones, groups.index)
        self._zc = zc
        if zc is not None:
            za = np.column_stack([np.ones(n), zc])
            self._hz = self._operator(xa, za, groups.index)
            self._zz = self._operator(za, za, groups.index, symmetric=True)
            self._z1 = self._operator(za, ones, groups.index)

    def _operator(
        self, a: Array, b: Array, index: NDArray[np.intp], symmetric: bool = False
    ) -> tuple[sparse.csr_array, int, int, bool]:
        """Sparse ``(G m, n)`` map of weights to ``sum_{j in g} w_j a_ji b_jl``.

        ``m = p q`` products, or ``p (p + 1) / 2`` (upper triangle) when ``symmetric``.
        """
        n, p = a.shape
        q = b.shape[1]
        if symmetric:
            rows_i, cols_i = np.triu_indices(p)
            prod = a[:, rows_i] * b[:, cols_i]
        else:
            prod = (a[:, :, None] * b[:, None, :]).reshape(n, p * q)
        m = prod.shape[1]
        rows = index[:, None] * m + np.arange(m)[None, :]
        cols = np.broadcast_to(np.arange(n)[:, None], rows.shape)
        op = sparse.csr_array(
            (prod.ravel(), (rows.ravel(), cols.ravel())), shape=(self.n_groups * m, n)
        )
        op.sum_duplicates()
        return op, p, q, symmetric

    def _apply(self, op: tuple[sparse.csr_array, int, int, bool], w: Array) -> Array:
        matrix, p, q, symmetric = op
        flat = np.asarray(matrix @ w).reshape(self.n_groups, -1, w.shape[1])
        if symmetric:
            rows_i, cols_i = np.triu_indices(p)
            out = np.empty((self.n_groups, w.shape[1], p, q))
            flat_t = np.moveaxis(flat, 2, 1)  # (G, F, m)
            out[..., rows_i, cols_i] = flat_t
            out[..., cols_i, rows_i] = flat_t
            return out
        return np.moveaxis(flat.reshape(self.n_groups, p, q, w.shape[1]), 3, 1)  # (G, F, p, q)

    def first(self, w_h: Array, w_z: Array | None) -> tuple[Array, Array]:
        """``sum_{j in g} (w_h E_j + w_z Q_j)`` and ``sum_{j in g} w_h``.

        Parameters
        ----------
        w_h, w_z : ndarray
            Weights ``(n_obs, F)`` of the location rows ``E_j = (x_j, 0, 0)`` and the scale
            rows ``Q_j = (0, 0, z_j)`` (``w_z`` ignored without a scale).

        Returns
        -------
        m : ndarray
            ``(G, F, k)``.
        w0 : ndarray
            ``(G, F)``.
        """
        kl = self.kl
        t = self._apply(self._h1, w_h)
        m = np.zeros(t.shape[:2] + (self.k,))
        m[..., :kl] = t[..., 1:, 0]
        if self.ks and w_z is not None:
            tz = self._apply(self._z1, w_z)
            m[..., kl + 1 :] = tz[..., 1:, 0]
        return m, t[..., 0, 0]

    def second(self, w_hh: Array, w_hz: Array | None, w_zz: Array | None, alpha: Array) -> Array:
        """``sum_{j in g} [w_hh D D^T + w_hz (D Q^T + Q D^T) + w_zz Q Q^T]``, ``D = E_j + alpha_g``.

        Parameters
        ----------
        w_hh, w_hz, w_zz : ndarray
            Weights ``(n_obs, F)`` (the scale ones ignored without a scale).
        alpha : ndarray
            ``(G, F, k)`` per-group shift of the location row.

        Returns
        -------
        ndarray
            ``(G, F, k, k)``.
        """
        kl = self.kl
        t = self._apply(self._hh, w_hh)
        out = np.zeros(t.shape[:2] + (self.k, self.k))
        out[..., :kl, :kl] = t[..., 1:, 1:]
        e1 = np.zeros(t.shape[:2] + (self.k,))
        e1[..., :kl] = t[..., 1:, 0]
        out += _sym(_outer(e1, alpha)) + t[..., 0, 0][..., None, None] * _outer(alpha, alpha)
        if self.ks and w_hz is not None and w_zz is not None:
            c = self._apply(self._hz, w_hz)
            cross = np.zeros_like(out)
            cross[..., :kl, kl + 1 :] = c[..., 1:, 1:]
            q1 = np.zeros_like(e1)
            q1[..., kl + 1 :] = c[..., 0, 1:]
            out += _sym(cross) + _sym(_outer(alpha, q1))
            zz = self._apply(self._zz, w_zz)
            out[..., kl + 1 :, kl + 1 :] += zz[..., 1:, 1:]
        return out


def laplace_hessian(
    moments: GroupMoments,
    sigma: Array,
    v: Array,
    s1: Array,
    s2: Array,
    d2: tuple[Array, Array | None, Array | None],
    higher: tuple[Array, Array | None, Array | None, Array, Array | None, Array | None],
    scale_counts: Array | None,
) -> Array:
    """Exact Hessian of the one-factor Laplace log-likelihood (formulas: module docstring).

    Parameters
    ----------
    moments : GroupMoments
        Designs and groups.
    sigma : ndarray
        ``(F,)`` random-intercept standard deviations.
    v : ndarray
        ``(G, F)`` standardised modes.
    s1, s2 : ndarray
        ``(G, F)`` group sums of ``d ll / d eta`` and ``d^2 ll / d eta^2`` at the modes.
    d2 : tuple
        Per-observation second derivatives at the modes ``(d2_loc, d2_cross, d2_scale)``
        (the scale ones ``None`` without a scale; count terms excluded).
    higher : tuple
        ``(d3, c3, e3, d4, c4, e4)`` of :func:`batchglm.mixed.third_derivatives.higher_derivatives`.
    scale_counts : ndarray or None
        ``(F, k_scale, k_scale)`` second derivatives of the count terms in the scale
        coefficients.

    Returns
    -------
    ndarray
        ``(F, k, k)``.
    """
    kl, k = moments.kl, moments.k
    d3, c3, e3, d4, c4, e4 = higher
    sig = sigma[None, :]
    h = 1.0 - sig * sig * s2  # (G, F)
    e_s = np.zeros(k)
    e_s[kl] = 1.0
    es = np.broadcast_to(e_s, v.shape + (k,))
    alpha0 = v[..., None] * es
    # The joint log density at the mode.
    j_thth = moments.second(d2[0], d2[1], d2[2], alpha0).sum(axis=0)
    if scale_counts is not None:
        j_thth[:, kl + 1 :, kl + 1 :] += scale_counts
    m2, _ = moments.first(d2[0], d2[1])
    m2 = m2 + s2[..., None] * alpha0
    j_tv = sig[..., None] * m2 + s1[..., None] * es
    dv = j_tv / h[..., None]
    sdv = sig[..., None] * dv
    alpha1 = alpha0 + sdv
    # Derivatives of the modes.
    ds1 = m2 + s2[..., None] * sdv
    m3, s3 = moments.first(d3, c3)
    ds2 = m3 + s3[..., None] * (alpha0 + sdv)
    big_m3 = moments.second(d3, c3, e3, alpha1)
    sym_dv = _sym(_outer(es, dv))
    d2v = (
        _sym(_outer(es, ds1)) + sig[..., None, None] * big_m3 + (sig * s2)[..., None, None] * sym_dv
    ) / h[..., None, None]
    # The log-determinant term.
    dh = -2.0 * (sig * s2)[..., None] * es - (sig * sig)[..., None] * ds2
    d2eta = sym_dv + sig[..., None, None] * d2v
    d2s2 = moments.second(d4, c4, e4, alpha1) + s3[..., None, None] * d2eta
    d2h = (
        -2.0 * s2[..., None, None] * _outer(es, es)
        - 2.0 * sig[..., None, None] * _sym(_outer(es, ds2))
        - (sig * sig)[..., None, None] * d2s2
    )
    hh = h[..., None, None]
    per_group = _outer(j_tv, j_tv) / hh - 0.5 * (d2h / hh - _outer(dh, dh) / (hh * hh))
    return j_thth + per_group.sum(axis=0)
