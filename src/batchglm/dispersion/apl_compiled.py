"""The numba kernels of :mod:`batchglm.dispersion.apl_kernel` (imported on first use only).

Plain loops over one feature at a time; see :mod:`batchglm.dispersion.apl_kernel` for the
formulas and :class:`batchglm.dispersion.adjusted_profile.AdjustedProfile` for the NumPy
reference they are tested against.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

Array = NDArray[np.float64]

_jit = njit(cache=True, nogil=True)
#: The grid's kernel: ``error_model="numpy"`` (no division-by-zero branch) and reassociated
#: sums let the compiler vectorise the loop over observations; no ``nnan``/``ninf``
#: assumptions, so zero means (``log mu = -inf``, never selected) stay harmless.
_jit_fast = njit(
    cache=True,
    nogil=True,
    error_model="numpy",
    fastmath={"reassoc", "contract", "nsz", "arcp"},
)
#: Helpers of the vectorised loops, inlined by numba (a call would stop the vectoriser).
_jit_inline = njit(
    cache=True,
    nogil=True,
    error_model="numpy",
    fastmath={"reassoc", "contract", "nsz", "arcp"},
    inline="always",
)


@_jit
def _fill(m: Array, rows: Array, wsum: Array) -> None:
    """``m = rows^T diag(wsum) rows`` (symmetric)."""
    n_rows, k = rows.shape
    for a in range(k):
        for b in range(a, k):
            s = 0.0
            for d in range(n_rows):
                s += wsum[d] * rows[d, a] * rows[d, b]
            m[a, b] = s
            m[b, a] = s


@_jit
def _solve_into(lu: Array, piv: NDArray[np.intp], b: Array, k: int) -> None:
    """Solve ``A x = b`` in place for every column of ``b`` from ``A``'s LU factors."""
    for j in range(b.shape[1]):
        for c in range(k):
            p = piv[c]
            if p != c:
                tmp = b[c, j]
                b[c, j] = b[p, j]
                b[p, j] = tmp
        for r in range(1, k):
            s = b[r, j]
            for c in range(r):
                s -= lu[r, c] * b[c, j]
            b[r, j] = s
        for r in range(k - 1, -1, -1):
            s = b[r, j]
            for c in range(r + 1, k):
                s -= lu[r, c] * b[c, j]
            b[r, j] = s / lu[r, r]


@_jit
def _lu(m: Array, piv: NDArray[np.intp], k: int) -> float:
    """LU with partial pivoting in place (row swaps recorded in ``piv``); ``log |det|``."""
    out = 0.0
    for c in range(k):
        p = c
        big = abs(m[c, c])
        for r in range(c + 1, k):
            if abs(m[r, c]) > big:
                big = abs(m[r, c])
                p = r
        piv[c] = p
        if big == 0.0:
            return -math.inf
        if p != c:
            for j in range(k):
                tmp = m[c, j]
                m[c, j] = m[p, j]
                m[p, j] = tmp
        pv = m[c, c]
        out += math.log(abs(pv))
        for r in range(c + 1, k):
            fac = m[r, c] / pv
            m[r, c] = fac
            for j in range(c + 1, k):
                m[r, j] -= fac * m[c, j]
    return out


#: Below this ratio of the smallest LU pivot to the largest diagonal entry, ``X^T W X`` is
#: too ill-conditioned for its normal-equations factorisation (weights floored at ``1e-10``
#: next to weights of 1e4 in separated features lose about 1e-4 of ``log det``): the
#: log-determinant and traces are then taken from an orthogonal factorisation of
#: ``diag(sqrt(w)) X`` instead, whose error grows with the condition number, not its square.
_ILL = 1e-6


@_jit
def _orthogonal(rows: Array, w: Array, qmat: Array, k: int) -> float:
    """Thin ``Q`` of ``diag(sqrt(w)) rows`` by Gram-Schmidt, twice; returns ``log det M``.

    ``M = rows^T diag(w) rows = R^T R``; ``log det M = 2 sum log R_jj``. Each column is
    orthogonalised twice against the previous ones ("twice is enough"), so ``Q`` is
    orthonormal to rounding even when ``M`` is ill-conditioned. ``-inf`` when singular.
    """
    n_rows = rows.shape[0]
    out = 0.0
    for j in range(k):
        for d in range(n_rows):
            qmat[d, j] = math.sqrt(w[d]) * rows[d, j]
        for _ in range(2):
            for i in range(j):
                c = 0.0
                for d in range(n_rows):
                    c += qmat[d, i] * qmat[d, j]
                for d in range(n_rows):
                    qmat[d, j] -= c * qmat[d, i]
        norm = 0.0
        for d in range(n_rows):
            norm += qmat[d, j] * qmat[d, j]
        norm = math.sqrt(norm)
        if norm == 0.0:
            return -math.inf
        out += 2.0 * math.log(norm)
        for d in range(n_rows):
            qmat[d, j] /= norm
    return out


