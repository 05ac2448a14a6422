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
The moments come from the pass at the mode of :mod:`batchglm.mixed.group_pass` (one
compiled pass for the value, gradient and Hessian), or, where it does not apply, from one
sparse product per derivative order with all observations (no ``n_obs x n_obs`` array),
so one Hessian costs about as much as one gradient.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.mixed.group_pass import RowBasis
from batchglm.solvers.linalg import GroupSums

Array = NDArray[np.float64]
#: Raw per-group moments of one derivative order: location x location ``(G, F, p, p)``,
#: location x scale ``(G, F, p, ps)`` and scale x scale ``(G, F, ps, ps)`` (``None``
#: without a scale).
Raw = tuple[Array, Array | None, Array | None]


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
    scale coefficients. The raw moments ``sum_{j in g} w_j a_j a_j^T`` (``a_j = (1, x_j)``,
    ``b_j = (1, z_j)``) come either from :meth:`raw` (sparse products of NumPy derivative
    arrays; built on first use) or from the compiled pass of
    :mod:`batchglm.mixed.group_pass`; :meth:`first` and :meth:`second` assemble them.
    """

    def __init__(self, xc: Array, zc: Array | None, groups: GroupSums) -> None:
        self.kl = xc.shape[1]
        self.ks = 0 if zc is None else zc.shape[1]
        self.k = self.kl + 1 + self.ks
        self.n_groups = groups.n_groups
        self._xc = xc
        self._zc = zc
        self._groups = groups
        self._ops: dict[str, tuple[sparse.csr_array, int, int, bool]] = {}
        self._bases: tuple[RowBasis, RowBasis | None] | None = None

    def bases(self) -> tuple[RowBasis, RowBasis | None]:
        """Location and scale rows per group for the compiled pass (built once).

        Returns
        -------
        tuple of RowBasis
            ``(1, x_j)`` and ``(1, z_j)`` (``None`` without a scale).
        """
        if self._bases is None:
            g = self._groups
            loc = RowBasis.build(self._xc, g.index, g.n_groups)
            scale = None if self._zc is None else RowBasis.build(self._zc, g.index, g.n_groups)
            self._bases = (loc, scale)
        return self._bases

    def _operators(self) -> dict[str, tuple[sparse.csr_array, int, int, bool]]:
        # Symmetric second moments as upper triangles.
        if not self._ops:
            n = self._xc.shape[0]
            index = self._groups.index
            xa = np.column_stack([np.ones(n), self._xc])
            self._ops["hh"] = self._operator(xa, xa, index, symmetric=True)
            if self._zc is not None:
                za = np.column_stack([np.ones(n), self._zc])
                self._ops["hz"] = self._operator(xa, za, index)
                self._ops["zz"] = self._operator(za, za, index, symmetric=True)
        return self._ops

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

    def raw(self, w_hh: Array, w_hz: Array | None, w_zz: Array | None) -> Raw:
        """Raw moments ``sum w_hh a a^T``, ``sum w_hz a b^T``, ``sum w_zz b b^T`` by group.

        Parameters
        ----------
        w_hh, w_hz, w_zz : ndarray
            Weights ``(n_obs, F)`` (the scale ones ignored without a scale).

        Returns
        -------
        tuple
            ``(G, F, p, p)``, and ``(G, F, p, ps)``, ``(G, F, ps, ps)`` or ``None``.
        """
        ops = self._operators()
        t = self._apply(ops["hh"], w_hh)
        if not self.ks or w_hz is None or w_zz is None:
            return t, None, None
        return t, self._apply(ops["hz"], w_hz), self._apply(ops["zz"], w_zz)

    def first(self, raw: Raw) -> tuple[Array, Array]:
        """``sum_{j in g} (w_h E_j + w_z Q_j)`` and ``sum_{j in g} w_h`` from raw moments.

        Parameters
        ----------
        raw : tuple
            :meth:`raw` of the weights ``(w_h, w_z, .)``: ``E_j = (x_j, 0, 0)`` are the
            location rows, ``Q_j = (0, 0, z_j)`` the scale rows.

        Returns
        -------
        m : ndarray
            ``(G, F, k)``.
        w0 : ndarray
            ``(G, F)``.
        """
        kl = self.kl
        t, c, _ = raw
        m = np.zeros(t.shape[:2] + (self.k,))
        m[..., :kl] = t[..., 1:, 0]
        if self.ks and c is not None:
            m[..., kl + 1 :] = c[..., 0, 1:]
        return m, t[..., 0, 0]

    def second(self, raw: Raw, alpha: Array) -> Array:
        """``sum_{j in g} [w_hh D D^T + w_hz (D Q^T + Q D^T) + w_zz Q Q^T]``, ``D = E_j + alpha_g``.

        Parameters
        ----------
        raw : tuple
            :meth:`raw` of the weights ``(w_hh, w_hz, w_zz)``.
        alpha : ndarray
            ``(G, F, k)`` per-group shift of the location row.

        Returns
        -------
        ndarray
            ``(G, F, k, k)``.
        """
        kl = self.kl
        t, c, zz = raw
        out = np.zeros(t.shape[:2] + (self.k, self.k))
        out[..., :kl, :kl] = t[..., 1:, 1:]
        e1 = np.zeros(t.shape[:2] + (self.k,))
        e1[..., :kl] = t[..., 1:, 0]
        out += _sym(_outer(e1, alpha)) + t[..., 0, 0][..., None, None] * _outer(alpha, alpha)
        if self.ks and c is not None and zz is not None:
            cross = np.zeros_like(out)
            cross[..., :kl, kl + 1 :] = c[..., 1:, 1:]
            q1 = np.zeros_like(e1)
            q1[..., kl + 1 :] = c[..., 0, 1:]
            out += _sym(cross) + _sym(_outer(alpha, q1))
            out[..., kl + 1 :, kl + 1 :] += zz[..., 1:, 1:]
        return out


def laplace_hessian(
    moments: GroupMoments,
    sigma: Array,
    v: Array,
    s1: Array,
    s2: Array,
    raw: tuple[Raw, Raw, Raw],
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
    raw : tuple
        Raw moments (:meth:`GroupMoments.raw`) at the modes of the derivatives of order 2
        ``(d2_loc, d2_cross, d2_scale)``, 3 ``(d3, c3, e3)`` and 4 ``(d4, c4, e4)`` (see
        :mod:`batchglm.mixed.third_derivatives`; count terms excluded).
    scale_counts : ndarray or None
        ``(F, k_scale, k_scale)`` second derivatives of the count terms in the scale
        coefficients.

    Returns
    -------
    ndarray
        ``(F, k, k)``.
    """
    kl, k = moments.kl, moments.k
    raw2, raw3, raw4 = raw
    sig = sigma[None, :]
    h = 1.0 - sig * sig * s2  # (G, F)
    e_s = np.zeros(k)
    e_s[kl] = 1.0
    es = np.broadcast_to(e_s, v.shape + (k,))
    alpha0 = v[..., None] * es
    # The joint log density at the mode.
    j_thth = moments.second(raw2, alpha0).sum(axis=0)
    if scale_counts is not None:
        j_thth[:, kl + 1 :, kl + 1 :] += scale_counts
    m2, _ = moments.first(raw2)
    m2 = m2 + s2[..., None] * alpha0
    j_tv = sig[..., None] * m2 + s1[..., None] * es
    dv = j_tv / h[..., None]
    sdv = sig[..., None] * dv
    alpha1 = alpha0 + sdv
    # Derivatives of the modes.
    ds1 = m2 + s2[..., None] * sdv
    m3, s3 = moments.first(raw3)
    ds2 = m3 + s3[..., None] * (alpha0 + sdv)
    big_m3 = moments.second(raw3, alpha1)
    sym_dv = _sym(_outer(es, dv))
    d2v = (
        _sym(_outer(es, ds1)) + sig[..., None, None] * big_m3 + (sig * s2)[..., None, None] * sym_dv
    ) / h[..., None, None]
    # The log-determinant term.
    dh = -2.0 * (sig * s2)[..., None] * es - (sig * sig)[..., None] * ds2
    d2eta = sym_dv + sig[..., None, None] * d2v
    d2s2 = moments.second(raw4, alpha1) + s3[..., None, None] * d2eta
    d2h = (
        -2.0 * s2[..., None, None] * _outer(es, es)
        - 2.0 * sig[..., None, None] * _sym(_outer(es, ds2))
        - (sig * sig)[..., None, None] * d2s2
    )
    hh = h[..., None, None]
    per_group = _outer(j_tv, j_tv) / hh - 0.5 * (d2h / hh - _outer(dh, dh) / (hh * hh))
    return j_thth + per_group.sum(axis=0)
