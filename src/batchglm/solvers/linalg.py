"""All linear algebra batched over features lives here.

Per-feature Hessians are sums over observations of ``w_i x_i x_i^T``. They are computed
as one BLAS product of a fixed *pair matrix* (one row per coefficient pair, holding
``x_ij * x_il``) with the ``(n_obs, n_features)`` weights.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


class PairProducts:
    """Weighted cross-products ``A^T diag(w_f) B`` for all features ``f`` at once.

    Parameters
    ----------
    a, b : ndarray
        Designs of shapes ``(n, ka)`` and ``(n, kb)``.
    symmetric : bool
        When ``a is b``, only the upper triangle is computed.

    Notes
    -----
    The pair matrix (``ka * kb`` or ``ka (ka + 1) / 2`` rows of length ``n``) is built on
    the first call, not here: at a million observations it takes hundreds of MB, and a
    problem whose likelihood is summed over design groups instead
    (:mod:`batchglm.solvers.zero_sums`) never uses its per-observation products.
    """

    def __init__(self, a: Array, b: Array, symmetric: bool = False) -> None:
        self.ka, self.kb = a.shape[1], b.shape[1]
        self.symmetric = symmetric
        if symmetric:
            self.rows, self.cols = np.triu_indices(self.ka)
        else:
            grid = np.indices((self.ka, self.kb)).reshape(2, -1)
            self.rows, self.cols = grid[0], grid[1]
        self._a, self._b = a, b
        self._pairs: Array | None = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        """Whether the pair matrix has been allocated."""
        return self._pairs is not None

    @property
    def pairs(self) -> Array:
        """The ``(n_pairs, n)`` pair matrix, built once on first use (thread-safe)."""
        if self._pairs is None:
            with self._lock:
                if self._pairs is None:
                    a, b = self._a, self._b
                    self._pairs = np.ascontiguousarray((a[:, self.rows] * b[:, self.cols]).T)
        return self._pairs

    def __getstate__(self) -> dict[str, object]:
        # Locks do not pickle (dask's distributed workers receive the problem).
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, w: Array) -> Array:
        """Return ``(n_features, ka, kb)`` products for weights ``w`` of shape ``(n, F)``.

        Parameters
        ----------
        w : ndarray
            Weights, shape ``(n, n_features)``.

        Returns
        -------
        ndarray
            The batched products.
        """
        flat = self.pairs @ w
        out = np.empty((w.shape[1], self.ka, self.kb))
        out[:, self.rows, self.cols] = flat.T
        if self.symmetric:
            out[:, self.cols, self.rows] = flat.T
        return out


class GroupSums:
    """Sums over observations that share a group, for all features at once.

    Parameters
    ----------
    index : ndarray of int
        Group of each observation, values in ``[0, n_groups)``.
    n_groups : int
        Number of groups.
    """

    def __init__(self, index: NDArray[np.intp], n_groups: int) -> None:
        self.index = index
        self.n_groups = n_groups
        self.identity = n_groups == index.size and bool(np.all(index == np.arange(index.size)))
        if not self.identity and n_groups > 1:
            from scipy import sparse

            n = index.size
            self.indicator = sparse.csr_array(
                (np.ones(n), (index, np.arange(n))), shape=(n_groups, n)
            )

    def __call__(self, values: Array) -> Array:
        """Sum rows of ``values`` (shape ``(n, F)``) by group -> ``(n_groups, F)``.

        Parameters
        ----------
        values : ndarray
            Per-observation values.

        Returns
        -------
        ndarray
            Per-group sums.
        """
        if self.identity:
            return values
        if self.n_groups == 1:
            return values.sum(axis=0, keepdims=True)
        return np.asarray(self.indicator @ values)

    def expand(self, values: Array) -> Array:
        """Broadcast per-group values ``(n_groups, F)`` to observations ``(n, F)``.

        Parameters
        ----------
        values : ndarray
            Per-group values.

        Returns
        -------
        ndarray
            Per-observation values (a broadcast view for a single group).
        """
        if self.identity:
            return values
        if self.n_groups == 1:
            return values
        return values[self.index]


#: Longest step along a direction of non-negative curvature in the modified Newton step.
_TRUST_RADIUS = 1.0
#: Matrices whose equilibrated smallest eigenvalue is below this share of the largest are
#: not treated as positive definite.
_DEFINITE_RTOL = 1e-12
#: Eigenvalues of an equilibrated information matrix below this share of its largest are
#: floored when inverting (directions the data do not determine).
_FLAT_RTOL = 1e-14


def column_units(matrix: Array) -> Array:
    """Natural unit of each column of a design: its largest absolute value.

    A coefficient times its column's unit is the most the coefficient changes the linear
    predictor, so coefficients measured in these units are comparable whatever the units of
    the covariates. All-zero columns get 1.

    Parameters
    ----------
    matrix : ndarray
        ``(n, k)`` design.

    Returns
    -------
    ndarray
        ``(k,)`` positive units.
    """
    if matrix.shape[0] == 0:
        return np.ones(matrix.shape[1])
    top = np.abs(matrix).max(axis=0)
    return np.where((top > 0) & np.isfinite(top), top, 1.0)


def lstsq_columns(a: Array, b: Array) -> Array:
    """Least squares ``min ||a x - b||`` with the columns of ``a`` equilibrated first.

    ``numpy.linalg.lstsq`` drops singular values below a tolerance relative to the largest
    one, so a design with one column of order 1e8 and another of order 1 would lose the
    latter. Scaling every column to unit maximum first makes the solution scale with the
    units of each column and nothing else.

    Parameters
    ----------
    a : ndarray
        ``(n, k)`` matrix.
    b : ndarray
        ``(n,)`` or ``(n, m)`` right-hand sides.

    Returns
    -------
    ndarray
        ``(k,)`` or ``(k, m)`` minimum-norm solution in the equilibrated basis.
    """
    units = column_units(a)
    sol, *_ = np.linalg.lstsq(a / units, b, rcond=None)
    out: Array = sol / (units if sol.ndim == 1 else units[:, None])
    return out


def _equilibrate(neg: Array) -> tuple[Array, Array]:
    """Jacobi (diagonal) equilibration ``D A D`` with ``D = diag(1 / sqrt|A_ii|)``.

    Returns ``D``'s diagonals ``(F, k)`` and the equilibrated stack. Zero or non-finite
    diagonals keep a factor of 1. Rescaling a parameter by any factor leaves ``D A D``
    unchanged, so decisions taken on it (definiteness, flat directions) do not depend on
    the units of the parameters (van der Sluis, 1969).
    """
    diag = np.abs(np.diagonal(neg, axis1=1, axis2=2))
    ok = np.isfinite(diag) & (diag > 0)
    d = np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)
    return d, neg * d[:, :, None] * d[:, None, :]


def newton_direction(grad: Array, hess: Array) -> tuple[Array, NDArray[np.bool_]]:
    """Solve ``-H d = g`` per feature; fall back to an eigenvalue-modified Newton step.

    The Newton system is solved by Cholesky after Jacobi equilibration of ``-H``, so the
    direction is invariant to rescaling parameters (and the definiteness test is taken on
    the equilibrated matrix). Where ``-H`` is not positive definite, the saddle-free step
    (Dauphin et al., 2014) moves at most one unit along each flat or convex
    eigen-direction: the caller chooses the parameter units (the Newton solver passes
    coefficients in units of their design columns, see :func:`column_units`).

    Parameters
    ----------
    grad : ndarray
        Gradients of the log-likelihood, ``(F, k)``.
    hess : ndarray
        Hessians of the log-likelihood, ``(F, k, k)``.

    Returns
    -------
    direction : ndarray
        Ascent directions, ``(F, k)``.
    modified : ndarray of bool
        Features whose Hessian was not negative definite.
    """
    neg = -hess
    direction = np.empty_like(grad)
    modified = np.zeros(grad.shape[0], dtype=bool)
    d, eq = _equilibrate(neg)
    ok, chol = _cholesky_where_possible(eq)
    if ok.any():
        direction[ok] = d[ok] * _cho_solve(chol, d[ok] * grad[ok])
    bad = ~ok
    if bad.any():
        modified[bad] = True
        direction[bad] = _eig_direction(neg[bad], grad[bad])
    return direction, modified


def _cholesky_where_possible(neg: Array) -> tuple[NDArray[np.bool_], NDArray[np.floating]]:
    """Cholesky factors of the positive definite matrices of a stack, and which those are.

    NumPy's batched Cholesky fails as a whole when one matrix is not positive definite;
    then eigenvalues (cheap for these small matrices) pick the ones that are, so a single
    awkward feature never sends the whole batch to the slower modified step.
    """
    try:
        chol = np.linalg.cholesky(neg)
        ok = np.all(np.isfinite(chol), axis=(1, 2))
        return ok, chol[ok]
    except np.linalg.LinAlgError:
        pass
    finite = np.all(np.isfinite(neg), axis=(1, 2))
    vals = np.linalg.eigvalsh(np.where(finite[:, None, None], neg, 0.0))
    top = np.maximum(np.abs(vals).max(axis=1), np.finfo(np.float64).tiny)
    ok = finite & (vals.min(axis=1) > _DEFINITE_RTOL * top)
    try:
        return ok, np.linalg.cholesky(neg[ok])
    except np.linalg.LinAlgError:
        return np.zeros_like(ok), neg[:0]


def _cho_solve(chol: NDArray[np.floating], rhs: Array) -> Array:
    z = np.linalg.solve(chol, rhs[..., None])
    return np.linalg.solve(np.swapaxes(chol, 1, 2), z)[..., 0]


def _eig_direction(neg_hess: Array, grad: Array) -> Array:
    # Saddle-free Newton: flip negative curvature, and along flat or convex directions move
    # at most one unit (a trust radius in the parameters). This gives an ascent direction
    # of sensible length where the Hessian is indefinite, e.g. far out on the NB size axis,
    # where the likelihood is convex in log r and its curvature vanishes.
    neg_hess = np.where(np.isfinite(neg_hess), neg_hess, 0.0)
    vals, vecs = np.linalg.eigh(neg_hess)
    proj = np.einsum("fji,fj->fi", vecs, grad)
    vals = np.maximum(np.abs(vals), np.abs(proj) / _TRUST_RADIUS)
    vals = np.maximum(vals, 1e-300)
    return np.einsum("fij,fj->fi", vecs, proj / vals)


def inverse_negative(hess: Array) -> Array:
    """Return ``(-H)^-1`` per feature, the covariance of the maximum-likelihood estimate.

    ``-H`` is first Jacobi-equilibrated, ``A = D (-H) D`` with ``D = diag(1 / sqrt|H_ii|)``
    (a zero diagonal keeps a factor of 1), then ``A`` is inverted through its
    eigendecomposition and ``(-H)^-1 = D A^-1 D``. Rescaling a design column by any factor
    ``c`` leaves ``A`` unchanged, so only that coefficient's variances and covariances
    change (by ``1 / c`` per index); every other entry and every Wald statistic stay put.
    Eigenvalues of ``A`` below ``1e-14`` times its largest (directions the data do not
    determine, e.g. a group with only zeros) are floored there: such directions get a huge
    variance along themselves only, and contrasts orthogonal to them keep their variances.

    Parameters
    ----------
    hess : ndarray
        Hessians of the log-likelihood, ``(F, k, k)``.

    Returns
    -------
    ndarray
        Covariances ``(F, k, k)``; NaN for features with non-finite Hessians.
    """
    out = np.full_like(hess, np.nan)
    finite = np.all(np.isfinite(hess), axis=(1, 2))
    if not finite.any():
        return out
    d, eq = _equilibrate(-hess[finite])
    vals, vecs = np.linalg.eigh(eq)
    scale = np.maximum(np.abs(vals).max(axis=1, keepdims=True), 1e-300)
    inv = 1.0 / np.maximum(vals, _FLAT_RTOL * scale)
    cov = np.einsum("fik,fk,fjk->fij", vecs, inv, vecs)
    out[finite] = cov * d[:, :, None] * d[:, None, :]
    return out


def solve_or_nan(a: Array, b: Array) -> Array:
    """Batched ``a^-1 b`` that never raises: NaN rows where ``a`` or ``b`` is not finite.

    NumPy's batched solve fails as a whole when one matrix of the stack is singular; then
    the pseudo-inverse is used for all of them, so one awkward feature (a predictor that
    overflowed on a trial step) never stops the block.

    Parameters
    ----------
    a : ndarray
        ``(F, p, p)`` matrices.
    b : ndarray
        ``(F, p)`` right-hand sides.

    Returns
    -------
    ndarray
        ``(F, p)`` solutions; NaN rows where ``a`` or ``b`` has a non-finite entry.
    """
    finite = np.asarray(np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=1))
    safe = np.where(finite[:, None, None], a, np.eye(a.shape[1]))
    rhs = np.where(finite[:, None], b, 0.0)
    try:
        out = np.linalg.solve(safe, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.einsum("fij,fj->fi", np.linalg.pinv(safe), rhs)
    out[~finite] = np.nan
    return np.asarray(out, dtype=np.float64)
