"""Shrunken log fold changes: apeglm's Cauchy prior and DESeq2's normal prior.

Maximum-likelihood fold changes of weakly expressed or noisy features are large and
variable; for ranking and plotting, a posterior estimate that pulls uninformative fold
changes towards zero is more useful. :func:`lfc_shrink` computes, per feature, the mode of

    log p(a | y) = l(a; y, alpha) + log prior(L a) - ||P theta||^2 / (2 * 15^2) + const

over the location parameters at fixed NB dispersions ``alpha`` (the MAP dispersions by
default), where ``L a`` is the tested coefficient or contrast and ``P theta`` the part of
the free parameters orthogonal to it, and reports the mode of ``L a`` with its posterior
standard deviation from the curvature at the mode (a Laplace approximation).

* ``type="apeglm"`` (Zhu, Ibrahim & Love 2018, Bioinformatics 35:2084, package apeglm):
  a Cauchy prior (Student t with 1 degree of freedom) with scale ``S`` on ``L a``. ``S``
  is estimated across features as apeglm does: the variance ``A`` of a zero-centred normal
  distribution of the true effects is estimated from the maximum-likelihood effects
  ``b_g`` and their variances ``D_g`` with the Efron & Morris (1975) estimator, the root of
  ``A = sum((b_g^2 - D_g) I_g) / sum(I_g)``, ``I_g = 1 / (2 (A + D_g)^2)`` on
  ``[1e-6, 400]``, and ``S = min(sqrt(A), 1)`` (natural-log units). Other parameters get
  apeglm's wide normal prior with standard deviation 15. The local false sign rate
  ``Phi(-|mode| / sd)`` and apeglm's s-values (its running mean in increasing order) are
  available with ``svalue=True``.
* ``type="normal"`` (DESeq2's ``lfcShrink(type="normal")``, Love, Huber & Anders 2014):
  a zero-centred normal prior on ``L a`` whose variance matches the upper 5% quantile of
  ``|log2FoldChange|`` of the maximum-likelihood effects (those below 10 in absolute
  value): ``sd = quantile(|b|, 0.95) / z_0.975``, at least ``1e-3``. DESeq2 weights that
  quantile by the expected precision of each feature by default and puts the prior on all
  non-intercept coefficients of an expanded design; here it applies to the tested effect
  only, so the numbers are close to, not identical with, DESeq2's.

The posterior mode is found by a Newton iteration batched over features (this module's own:
the solver of :mod:`batchglm.solvers.newton` maximises a family's likelihood and has no
place for a prior), in a reparametrisation whose first coordinate is ``L a`` so that
contrasts are handled as coefficients. Steps use the likelihood's Hessian plus the
prior's curvature where that is positive (the Cauchy log-density is not concave beyond
``|L a| > S``), with step halving until the objective decreases; it is started from the
maximum-likelihood estimate and from ``L a = 0``, and the better mode is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from batchglm.align import data_of_fit
from batchglm.de.result import DEResult
from batchglm.de.table import DETable
from batchglm.de.wald import Coef, ContrastLike, test_rows, wald
from batchglm.result import FitResult

Array = NDArray[np.float64]

TYPES = ("apeglm", "normal")

#: Standard deviation of the wide normal prior on the parameters that are not shrunk
#: (apeglm's ``prior.no.shrink.scale``), natural-log units.
NO_SHRINK_SD = 15.0

_BLOCK = 2048


@dataclass(frozen=True, eq=False)
class ShrunkenLFC:
    """Shrunken log fold changes with the unshrunken test they came from.

    Attributes
    ----------
    de : DEResult
        The unshrunken Wald test; its p-values are kept, as DESeq2's ``lfcShrink`` does.
    type : str
        ``"apeglm"`` or ``"normal"``.
    coef_map : ndarray
        Posterior mode of the tested effect, natural-log scale, one per feature.
    coef_sd : ndarray
        Posterior standard deviation (inverse curvature at the mode), natural log.
    prior_scale : float
        Cauchy scale (apeglm) or normal standard deviation (normal) of the prior, log2
        units.
    converged : ndarray of bool
        Whether the mode was found (and the curvature there is positive).
    n_iter : ndarray of int
        Newton iterations used per feature (the better of the two starts).
    lfsr : ndarray
        Local false sign rate ``Phi(-|coef_map| / coef_sd)``.
    svalue : ndarray or None
        apeglm's s-values, when asked for.
    """

    de: DEResult
    type: str
    coef_map: Array
    coef_sd: Array
    prior_scale: float
    converged: NDArray[np.bool_]
    n_iter: NDArray[np.int64]
    lfsr: Array
    svalue: Array | None = None

    @property
    def log2fc(self) -> Array:
        """Shrunken log2 fold change, ``coef_map / ln 2``.

        Returns
        -------
        ndarray
            One value per feature.
        """
        return self.coef_map / np.log(2.0)

    def summary(self, sort_by: str | None = None, n_max: int | None = None) -> DETable:
        """Return the results table with shrunken fold changes, indexed by feature.

        Parameters
        ----------
        sort_by : str, optional
            Column to sort by, ascending, ``NaN`` last.
        n_max : int, optional
            Return only the first ``n_max`` rows (after sorting).

        Returns
        -------
        DETable
            The unshrunken test's table (:meth:`DEResult.summary`) without ``stat``, with
            ``log2FoldChange`` the posterior mode and ``lfcSE`` its posterior standard
            deviation (log2 units), ``pvalue``/``padj`` of the unshrunken test, and the
            added columns ``log2FoldChange_MLE`` and ``lfcSE_MLE`` (the unshrunken ones),
            ``lfsr`` and (with ``svalue=True``) ``svalue``.

        Raises
        ------
        ValueError
            If ``sort_by`` is not a column or ``n_max`` is negative.
        """
        ln2 = np.log(2.0)
        table = self.de.summary()
        mle, se = table["log2FoldChange"].to_numpy(), table["lfcSE"].to_numpy()
        table = table.drop(columns=["stat"])
        table["log2FoldChange"] = self.coef_map / ln2
        table["lfcSE"] = self.coef_sd / ln2
        pos = list(table.columns).index("status") + 1
        table.insert(pos, "log2FoldChange_MLE", mle)
        table.insert(pos + 1, "lfcSE_MLE", se)
        table.insert(pos + 2, "lfsr", self.lfsr)
        if self.svalue is not None:
            table.insert(pos + 3, "svalue", self.svalue)
        if sort_by is not None:
            if sort_by not in table.columns:
                raise ValueError(
                    f"`sort_by` must be a column of the table or None, but {sort_by!r} was "
                    f"given; the columns are {list(table.columns)}."
                )
            table = table.sort_values(sort_by, kind="stable", na_position="last")
        if n_max is not None:
            if n_max < 0:
                raise ValueError(f"`n_max` must be at least 0, but {n_max} was given.")
            table = table.iloc[:n_max]
        return DETable(table)


def lfc_shrink(
    res_or_de: FitResult | DEResult,
    coef: Coef | Sequence[Coef] | None = None,
    *,
    contrast: ContrastLike | None = None,
    type: str = "apeglm",
    data: Any = None,
    layer: str | None = None,
    dispersion: str = "map",
    trend: str = "parametric",
    prior_scale: float | None = None,
    svalue: bool = False,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> ShrunkenLFC:
    """Shrink the log fold changes of one coefficient or contrast (apeglm or normal prior).

    Parameters
    ----------
    res_or_de : FitResult or DEResult
        An NB fit from :func:`batchglm.fit`, or a one-degree-of-freedom Wald test of its
        location (:func:`batchglm.de.wald` with ``dispersion`` ``"mle"`` or ``"map"``)
        whose p-values are to be kept; then ``coef``/``contrast`` must name what it
        tested.
    coef : str or int, optional
        The location coefficient whose fold change is shrunk.
    contrast : array_like, Series, dict, tuple, str or Cond, optional
        Instead of ``coef``: one contrast, in any form :func:`batchglm.de.wald` accepts.
    type : {"apeglm", "normal"}
        The prior: apeglm's Cauchy (default) or DESeq2's normal (see the module
        docstring).
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit (required: the posterior is computed from them).
    layer : str, optional
        AnnData layer of ``data``.
    dispersion : {"map", "mle"}
        NB dispersions held fixed: DESeq2's empirical-Bayes MAP estimates (default, as
        DESeq2 passes to apeglm) or the fit's own. Only used with a ``FitResult``.
    trend : {"parametric", "local", "mean"}
        Mean-dispersion trend for ``dispersion="map"``.
    prior_scale : float, optional
        Fix the prior's scale (Cauchy scale or normal standard deviation) in log2 units
        instead of estimating it across features.
    svalue : bool
        Also compute apeglm's s-values.
    max_iter : int
        Newton iterations per start.
    tol : float
        Stop when every parameter step is below ``tol``.

    Returns
    -------
    ShrunkenLFC
        Per feature the posterior mode and standard deviation; ``summary()`` gives the
        table (``log2FoldChange`` and ``lfcSE`` shrunken, ``pvalue``/``padj`` unshrunken).

    Raises
    ------
    ValueError
        For an unknown ``type`` or ``dispersion``, missing ``data``, a family other than
        NB, a joint test (several coefficients or contrast rows), a scale-model test, a
        DEResult that tested something else, or a non-positive ``prior_scale``.
    """
    if type not in TYPES:
        raise ValueError(f"`type` must be 'apeglm' or 'normal', but {type!r} was given.")
    if data is None:
        raise ValueError(
            "`lfc_shrink` computes the posterior from the counts, so pass the fit's data as "
            "`data=`."
        )
    if prior_scale is not None and not (np.isfinite(prior_scale) and prior_scale > 0):
        raise ValueError(
            f"`prior_scale` must be positive (log2 units), but {prior_scale} was given."
        )
    de, lmat = _unshrunken(res_or_de, coef, contrast, data, layer, dispersion, trend)
    fit = de.fit
    ln2 = np.log(2.0)
    if prior_scale is None:
        ok = de.converged & np.isfinite(de.coef_mle) & np.isfinite(de.coef_se)
        ok &= de.kind == "wald"
        scale = (
            apeglm_prior_scale(de.coef_mle[ok], de.coef_se[ok])
            if type == "apeglm"
            else normal_prior_sd(de.coef_mle[ok] / ln2) * ln2
        )
    else:
        scale = float(prior_scale) * ln2
    l_free = (lmat @ fit.loc.constraints)[0]
    gmat = _reparametrisation(l_free)
    xg = fit.loc.matrix @ fit.loc.constraints @ np.linalg.inv(gmat)
    start = fit.theta_free[:, : fit.loc.n_free] @ gmat.T
    log_r = fit.scale.matrix @ fit.coef_scale.to_numpy().T  # (n_obs, F)
    d = data_of_fit(data, fit, layer=layer)
    n_feat = len(fit.feature_names)
    mode = np.full(n_feat, np.nan)
    sd = np.full(n_feat, np.nan)
    conv = np.zeros(n_feat, dtype=bool)
    iters = np.zeros(n_feat, dtype=np.int64)
    usable = np.asarray(fit.converged, dtype=bool) & np.all(np.isfinite(start), axis=1)
    log_sf = np.log(fit.size_factors)
    for lo in range(0, n_feat, _BLOCK):
        sl = slice(lo, min(lo + _BLOCK, n_feat))
        idx = np.flatnonzero(usable[sl]) + lo
        if idx.size == 0:
            continue
        y = np.asarray(d.block(sl), dtype=np.float64)[:, idx - lo].T
        post = _Posterior(y, xg, log_sf, log_r[:, idx].T, scale, type)
        g, sd_b, ok, it = post.mode(start[idx], max_iter, tol)
        mode[idx], sd[idx], conv[idx], iters[idx] = g[:, 0], sd_b, ok, it
    mode[~conv] = np.nan
    sd[~conv] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        lfsr = stats.norm.cdf(-np.abs(mode) / sd)
    return ShrunkenLFC(
        de=de,
        type=type,
        coef_map=mode,
        coef_sd=sd,
        prior_scale=scale / ln2,
        converged=conv,
        n_iter=iters,
        lfsr=lfsr,
        svalue=svalues(lfsr) if svalue else None,
    )


def _unshrunken(
    res_or_de: FitResult | DEResult,
    coef: Any,
    contrast: Any,
    data: Any,
    layer: str | None,
    dispersion: str,
    trend: str,
) -> tuple[DEResult, Array]:
    if dispersion not in ("map", "mle"):
        raise ValueError(
            f"`dispersion` must be 'map' or 'mle' for lfc_shrink, but {dispersion!r} was given."
        )
    if isinstance(res_or_de, DEResult):
        de = res_or_de
        if de.test != "wald" or de.model != "loc" or de.dispersion not in ("mle", "map"):
            raise ValueError(
                "`lfc_shrink` needs a Wald test of the location model with dispersion 'mle' "
                f"or 'map', but got test={de.test!r}, model={de.model!r}, "
                f"dispersion={de.dispersion!r}."
            )
        lmat, labels = test_rows(de.fit, coef, contrast, de.fit.loc, "loc")
        tested = ", ".join(labels)
        if not de.tested.startswith(tested):
            raise ValueError(
                f"the test result tested {de.tested!r} but `coef`/`contrast` give {tested!r}; "
                "pass what the test tested."
            )
    else:
        lmat, _ = test_rows(res_or_de, coef, contrast, res_or_de.loc, "loc")
        _one_row(lmat)
        de = wald(
            res_or_de,
            coef,
            contrast=contrast,
            dispersion=dispersion,
            data=data,
            layer=layer,
            trend=trend,
        )
    _one_row(lmat)
    if de.fit.family != "nb":
        raise ValueError(
            f"`lfc_shrink` is for negative binomial fits, but the fit's family is "
            f"{de.fit.family!r}."
        )
    return de, lmat


def _one_row(lmat: Array) -> None:
    if lmat.shape[0] != 1:
        raise ValueError(
            f"`lfc_shrink` shrinks one coefficient or contrast, but {lmat.shape[0]} were given."
        )


def _reparametrisation(l_free: Array) -> Array:
    """Return ``G`` with ``gamma = G theta`` and ``gamma[0] = l_free . theta``.

    The other rows are an orthonormal basis of the complement of ``l_free``, so
    ``gamma[1:]`` has the squared norm of the projection of ``theta`` onto it.
    """
    k = l_free.size
    _, _, vt = np.linalg.svd(l_free[None, :], full_matrices=True)
    return np.vstack([l_free[None, :], vt[1:k]])


def apeglm_prior_scale(mle: Array, se: Array) -> float:
    """Cauchy prior scale of apeglm from maximum-likelihood effects and standard errors.

    Parameters
    ----------
    mle, se : ndarray
        Effects and standard errors, natural-log units, one per feature (finite).

    Returns
    -------
    float
        ``min(sqrt(A), 1)`` with ``A`` the Efron & Morris (1975) estimate of the variance
        of the true effects (apeglm's ``priorVar``), searched on ``[1e-6, 400]``;
        natural-log units.

    Raises
    ------
    ValueError
        If no feature has a finite effect and standard error.
    """
    if mle.size == 0:
        raise ValueError(
            "no feature has a finite effect and standard error to estimate the "
            "prior scale from; pass `prior_scale=`."
        )
    s2, d = mle**2, se**2

    def excess(a: float) -> float:
        w = 1.0 / (2.0 * (a + d) ** 2)
        return float(np.sum((s2 - d) * w) / np.sum(w) - a)

    lo, hi = 1e-6, 400.0
    if excess(lo) < 0:
        a = lo
    elif excess(hi) > 0:
        a = hi
    else:
        a = float(optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-12))
    return min(float(np.sqrt(a)), 1.0)


def normal_prior_sd(lfc_log2: Array, upper_quantile: float = 0.05) -> float:
    """DESeq2's normal prior standard deviation by upper-quantile matching (log2 units).

    Parameters
    ----------
    lfc_log2 : ndarray
        Maximum-likelihood log2 fold changes; those with ``|lfc| >= 10`` are left out.
    upper_quantile : float
        The matched upper quantile of ``|lfc|``.

    Returns
    -------
    float
        ``quantile(|lfc|, 1 - upper_quantile) / z_{1 - upper_quantile / 2}``, at least
        ``1e-3``.

    Raises
    ------
    ValueError
        If no fold change is finite and below 10 in absolute value.
    """
    x = np.abs(lfc_log2[np.abs(lfc_log2) < 10])
    if x.size == 0:
        raise ValueError(
            "no feature has a finite fold change below 10 to estimate the prior "
            "from; pass `prior_scale=`."
        )
    sd = float(np.quantile(x, 1 - upper_quantile) / stats.norm.ppf(1 - upper_quantile / 2))
    return max(sd, 1e-3)


def svalues(lfsr: Array) -> Array:
    """S-values as apeglm computes them: the running mean of the sorted local false sign rates.

    Parameters
    ----------
    lfsr : ndarray
        Local false sign rate per feature (``NaN`` ignored).

    Returns
    -------
    ndarray
        For each feature, the mean lfsr of all features with a lfsr at most its own
        (Stephens 2017, as apeglm's ``svalue``); ``NaN`` where lfsr is ``NaN``.
    """
    out = np.full(lfsr.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(lfsr))
    order = ok[np.argsort(lfsr[ok], kind="stable")]
    out[order] = np.cumsum(lfsr[order]) / np.arange(1, order.size + 1)
    return out


class _Posterior:
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
        eta = g @ self.xg.T + self.log_sf
        y, log_r = self.y[rows], self.log_r[rows]
        ll = np.sum(y * eta - (y + np.exp(log_r)) * np.logaddexp(eta, log_r), axis=1)
        g0 = g[:, 0] / self.scale
        prior = np.log1p(g0**2) if self.kind == "apeglm" else 0.5 * g0**2
        return -ll + prior + 0.5 * self.no_shrink * np.sum(g[:, 1:] ** 2, axis=1)

    def derivatives(self, g: Array, rows: NDArray[np.intp], exact: bool) -> tuple[Array, Array]:
        eta = g @ self.xg.T + self.log_sf
        y, r = self.y[rows], self.r[rows]
        mu = np.exp(np.minimum(eta, 700.0))
        ratio = mu / r
        score = (y - mu) / (1.0 + ratio)
        weight = mu * (1.0 + y / r) / (1.0 + ratio) ** 2
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
