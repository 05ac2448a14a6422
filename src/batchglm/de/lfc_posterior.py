"""The batched posterior mode behind :func:`batchglm.de.lfc_shrink`.

Per feature, the mode of

    log p(a | y) = l(a; y, alpha) + log prior(L a) - ||P theta||^2 / (2 * 15^2) + const

over the location parameters at fixed NB dispersions, in a reparametrisation whose first
coordinate is the tested effect ``L a`` (so contrasts are handled as coefficients). This
is this module's own Newton iteration batched over features (the solver of
:mod:`batchglm.solvers.newton` maximises a family's likelihood and has no place for a
prior): steps use the likelihood's Hessian plus the prior's curvature where that is
positive (the Cauchy log-density is not concave beyond ``|L a| > S``), with step halving
until the objective decreases; it is started from the maximum-likelihood estimate and from
``L a = 0``, and the better mode is kept (as apeglm, Zhu, Ibrahim & Love 2018).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

#: Standard deviation of the wide normal prior on the parameters that are not shrunk
#: (apeglm's ``prior.no.shrink.scale``), natural-log units.
NO_SHRINK_SD = 15.0


def reparametrisation(l_free: Array) -> Array:
    """Return ``G`` with ``gamma = G theta`` and ``gamma[0] = l_free . theta``.

    The other rows are an orthonormal basis of the complement of ``l_free``, so
    ``gamma[1:]`` has the squared norm of the projection of ``theta`` onto it.

    Parameters
    ----------
    l_free : ndarray
        The tested combination of the free location parameters ``(k,)``.

    Returns
    -------
    ndarray
        ``(k, k)`` invertible matrix.
    """
    k = l_free.size
    _, _, vt = np.linalg.svd(l_free[None, :], full_matrices=True)
    return np.vstack([l_free[None, :], vt[1:k]])


class LfcPosterior:
    """Negative log posterior of a block of features in the reparametrised coordinates.

    Parameters
    ----------
    y : ndarray
        Counts ``(F, n)``.
    xg : ndarray
        Design in the coordinates ``gamma``, ``(n, k)``.
    log_sf : ndarray
        Log size factors ``(n,)``.
    log_r : ndarray
        Log NB size ``r = 1 / alpha`` per feature and observation, ``(F, n)``.
    scale : float
        Prior scale of ``gamma[0]``, natural log.
    kind : str
        ``"apeglm"`` (Cauchy) or ``"normal"``.
    """

    def __init__(
        self, y: Array, xg: Array, log_sf: Array, log_r: Array, scale: float, kind: str
    ) -> None:
        self.y, self.xg, self.log_sf, self.log_r = y, xg, log_sf, log_r
        self.r = np.exp(log_r)
        self.scale, self.kind = scale, kind
        self.no_shrink = 1.0 / NO_SHRINK_SD**2

    def value(self, g: Array, rows: NDArray[np.intp]) -> Array:
        """Negative log posterior (up to a constant) of some features.

        Parameters
        ----------
        g : ndarray
            Coordinates ``gamma`` ``(len(rows), k)``.
        rows : ndarray of int
            Features of the block.

        Returns
        -------
        ndarray
            One value per feature.
        """
        eta = g @ self.xg.T + self.log_sf
        y, log_r = self.y[rows], self.log_r[rows]
        ll = np.sum(y * eta - (y + np.exp(log_r)) * np.logaddexp(eta, log_r), axis=1)
        g0 = g[:, 0] / self.scale
        # A Newton trial far out (separated features) overflows g0^2: its value is then
        # inf and the trial is rejected, as intended.
        with np.errstate(over="ignore"):
            prior = np.log1p(g0**2) if self.kind == "apeglm" else 0.5 * g0**2
        return -ll + prior + 0.5 * self.no_shrink * np.sum(g[:, 1:] ** 2, axis=1)

    def derivatives(self, g: Array, rows: NDArray[np.intp], exact: bool) -> tuple[Array, Array]:
        """Gradient and Hessian of :meth:`value`.

        Parameters
        ----------
        g : ndarray
            Coordinates ``gamma`` ``(len(rows), k)``.
        rows : ndarray of int
            Features of the block.
        exact : bool
            The prior's exact curvature; ``False`` floors the Cauchy prior's curvature at 0
            so that Newton steps stay descent directions.

        Returns
        -------
        grad, hess : ndarray
            ``(len(rows), k)`` and ``(len(rows), k, k)``.
        """
        eta = g @ self.xg.T + self.log_sf
        y, log_r = self.y[rows], self.log_r[rows]
        # With p = mu / (mu + r), q = r / (mu + r) and m = mu q = r p, all from logaddexp:
        # score (y - mu) q = y q - m and weight mu (1 + y / r) q^2 = m q + y p q, free of
        # the overflow of (1 + mu / r)^2 far from the optimum.
        lse = np.logaddexp(eta, log_r)
        p, q, m = np.exp(eta - lse), np.exp(log_r - lse), np.exp(eta + log_r - lse)
        score = y * q - m
        weight = m * q + y * p * q
        grad = -score @ self.xg
        hess = np.einsum("ni,fn,nj->fij", self.xg, weight, self.xg, optimize=True)
        s2 = self.scale**2
        g0 = g[:, 0]
        k = g.shape[1]
        diag = np.full((g.shape[0], k), self.no_shrink)
        grad[:, 1:] += self.no_shrink * g[:, 1:]
        if self.kind == "apeglm":
            grad[:, 0] += 2.0 * g0 / (s2 + g0**2)
            curv = 2.0 * (s2 - g0**2) / (s2 + g0**2) ** 2
            diag[:, 0] = curv if exact else np.maximum(curv, 0.0)
        else:
            grad[:, 0] += g0 / s2
            diag[:, 0] = 1.0 / s2
        hess[:, np.arange(k), np.arange(k)] += diag
        return grad, hess

    def newton(
        self, g0: Array, max_iter: int, tol: float
    ) -> tuple[Array, Array, NDArray[np.bool_], NDArray[np.int64]]:
        """Newton iteration with step halving, batched over the block's features.

        Parameters
        ----------
        g0 : ndarray
            Starting coordinates ``(F, k)``.
        max_iter : int
            Iteration limit.
        tol : float
            Stop when no coordinate moves by more than this.

        Returns
        -------
        g, f, converged, n_iter : ndarray
            Coordinates, objective values, convergence flags and iterations per feature.
        """
        g = g0.copy()
        n = g.shape[0]
        rows = np.arange(n)
        f = self.value(g, rows)
        done = np.zeros(n, dtype=bool)
        n_iter = np.zeros(n, dtype=np.int64)
        for _ in range(max_iter):
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            grad, hess = self.derivatives(g[act], act, exact=False)
            try:
                step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                step = np.stack(
                    [np.linalg.lstsq(h, v, rcond=None)[0] for h, v in zip(hess, grad, strict=True)]
                )
            n_iter[act] += 1
            t = np.ones(act.size)
            accepted = np.zeros(act.size, dtype=bool)
            new_g = g[act].copy()
            new_f = f[act].copy()
            for _halving in range(50):
                todo = np.flatnonzero(~accepted)
                if todo.size == 0:
                    break
                trial = g[act[todo]] - t[todo, None] * step[todo]
                ft = self.value(trial, act[todo])
                better = np.isfinite(ft) & (ft <= f[act[todo]] + 1e-12 * np.abs(f[act[todo]]))
                hit = todo[better]
                new_g[hit], new_f[hit] = trial[better], ft[better]
                accepted[hit] = True
                t[todo[~better]] *= 0.5
            moved = np.max(np.abs(t[:, None] * step), axis=1)
            g[act], f[act] = new_g, new_f
            done[act] = (moved < tol) | ~accepted
        return g, f, done & np.all(np.isfinite(g), axis=1), n_iter

    def mode(
        self, start: Array, max_iter: int, tol: float
    ) -> tuple[Array, Array, NDArray[np.bool_], NDArray[np.int64]]:
        """Posterior mode from the maximum-likelihood start and from ``gamma[0] = 0``.

        Parameters
        ----------
        start : ndarray
            Maximum-likelihood coordinates ``(F, k)``.
        max_iter : int
            Iteration limit of each Newton run.
        tol : float
            Convergence tolerance.

        Returns
        -------
        g, sd, converged, n_iter : ndarray
            The better mode, the posterior standard deviation of ``gamma[0]`` (Laplace
            approximation), whether the mode is a proper maximum, and iterations.
        """
        at_mle = start.copy()
        at_mle[:, 0] = np.clip(at_mle[:, 0], -30.0, 30.0)
        at_zero = start.copy()
        at_zero[:, 0] = 0.0
        g1, f1, ok1, it1 = self.newton(at_mle, max_iter, tol)
        g2, f2, ok2, it2 = self.newton(at_zero, max_iter, tol)
        second = ok2 & (~ok1 | (f2 < f1))
        g = np.where(second[:, None], g2, g1)
        ok = np.where(second, ok2, ok1)
        _, hess = self.derivatives(g, np.arange(g.shape[0]), exact=True)
        sd = np.full(g.shape[0], np.nan)
        eig_ok = np.all(np.linalg.eigvalsh(hess) > 0, axis=1) & ok
        if np.any(eig_ok):
            cov = np.linalg.inv(hess[eig_ok])
            sd[eig_ok] = np.sqrt(cov[:, 0, 0])
        return g, sd, eig_ok, np.where(second, it2, it1)

    def sandwich_sd(self, g: Array) -> Array:
        """Return the SD of ``gamma[0]`` from DESeq2's covariance of a MAP estimate.

        ``(H + Lambda)^-1 H (H + Lambda)^-1`` at ``g``, with ``H = X' diag(mu / (1 + alpha
        mu)) X`` the expected (Fisher) information and ``Lambda`` the normal prior's
        precisions: the ``lfcSE`` of DESeq2's ``nbinomWaldTest(betaPrior=TRUE)`` and
        ``lfcShrink(type="normal")`` (Love, Huber & Anders 2014). For the normal prior only.

        Parameters
        ----------
        g : ndarray
            Posterior modes ``(F, k)`` (all features of the block).

        Returns
        -------
        ndarray
            ``(F,)``; ``NaN`` where ``H + Lambda`` is singular.
        """
        eta = g @ self.xg.T + self.log_sf
        m = np.exp(eta + self.log_r - np.logaddexp(eta, self.log_r))  # mu / (1 + alpha mu)
        info = np.einsum("ni,fn,nj->fij", self.xg, m, self.xg, optimize=True)
        k = g.shape[1]
        prec = np.full(k, self.no_shrink)
        prec[0] = 1.0 / self.scale**2
        pen = info + np.diag(prec)
        sd = np.full(g.shape[0], np.nan)
        ok = np.all(np.isfinite(pen), axis=(1, 2))
        ok[ok] = np.all(np.linalg.eigvalsh(pen[ok]) > 0, axis=1)
        if np.any(ok):
            inv = np.linalg.inv(pen[ok])
            cov = inv @ info[ok] @ inv
            sd[ok] = np.sqrt(cov[:, 0, 0])
        return sd