@_jit
def _ill(lu: Array, m_diag: Array, k: int) -> bool:
    """Tell whether the LU pivots show ``M`` too ill-conditioned for the normal equations."""
    top = 0.0
    for a in range(k):
        top = max(top, abs(m_diag[a]))
    low = math.inf
    for a in range(k):
        low = min(low, abs(lu[a, a]))
    return not low > _ILL * top


@_jit
def _logdet_spd(m: Array, k: int) -> float:
    """``log det m`` of a symmetric positive definite ``m`` by elimination without pivoting.

    One logarithm per matrix (the product of the pivots, rescaled before it could leave
    the floating-point range) instead of one per pivot; overwrites ``m``. ``NaN`` when a
    pivot falls below :data:`_ILL` of the largest diagonal entry (ill-conditioned or not
    positive definite): the caller then uses :func:`_orthogonal`.
    """
    top = 0.0
    for a in range(k):
        top = max(top, m[a, a])
    prod = 1.0
    out = 0.0
    for c in range(k):
        pv = m[c, c]
        if not pv > _ILL * top:
            return math.nan
        prod *= pv
        if prod > 1e150 or prod < 1e-150:
            out += math.log(prod)
            prod = 1.0
        for r in range(c + 1, k):
            fac = m[r, c] / pv
            for j in range(c + 1, k):
                m[r, j] -= fac * m[c, j]
    return out + math.log(prod)


@_jit_inline
def _log1p_unit(p: float) -> float:
    """``log1p(p)`` for ``0 <= p <= 1`` as ``2 atanh(s)``, ``s = p / (2 + p)``.

    The odd series of ``atanh`` in ``s <= 1/3`` to the term ``s^35 / 35`` (truncation below
    ``1e-17``), in Horner form: within about 2 ulp of ``log1p`` on ``[0, 1]``. Unlike a call
    to the C library's ``log1p`` it is plain arithmetic, so the grid's loop over
    observations is vectorised.
    """
    s = p / (2.0 + p)
    s2 = s * s
    acc = 1.0 / 35.0
    acc = acc * s2 + 1.0 / 33.0
    acc = acc * s2 + 1.0 / 31.0
    acc = acc * s2 + 1.0 / 29.0
    acc = acc * s2 + 1.0 / 27.0
    acc = acc * s2 + 1.0 / 25.0
    acc = acc * s2 + 1.0 / 23.0
    acc = acc * s2 + 1.0 / 21.0
    acc = acc * s2 + 1.0 / 19.0
    acc = acc * s2 + 1.0 / 17.0
    acc = acc * s2 + 1.0 / 15.0
    acc = acc * s2 + 1.0 / 13.0
    acc = acc * s2 + 1.0 / 11.0
    acc = acc * s2 + 1.0 / 9.0
    acc = acc * s2 + 1.0 / 7.0
    acc = acc * s2 + 1.0 / 5.0
    acc = acc * s2 + 1.0 / 3.0
    return 2.0 * s + 2.0 * s * s2 * acc


@_jit_fast
def grid(
    y: Array,
    mu: Array,
    size: Array,
    row_of: NDArray[np.intp],
    rows: Array,
    points: Array,
    floor: float,
    like: Array,
    logdet: Array,
) -> None:
    """Fill ``like`` and ``logdet`` ``(G, F)``; see :func:`.apl_kernel.grid_terms`.

    ``log1p(q)`` is ``log1p(q)`` for ``q <= 1`` and ``log(mu) - t + log1p(1 / q)`` above
    (``log mu`` once per observation), both through :func:`_log1p_unit`; the working
    weight ``mu / (1 + q)`` is ``r / (1 + 1 / q)`` above 1.
    """
    n_feat, n = y.shape
    n_rows, k = rows.shape
    wsum = np.empty(n_rows)
    wobs = np.empty(n)
    log_mu = np.empty(n)
    inv_mu = np.empty(n)
    m = np.empty((k, k))
    qmat = np.empty((n_rows, k))
    for f in range(n_feat):
        mu_f = mu[f]
        y_f = y[f]
        for i in range(n):
            log_mu[i] = math.log(mu_f[i])
            inv_mu[i] = 1.0 / mu_f[i]
        for g in range(points.size):
            t = points[g]
            r = math.exp(t)
            inv_r = math.exp(-t)
            s_y = 0.0
            s_n = 0.0
            for i in range(n):
                q = mu_f[i] * inv_r
                above = q > 1.0
                p = r * inv_mu[i] if above else q
                l1 = _log1p_unit(p) + (log_mu[i] - t if above else 0.0)
                s_y += y_f[i] * l1
                s_n += size[i] * l1
                w = (r if above else mu_f[i]) / (1.0 + p)
                wobs[i] = (w if w > floor else floor) * size[i]
            like[g, f] = s_y + r * s_n
            for d in range(n_rows):
                wsum[d] = 0.0
            for i in range(n):
                wsum[row_of[i]] += wobs[i]
            _fill(m, rows, wsum)
            value = _logdet_spd(m, k)
            if math.isnan(value):
                value = _orthogonal(rows, wsum, qmat, k)
            logdet[g, f] = value


