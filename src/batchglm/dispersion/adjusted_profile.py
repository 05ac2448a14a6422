"""Cox-Reid adjusted profile likelihood of NB scale coefficients, as a Newton objective.

With fitted means ``mu`` held fixed (size factors included), the size of observation ``i``
is ``r_i = exp(z_i . b)`` for free scale coefficients ``b`` (``z_i`` a row of the scale
design after constraints), and

``APL(b) = sum_i l(y_i; mu_i, r_i) - 1/2 log det(X^T W(b) X)``,
``W = diag(mu / (1 + mu / r))``,

with ``X`` the location design after constraints. The second term removes most of the
downward bias of the plain maximum-likelihood dispersion with few residual degrees of
freedom (Cox and Reid, 1987; the adjustment of edgeR, DESeq2 and glmGamPoi). An optional
normal prior on ``log alpha = -log r`` (one scale group only) turns the maximiser into
DESeq2's maximum a posteriori estimate.

:class:`AdjustedProfile` is a :class:`~batchglm.solvers.protocol.SolverObjective` with no
location block: :func:`batchglm.solvers.newton.solve` maximises it, for an intercept-only
scale model (:func:`batchglm.dispersion.cox_reid.cox_reid_log_r`) and for any scale
design (:func:`batchglm.dispersion.cox_reid_design.cox_reid_scale`) alike.

Evaluation. The terms ``gammaln(y + r) - gammaln(r)`` and their derivatives are summed
once per distinct count and scale group (:class:`~batchglm.solvers.count_table.CountTable`).
Every other term is affine in ``y`` at a given mean, so observations with the same
location row, scale row and fitted means (for every feature) are summed into cells where
that cuts the rows at least in half. Derivatives in ``t_i = log r_i`` (``q = mu / r``)::

    W'  = dW/dt   = mu q / (1 + q)^2
    W'' = d2W/dt2 = mu q (q - 1) / (1 + q)^3

and with ``M = X^T W X``, ``h_i = x_i^T M^-1 x_i``, ``A_k = M^-1 X^T diag(W' z_k) X``::

    d log det M / db_k        = sum_i W'_i h_i z_ik          (= trace A_k)
    d2 log det M / db_k db_l  = sum_i W''_i h_i z_ik z_il - trace(A_k A_l)

The likelihood terms use the expressions in ``q``, so they stay accurate up to the Poisson
limit. With one dispersion per feature (one scale column and row) and numba available, the
grid and the evaluations go through the compiled kernels of
:mod:`batchglm.dispersion.apl_kernel` (same formulas; this NumPy code is their reference
and the fallback). The columns of ``X`` are scaled to unit maximum inside (``X^T W X`` stays well
conditioned with covariates on raw scales); values are reported for ``X`` as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from batchglm.dispersion import apl_kernel
from batchglm.families import Family, get_family
from batchglm.solvers.count_table import CountTable
from batchglm.solvers.linalg import PairProducts, column_units
from batchglm.solvers.objective import Evaluation, unique_rows

Array = NDArray[np.float64]

#: Working weights below this are floored so ``X^T W X`` stays invertible for features whose
#: fitted means run to zero (separated groups); where the floor holds, ``W`` is constant.
W_FLOOR = 1e-10
#: Newton step (in ``log r``) below which the maximiser counts as located (see
#: ``SolverOptions.step_tol``); the grid-and-bisection search it replaced bracketed the
#: maximiser to about 1e-13.
STEP_TOL = 1e-10
#: Decrement below which the APL's own value no longer judges a step (see
#: ``SolverOptions.noise_floor``): far below the fit's 1e-6, so walks across the flat
#: stretch towards the Poisson limit are not cut short.
NOISE_FLOOR = 1e-9
#: Observations are summed into cells of equal means when there are at most this share.
_CELL_SHARE = 0.5
#: Entries of the (distinct count, grid point) table of count terms evaluated at once.
_COUNT_CHUNK = 1 << 20


@dataclass(frozen=True)
class LogNormalPrior:
    """Normal prior on ``log alpha`` per feature.

    Attributes
    ----------
    mean : ndarray
        Prior mean of ``log alpha`` per feature (the log of the trend).
    var : float
        Prior variance of ``log alpha``.
    """

    mean: Array
    var: float


@dataclass
class ScaleProblem:
    """Parameter layout of the adjusted profile likelihood: scale coefficients only.

    Satisfies :class:`~batchglm.solvers.protocol.SolverProblem` with ``k_loc = 0``.

    Parameters
    ----------
    scale_rows : ndarray
        ``(n_groups, k_scale)`` distinct rows of the scale design after constraints.
    """

    scale_rows: Array
    k_loc: int = field(init=False, default=0)
    k_scale: int = field(init=False)
    family: Family = field(init=False)
    pp_scale: PairProducts = field(init=False)
    units: Array = field(init=False)

    def __post_init__(self) -> None:
        self.k_scale = self.scale_rows.shape[1]
        self.family = get_family("nb")
        self.pp_scale = PairProducts(self.scale_rows, self.scale_rows, symmetric=True)
        self.units = column_units(self.scale_rows)

    def eta_scale_groups(self, b: Array) -> Array:
        """Scale predictors ``log r`` per scale group.

        Parameters
        ----------
        b : ndarray
            ``(F, k_scale)`` free scale coefficients.

        Returns
        -------
        ndarray
            ``(n_groups, F)``.
        """
        out: Array = self.scale_rows @ b.T
        return out


class AdjustedProfile:
    """The adjusted profile likelihood of a block of features as a function of ``b``.

    Parameters
    ----------
    y : ndarray
        Counts ``(n_obs, F)``.
    mu : ndarray
        Fitted means ``(n_obs, F)``, size factors included; held fixed.
    x : ndarray
        Location design after constraints ``(n_obs, k_loc)``.
    z : ndarray
        Scale design after constraints ``(n_obs, k_scale)``; ``log r = z @ b``.
    prior : LogNormalPrior, optional
        Normal prior on ``log alpha = -log r``; needs a scale design with a single
        distinct row (an intercept-only scale model).

    Raises
    ------
    ValueError
        If a prior is given for a scale design with several distinct rows.
    """

    def __init__(
        self, y: Array, mu: Array, x: Array, z: Array, prior: LogNormalPrior | None = None
    ) -> None:
        y = np.ascontiguousarray(y, dtype=np.float64)
        mu = np.ascontiguousarray(mu, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        units_x = column_units(x)
        x = x / units_x
        #: ``log det`` of the design as given minus that of the scaled one, halved.
        self.log_units_x = float(np.log(units_x).sum())
        rows, group = unique_rows(z) if z.shape[0] else (z, np.zeros(0, dtype=np.intp))
        if prior is not None and rows.shape[0] != 1:
            raise ValueError(
                "a prior on log alpha needs one dispersion per feature (a scale design "
                f"with one distinct row), but the scale design has {rows.shape[0]}."
            )
        self._problem = ScaleProblem(rows)
        self.prior = prior
        self.table = CountTable(y, group, rows.shape[0])
        self.y, self.mu, self.x, self.z, self.n = _cells(y, mu, x, z, group)
        self.positive = self.y > 0
        self.pp_x = PairProducts(self.x, self.x, symmetric=True)
        self.pp_z = PairProducts(self.z, self.z, symmetric=True)
        self._compiled: tuple[Array, Array, Array, NDArray[np.intp], Array] | None = None
        self._entries: tuple[CountTable, tuple[Array, Array, NDArray[np.intp]]] | None = None
        self._log_mu: Array | None = None

    @property
    def problem(self) -> ScaleProblem:
        """The parameter layout (scale coefficients only)."""
        return self._problem

    def subset(self, keep: NDArray[np.bool_]) -> AdjustedProfile:
        """Return the objective over the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            ``(F,)`` mask.

        Returns
        -------
        AdjustedProfile
            The objective of ``keep.sum()`` features.
        """
        out = object.__new__(AdjustedProfile)
        out.__dict__.update(self.__dict__)
        out.y = np.ascontiguousarray(self.y[:, keep])
        out.mu = np.ascontiguousarray(self.mu[:, keep])
        out.positive = out.y > 0
        out._compiled = None
        out._entries = None
        out._log_mu = None
        out.table = self.table.subset(keep)
        if self.prior is not None:
            out.prior = LogNormalPrior(self.prior.mean[keep], self.prior.var)
        return out

    def without_prior(self) -> AdjustedProfile:
        """Return the same objective without its prior (the plain APL).

        Returns
        -------
        AdjustedProfile
            A shallow copy sharing the counts, means and count table.
        """
        out = object.__new__(AdjustedProfile)
        out.__dict__.update(self.__dict__)
        out.prior = None
        return out

    def grid_values(self, grid: Array) -> Array:
        """APL of every feature at each common ``log r`` of ``grid`` (intercept-only scale).

        The same value as :meth:`evaluate` at ``theta = t`` (to rounding), arranged so a
        grid point costs one ``log1p`` and one weight pass over the rows: ``sum y log mu``
        and ``sum y`` are summed once, and the count terms are evaluated once per distinct
        count and grid point and summed per feature with one sparse product.

        Parameters
        ----------
        grid : ndarray
            ``(G,)`` values of ``log r``, shared by all features.

        Returns
        -------
        ndarray
            ``(G, F)`` APL (prior left out), ``-sum log y!`` left out as in :meth:`evaluate`.

        Raises
        ------
        ValueError
            If the scale design has several distinct rows.
        """
        if self._problem.scale_rows.shape[0] != 1:
            raise ValueError(
                "grid values need one dispersion per feature (a scale design with one "
                f"distinct row), but the scale design has {self._problem.scale_rows.shape[0]}."
            )
        y, mu, n = self.y, self.mu, self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            # y log(mu / (mu + r)) = y (log mu - t - log1p(mu / r)), summed over rows.
            sum_y_log_mu = np.where(self.positive, y * np.log(mu), 0.0).sum(axis=0)
        sum_y = y.sum(axis=0)
        size = np.ones((y.shape[0], 1)) if n is None else n
        out = _count_grid(self.table, self._problem.family, grid)
        out -= grid[:, None] * sum_y[None, :]
        out += sum_y_log_mu[None, :] - self.log_units_x
        kernel = self._kernel_inputs()
        if kernel is not None:
            like, logdet = apl_kernel.grid_terms(*kernel, grid, W_FLOOR)
            out -= like
            out -= 0.5 * logdet
            return out
        q = np.empty_like(mu)
        log1p_q = np.empty_like(mu)
        w = np.empty_like(mu)
        for g, t in enumerate(grid):
            np.multiply(mu, np.exp(-t), out=q)
            _log1p(q, w, log1p_q)
            # sum (y + r n) log1p(q): the likelihood's remaining terms.
            out[g] -= np.einsum("if,if->f", y, log1p_q)
            out[g] -= np.exp(t) * (size.T @ log1p_q)[0]
            np.add(q, 1.0, out=w)
            np.divide(mu, w, out=w)
            np.maximum(w, W_FLOOR, out=w)
            if n is not None:
                w *= n
            out[g] -= 0.5 * np.linalg.slogdet(self.pp_x(w))[1]
        return out

    def _kernel_inputs(self) -> tuple[Array, Array, Array, NDArray[np.intp], Array] | None:
        """Return the compiled kernels' arguments (features in rows), ``None`` if inapplicable."""
        n_rows, n_feat = self.y.shape
        prob = self._problem
        if not apl_kernel.applies(n_rows, n_feat, prob.k_scale, prob.scale_rows.shape[0]):
            return None
        if self._compiled is None:
            rows, row_of = unique_rows(self.x) if n_rows else (self.x, np.zeros(0, np.intp))
            size = np.ones(n_rows) if self.n is None else np.ascontiguousarray(self.n[:, 0])
            self._compiled = (
                np.ascontiguousarray(self.y.T),
                np.ascontiguousarray(self.mu.T),
                size,
                np.ascontiguousarray(row_of, dtype=np.intp),
                np.ascontiguousarray(rows),
            )
        return self._compiled

    def _count_entries(self) -> tuple[Array, Array, NDArray[np.intp]]:
        """Return the count table's entries by feature: values, multiplicities, offsets."""
        table = self.table
        if self._entries is None or self._entries[0] is not table:
            feat = table.seg % table.n_feat
            order = np.argsort(feat, kind="stable")
            ptr = np.searchsorted(feat[order], np.arange(table.n_feat + 1)).astype(np.intp)
            values = np.ascontiguousarray(table.values[order], dtype=np.float64)
            mult = np.ascontiguousarray(table.counts[order], dtype=np.float64)
            self._entries = (table, (values, mult, ptr))
        return self._entries[1]

    def _evaluate_compiled(
        self,
        kernel: tuple[Array, Array, Array, NDArray[np.intp], Array],
        theta: Array,
        order: int,
        with_magnitude: bool,
    ) -> Evaluation:
        """:meth:`evaluate_terms` through :func:`~batchglm.dispersion.apl_kernel.newton_terms`."""
        prob = self._problem
        z0 = float(prob.scale_rows[0, 0])
        t_groups = prob.eta_scale_groups(theta)
        t = np.ascontiguousarray(t_groups[0])
        if self._log_mu is None:
            with np.errstate(divide="ignore"):
                self._log_mu = np.log(kernel[1])
        terms = apl_kernel.newton_terms(
            *kernel,
            t,
            W_FLOOR,
            order,
            with_magnitude,
            log_mu=self._log_mu,
            counts=self._count_entries(),
        )
        value = terms[:, 0] - self.log_units_x
        if with_magnitude:
            magnitude = terms[:, 3]
        else:
            magnitude = np.full(value.shape, np.nan)
        prior = self.prior
        if prior is not None:
            dev = t + prior.mean
            value = value - dev**2 / (2.0 * prior.var)
        if order == 0:
            return Evaluation(value, None, None, magnitude)
        d1 = terms[:, 1]
        if prior is not None:
            d1 = d1 - dev / prior.var
        grad = (z0 * d1)[:, None]
        if order == 1:
            return Evaluation(value, grad, None, magnitude)
        d2 = terms[:, 2]
        if prior is not None:
            d2 = d2 - 1.0 / prior.var
        hess = (z0 * z0 * d2)[:, None, None]
        return Evaluation(value, grad, hess, magnitude)

    def __call__(self, b: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """APL, its gradient and Hessian in ``b`` (up to ``order``); see :meth:`evaluate`.

        Parameters
        ----------
        b : ndarray
            ``(F, k_scale)`` scale coefficients.
        order : int
            0, 1 or 2.

        Returns
        -------
        tuple of ndarray
            Value ``(F,)``, gradient ``(F, k)`` and Hessian ``(F, k, k)`` (``None`` above
            ``order``).
        """
        return self.evaluate(b, order)

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """APL ``(F,)``, gradient ``(F, k)`` and Hessian ``(F, k, k)`` up to ``order``.

        Parameters
        ----------
        theta : ndarray
            ``(F, k_scale)`` scale coefficients.
        order : int
            0, 1 or 2.

        Returns
        -------
        tuple of ndarray
            Value, gradient and Hessian (``None`` above ``order``). The value leaves out
            the parameter-free ``-sum log y!``.
        """
        # The magnitude (a pass over every observation) is not needed here.
        ev = self.evaluate_terms(theta, order, with_magnitude=False)
        return ev.ll, ev.grad, ev.hess

    def evaluate_terms(
        self, theta: Array, order: int, *, with_magnitude: bool = True
    ) -> Evaluation:
        """Like :meth:`evaluate`, plus the size of the summed terms (rounding noise).

        Parameters
        ----------
        theta : ndarray
            ``(F, k_scale)`` scale coefficients.
        order : int
            0, 1 or 2.
        with_magnitude : bool
            Compute the magnitude; without it, it is reported as ``NaN``.

        Returns
        -------
        Evaluation
            Value, derivatives and magnitude per feature.
        """
        prob = self._problem
        kernel = self._kernel_inputs()
        if kernel is not None:
            return self._evaluate_compiled(kernel, theta, order, with_magnitude)
        y, mu, x, z, n = self.y, self.mu, self.x, self.z, self.n
        t = z @ theta.T
        r = np.exp(t)
        rn = r if n is None else r * n
        q = mu / r
        log1p_q = np.log1p(q)
        with np.errstate(divide="ignore"):
            log_q = np.log(q)
        # y log(mu / (mu + r)) = y (log q - log1p q); the q form stays exact when r >> mu.
        y_part = np.where(self.positive, y * (log_q - log1p_q), 0.0)
        ll = y_part.sum(axis=0) - (rn * log1p_q).sum(axis=0)
        t_groups = prob.eta_scale_groups(theta)
        counts = self.table.group_sums(prob.family, t_groups, order)
        assert counts is not None
        count_ll, count_d1, count_d2 = counts
        count_ll = count_ll.sum(axis=0)
        w_raw = mu / (1.0 + q)
        w = np.maximum(w_raw, W_FLOOR)
        info = self.pp_x(w if n is None else w * n)
        _, logdet = np.linalg.slogdet(info)
        value = ll + count_ll - 0.5 * logdet - self.log_units_x
        # The terms are differences of numbers as large as y |log q| (about 2e10 for counts
        # of 1e9); the value inherits their rounding.
        if with_magnitude:
            big = np.where(self.positive, y * (np.abs(log_q) + log1p_q), 0.0) + rn * log1p_q
            magnitude = big.sum(axis=0) + np.abs(count_ll) + 0.5 * np.abs(logdet)
        else:
            magnitude = np.full(value.shape, np.nan)
        prior = self.prior
        if prior is not None:
            # log alpha = -t, so the prior's log density in t is -(t + m)^2 / (2 v).
            dev = t_groups[0] + prior.mean
            value = value - dev**2 / (2.0 * prior.var)
        if order == 0:
            return Evaluation(value, None, None, magnitude)
        inv = 1.0 / (1.0 + q)
        dl = rn * (q * inv - log1p_q) - y * inv
        # Where the floor holds W constant its derivatives vanish.
        floored = w_raw < W_FLOOR
        dw = np.where(floored, 0.0, mu * q * inv * inv)
        dwn = dw if n is None else dw * n
        h = np.einsum("ni,fij,nj->nf", x, np.linalg.inv(info), x, optimize=True)
        assert count_d1 is not None
        grad = z.T @ (dl - 0.5 * dwn * h) + prob.scale_rows.T @ count_d1
        grad = np.ascontiguousarray(grad.T)
        if prior is not None:
            grad -= (dev / prior.var)[:, None] * prob.scale_rows[0]
        if order == 1:
            return Evaluation(value, grad, None, magnitude)
        munq = mu * q if n is None else mu * q * n
        d2l = dl + (y + munq) * inv * inv
        d2wn = np.where(floored, 0.0, dwn * (q - 1.0) * inv)
        assert count_d2 is not None
        hess = self.pp_z(d2l - 0.5 * d2wn * h) + prob.pp_scale(count_d2)
        k = z.shape[1]
        a = [np.linalg.solve(info, self.pp_x(dwn * z[:, [j]])) for j in range(k)]
        for j in range(k):
            for m in range(j, k):
                tr = 0.5 * np.einsum("fij,fji->f", a[j], a[m])
                hess[:, j, m] += tr
                if m != j:
                    hess[:, m, j] += tr
        if prior is not None:
            z0 = prob.scale_rows[0]
            hess -= np.multiply.outer(z0, z0)[None] / prior.var
        return Evaluation(value, grad, hess, magnitude)


def _log1p(q: Array, work: Array, out: Array) -> Array:
    """``log1p(q)`` for ``q >= 0`` through the vectorised ``log``, into ``out``.

    ``u = 1 + q`` rounds by ``e = (u - 1) - q`` (exact in floating point), and
    ``log(1 + q) = log(u) - e / u`` to first order in ``e / u``: within one ulp of
    ``log1p`` over ``[0, 1e300]`` (tested), at about two thirds of its cost (numpy's
    ``log1p`` is not vectorised). ``work`` is scratch space of the same shape.
    """
    np.add(q, 1.0, out=work)
    np.log(work, out=out)
    # Rounding error of u = 1 + q: (u - 1) - q, exact in floating point.
    corr = np.subtract(work, 1.0)
    corr -= q
    corr /= work
    out -= corr
    return out


def _count_grid(table: CountTable, family: Family, grid: Array) -> Array:
    """Count terms ``sum gammaln(y + r) - gammaln(r)`` per grid point and feature, ``(G, F)``.

    One evaluation per distinct count and grid point; a sparse ``(F, distinct)`` matrix of
    multiplicities sums them per feature (one scale group).
    """
    uniq, index = table.distinct_values()
    n_feat = table.n_feat
    if uniq.size == 0:
        return np.zeros((grid.size, n_feat))
    mult = sparse.csr_matrix((table.counts, (table.seg % n_feat, index)), shape=(n_feat, uniq.size))
    out = np.empty((grid.size, n_feat))
    # Grid points in chunks so the (distinct, chunk) table stays small.
    step = max(1, _COUNT_CHUNK // uniq.size)
    for start in range(0, grid.size, step):
        ts = grid[start : start + step]
        yy = np.repeat(uniq[:, None], ts.size, axis=1)
        tt = np.repeat(ts[None, :], uniq.size, axis=0)
        terms = family.count_terms(yy.ravel(), tt.ravel(), 0)
        assert terms is not None
        out[start : start + ts.size] = (mult @ terms.ll.reshape(yy.shape)).T
    return out


def _cells(
    y: Array, mu: Array, x: Array, z: Array, group: NDArray[np.intp]
) -> tuple[Array, Array, Array, Array, Array | None]:
    """Rows the affine terms sum over: cells of equal means where they are few.

    Observations with the same location row, scale group and fitted means (for every
    feature) enter every term other than the count terms with their summed counts and the
    cell size ``n``. Returns ``(y, mu, x, z, n)`` per row, ``n`` ``(rows, 1)`` or ``None``
    for plain observations.
    """
    n_obs = y.shape[0]
    if n_obs == 0 or y.shape[1] == 0:
        return y, mu, x, z, None
    _, cell = unique_rows(np.column_stack([x, group, mu[:, :1]]))
    n_cells = int(cell.max()) + 1
    if n_cells > _CELL_SHARE * n_obs:
        return y, mu, x, z, None
    first = np.empty(n_cells, dtype=np.intp)
    first[cell[::-1]] = np.arange(n_obs)[::-1]
    cell_mu = np.ascontiguousarray(mu[first])
    # The first feature's mean stands for all only if every feature agrees (means of one
    # fit do: equal rows and size factors give equal means).
    if not np.array_equal(cell_mu[cell], mu):
        return y, mu, x, z, None
    sums = np.zeros((n_cells, y.shape[1]))
    np.add.at(sums, cell, y)
    size = np.bincount(cell, minlength=n_cells).astype(np.float64)[:, None]
    return sums, cell_mu, x[first], z[first], size