@_jit_fast
def newton(
    y: Array,
    mu: Array,
    log_mu: Array,
    size: Array,
    row_of: NDArray[np.intp],
    rows: Array,
    t_all: Array,
    floor: float,
    order: int,
    magnitude: bool,
    out: Array,
) -> None:
    """Fill ``out`` ``(F, 4)``; see :func:`batchglm.dispersion.apl_kernel.newton_terms`.

    The loop over observations has no calls into the C library (``log q = log mu - t``
    with ``log mu`` given, ``log1p`` as in :func:`grid`), so it is vectorised; all
    derivatives are computed whatever ``order`` (they cost little next to the loads).
    """
    n_feat, n = y.shape
    n_rows, k = rows.shape
    a0 = np.empty(n)
    a1 = np.empty(n)
    a2 = np.empty(n)
    w0 = np.empty(n_rows)
    w1 = np.empty(n_rows)
    w2 = np.empty(n_rows)
    m = np.empty((k, k))
    m1 = np.empty((k, k))
    m2 = np.empty((k, k))
    m_diag = np.empty(k)
    qmat = np.empty((n_rows, k))
    piv = np.empty(k, dtype=np.intp)
    for f in range(n_feat):
        t = t_all[f]
        r = math.exp(t)
        inv_r = math.exp(-t)
        y_f = y[f]
        mu_f = mu[f]
        lmu_f = log_mu[f]
        ll = 0.0
        big = 0.0
        dl = 0.0
        d2l = 0.0
        for i in range(n):
            yi = y_f[i]
            mi = mu_f[i]
            ni = size[i]
            rn = r * ni
            q = mi * inv_r
            above = q > 1.0
            lq = lmu_f[i] - t
            l1 = _log1p_unit(r / mi if above else q) + (lq if above else 0.0)
            pos = yi > 0.0
            ll += (yi * (lq - l1) if pos else 0.0) - rn * l1
            big += (yi * (abs(lq) + l1) if pos else 0.0) + rn * l1
            inv = 1.0 / (1.0 + q)
            w_raw = mi * inv
            low = w_raw < floor
            a0[i] = (floor if low else w_raw) * ni
            g1 = rn * (q * inv - l1) - yi * inv
            dl += g1
            dw = 0.0 if low else mi * q * inv * inv * ni
            a1[i] = dw
            a2[i] = dw * (q - 1.0) * inv
            d2l += g1 + (yi + mi * q * ni) * inv * inv
        for d in range(n_rows):
            w0[d] = 0.0
            w1[d] = 0.0
            w2[d] = 0.0
        for i in range(n):
            d = row_of[i]
            w0[d] += a0[i]
            w1[d] += a1[i]
            w2[d] += a2[i]
        _fill(m, rows, w0)
        for a in range(k):
            m_diag[a] = m[a, a]
        logdet = _lu(m, piv, k)
        ill = _ill(m, m_diag, k)
        if ill:
            logdet = _orthogonal(rows, w0, qmat, k)
        out[f, 0] = ll - 0.5 * logdet
        out[f, 3] = big + 0.5 * abs(logdet)
        if order == 0:
            continue
        tr1 = 0.0
        tr2 = 0.0
        tr11 = 0.0
        if ill:
            # M^-1 M_j = R^-1 (Q^T diag(w_j / w) Q) R: the traces from Q alone.
            for d in range(n_rows):
                lev = 0.0
                for b in range(k):
                    lev += qmat[d, b] * qmat[d, b]
                tr1 += w1[d] / w0[d] * lev
                tr2 += w2[d] / w0[d] * lev
            if order >= 2:
                for b in range(k):
                    for c in range(k):
                        bb = 0.0
                        for d in range(n_rows):
                            bb += w1[d] / w0[d] * qmat[d, b] * qmat[d, c]
                        tr11 += bb * bb
        else:
            _fill(m1, rows, w1)
            _solve_into(m, piv, m1, k)
            for b in range(k):
                tr1 += m1[b, b]
            if order >= 2:
                _fill(m2, rows, w2)
                _solve_into(m, piv, m2, k)
                for b in range(k):
                    tr2 += m2[b, b]
                    for c in range(k):
                        tr11 += m1[b, c] * m1[c, b]
        out[f, 1] = dl - 0.5 * tr1
        if order >= 2:
            out[f, 2] = d2l - 0.5 * (tr2 - tr11)


#: Above this ``r`` the count terms use Stirling's series term by term (as
#: :mod:`batchglm.families.special_diff`, whose threshold it is).
_SERIES_FROM = 50.0
#: Integer counts up to this take ``gammaln(y + r) - gammaln(r)`` and its derivatives as
#: finite sums over ``r + j``, ``j < y`` (the log of a product below ``70^16``).
_SMALL_COUNT = 16.0


@_jit
def _digamma(x: float) -> float:
    """``digamma(x)`` for ``x > 0``: shifted up to 20, then the asymptotic series."""
    acc = 0.0
    while x < 20.0:
        acc -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv2 * (
        1.0 / 12.0
        - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0)))
    )
    return acc + math.log(x) - 0.5 * inv - series


@_jit
def _trigamma(x: float) -> float:
    """``polygamma(1, x)`` for ``x > 0``, as :func:`batchglm.families.special_diff.trigamma`."""
    acc = 0.0
    while x < 20.0:
        acc += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    series = inv + inv2 * (
        0.5
        + inv
        * (
            1.0 / 6.0
            + inv2 * (-1.0 / 30.0 + inv2 * (1.0 / 42.0 + inv2 * (-1.0 / 30.0 + inv2 * 5.0 / 66.0)))
        )
    )
    return acc + series


@_jit
def count_sums(
    values: Array,
    mult: Array,
    ptr: NDArray[np.intp],
    t_all: Array,
    order: int,
    out: Array,
) -> None:
    """Add ``sum m (gammaln(y + r) - gammaln(r))`` and its ``t``-derivatives per feature.

    The entries of feature ``f`` (distinct counts ``values`` with multiplicities ``mult``)
    are ``ptr[f]:ptr[f + 1]``. The formulas are those of
    :mod:`batchglm.families.special_diff` (plain differences up to ``r = 50``, Stirling's
    series term by term above) and :meth:`batchglm.families.nb.NegativeBinomial.count_terms`
    (``d/dt = r digamma_diff``, ``d2/dt2 = d/dt + r^2 trigamma_diff``). Columns 0-2 of
    ``out`` get the value and derivatives, column 3 the value's size.
    """
    for f in range(ptr.size - 1):
        r = math.exp(t_all[f])
        big = r > _SERIES_FROM
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        if not big:
            # The functions at r once per feature (r is shared by its entries).
            lg_r = math.lgamma(r)
            dg_r = _digamma(r) if order >= 1 else 0.0
            tg_r = _trigamma(r) if order >= 2 else 0.0
        for e in range(ptr[f], ptr[f + 1]):
            y = values[e]
            m = mult[e]
            x = y + r
            if big:
                ix = 1.0 / x
                ir = 1.0 / r
                lg = (
                    (r - 0.5) * math.log1p(y / r)
                    + y * (math.log(x) - 1.0)
                    + (ix - ir) / 12.0
                    - (ix**3 - ir**3) / 360.0
                    + (ix**5 - ir**5) / 1260.0
                )
                dg = (
                    math.log1p(y / r)
                    - (ix - ir) / 2.0
                    - (ix**2 - ir**2) / 12.0
                    + (ix**4 - ir**4) / 120.0
                    - (ix**6 - ir**6) / 252.0
                )
                tg = (
                    -y / (x * r)
                    + (ix**2 - ir**2) / 2.0
                    + (ix**3 - ir**3) / 6.0
                    - (ix**5 - ir**5) / 30.0
                    + (ix**7 - ir**7) / 42.0
                )
            elif y <= _SMALL_COUNT and y == math.floor(y):
                # Small integer counts: gamma(y + r) / gamma(r) = r (r + 1) ... (r + y - 1).
                prod = 1.0
                dg = 0.0
                tg = 0.0
                for j in range(int(y)):
                    rj = r + j
                    prod *= rj
                    dg += 1.0 / rj
                    tg -= 1.0 / (rj * rj)
                lg = math.log(prod)
            else:
                lg = math.lgamma(x) - lg_r
                dg = _digamma(x) - dg_r if order >= 1 else 0.0
                tg = _trigamma(x) - tg_r if order >= 2 else 0.0
            s0 += m * lg
            if order >= 1:
                d1 = r * dg
                s1 += m * d1
                if order >= 2:
                    s2 += m * (d1 + r * r * tg)
        out[f, 0] += s0
        out[f, 3] += abs(s0)
        if order >= 1:
            out[f, 1] += s1
        if order >= 2:
            out[f, 2] += s2
