"""Tests against a minimum fold change: DESeq2's ``lfcThreshold`` and edgeR's TREAT.

A plain test asks whether an effect is zero; with many replicates tiny, irrelevant fold
changes become significant. These tests ask whether ``|log2 fold change|`` exceeds a
threshold ``T`` (or stays below it), so that significance means a relevant effect.

* :func:`wald_threshold` (``bg.de.wald(..., lfc_threshold=T, alt_hypothesis=...)``):
  DESeq2's ``results(dds, lfcThreshold=T, altHypothesis=...)`` (Love, Huber & Anders
  2014, section "Hypothesis tests with thresholds on effect size"), with ``b`` the
  estimate and ``s`` its standard error (both in log2 units):

  - ``"greaterAbs"``: ``stat = sign(b) max((|b| - T)/s, 0)``,
    ``p = min(1, 2 P(Z > (|b| - T)/s))``, DESeq2's two-tailed form;
  - ``"lessAbs"``: the larger p-value of the one-sided tests of ``b < T`` and
    ``b > -T`` (an intersection-union test): ``p = max(P(Z > (T - b)/s),
    P(Z > (b + T)/s))``, ``stat`` the smaller of the two statistics (floored at 0);
  - ``"greater"``: ``p = P(Z > (b - T)/s)``, ``stat = max((b - T)/s, 0)``;
  - ``"less"``: ``p = P(Z > (-T - b)/s)``, ``stat = min((b + T)/s, 0)``.

  ``Z`` is standard normal, or Student t with the moderated residual degrees of freedom
  for ``dispersion="ql"`` (whose standard error includes the QL dispersion).
* :func:`treat_ql` (``bg.de.ql_f(..., lfc_threshold=T)``): the TREAT test of McCarthy &
  Smyth (2009, Bioinformatics 25:765) in the likelihood form of edgeR's ``glmTreat``: the
  model is refitted with the tested effect held at ``+T`` and at ``-T`` (in natural-log
  units, ``T ln 2``); the signed roots of the two likelihood-ratio statistics divided by
  the root of the QL dispersion are t statistics, turned into z scores of the same tail
  probability (limma's ``zscoreT``). Two nulls, as edgeR's ``null=`` (see
  :func:`treat_pvalues`):

  - ``"interval"`` (edgeR's default): the true effect lies somewhere in ``[-T, T]``; the
    p-value averages the normal tail over a window of width ``c = 1.470402`` (z units,
    edgeR's constant) at each boundary;
  - ``"worst.case"``: the true effect sits on the boundary nearer the estimate,
    ``p = P(t > z_near) + P(t > z_far)``, where ``z_near`` belongs to the smaller of the
    two statistics and is negative when ``|b| <= T``. This is the larger (more
    conservative) p-value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.de.result import DEResult
from batchglm.de.shrunken import Shrunken
from batchglm.dispersion.estimate import fixed_log_r
from batchglm.families.tails import t_sf
from batchglm.inputs import data_of_fit
from batchglm.result import FitResult
from batchglm.solvers.status import CONVERGED_CODES
from batchglm.warning_site import user_stacklevel

Array = NDArray[np.float64]

ALTERNATIVES = ("greaterAbs", "lessAbs", "greater", "less")
#: The nulls of edgeR's ``glmTreat(null=)``; the first is edgeR's default.
TREAT_NULLS = ("interval", "worst.case")
#: edgeR's window width (z units) of the ``"interval"`` null (``glmTreat``'s ``c``).
INTERVAL_WIDTH = 1.470402


@dataclass(frozen=True, eq=False)
class ThresholdedDEResult(DEResult):
    """A :class:`DEResult` of a test against a fold-change threshold.

    Attributes
    ----------
    lfc_threshold : float
        The threshold ``T`` on ``|log2FoldChange|`` (log2 units).
    alt_hypothesis : str
        ``"greaterAbs"``, ``"lessAbs"``, ``"greater"`` or ``"less"`` (``ql_f``: always
        ``"greaterAbs"``).
    signed : ndarray or None
        The ``stat`` column of the summary: DESeq2's thresholded Wald statistic, or for
        TREAT the t statistic at the nearer boundary, signed like the fold change.
        ``stat`` holds the same values.
    """

    lfc_threshold: float = 0.0
    alt_hypothesis: str = "greaterAbs"
    signed: Array | None = None

    def signed_stat(self) -> Array:
        """Return the thresholded statistic (see :attr:`signed`).

        Returns
        -------
        ndarray
            One value per feature.
        """
        return self.stat if self.signed is None else self.signed

    def __repr__(self) -> str:
        return (
            super().__repr__()[:-1] + f", lfc_threshold={self.lfc_threshold:g}, "
            f"alt_hypothesis={self.alt_hypothesis!r})"
        )


def check_threshold(lfc_threshold: float, alt_hypothesis: str) -> None:
    """Validate the threshold options of a test.

    Parameters
    ----------
    lfc_threshold : float
        Threshold on ``|log2FoldChange|``, log2 units, finite and ``>= 0``.
    alt_hypothesis : str
        One of :data:`ALTERNATIVES`.

    Raises
    ------
    ValueError
        If either is invalid, or ``"lessAbs"`` is asked with a zero threshold (nothing can
        be smaller than zero).
    """
    if not (np.isfinite(lfc_threshold) and lfc_threshold >= 0):
        raise ValueError(
            f"`lfc_threshold` must be a finite number >= 0 (log2 units), but {lfc_threshold!r} "
            "was given."
        )
    if alt_hypothesis not in ALTERNATIVES:
        raise ValueError(
            f"`alt_hypothesis` must be one of {list(ALTERNATIVES)}, but {alt_hypothesis!r} was "
            "given."
        )
    if alt_hypothesis == "lessAbs" and lfc_threshold == 0:
        raise ValueError(
            "`alt_hypothesis='lessAbs'` tests |log2FoldChange| < `lfc_threshold`, so it needs "
            "`lfc_threshold` > 0, but 0 was given."
        )


def check_treat_null(
    treat_null: str | None, lfc_threshold: float | None = None, method: str = "ql"
) -> str:
    """Validate the ``treat_null`` option of a TREAT test and return it (default filled in).

    Parameters
    ----------
    treat_null : str or None
        One of :data:`TREAT_NULLS`; ``None`` is edgeR's default ``"interval"``.
    lfc_threshold : float, optional
        The test's threshold; when given, an explicit ``treat_null`` needs it ``> 0``.
    method : str
        The test (``"ql"`` is the only one with a TREAT null).

    Returns
    -------
    str
        The null to use.

    Raises
    ------
    ValueError
        If it is not one of :data:`TREAT_NULLS`, or it is given for a test that is not a
        TREAT test (it would be ignored silently).
    """
    if treat_null is None:
        return "interval"
    if treat_null not in TREAT_NULLS:
        raise ValueError(
            f"`treat_null` must be one of {list(TREAT_NULLS)} (edgeR's glmTreat null), but "
            f"{treat_null!r} was given."
        )
    if lfc_threshold is not None and not (method == "ql" and lfc_threshold > 0):
        raise ValueError(
            "`treat_null` applies to the TREAT test (method='ql' with `lfc_threshold` > 0), "
            f"but method={method!r} with lfc_threshold={lfc_threshold} was given; leave it "
            "unset."
        )
    return treat_null


def _promote(de: DEResult, **changes: Any) -> ThresholdedDEResult:
    values = {f.name: getattr(de, f.name) for f in fields(DEResult)}
    values.update(changes)
    return ThresholdedDEResult(**values)


def _single_effect(de: DEResult, what: str) -> None:
    if de.df != 1 or de.effect_model is None:
        raise ValueError(
            f"`lfc_threshold` needs a test of one coefficient or contrast, but {what} tests "
            f"{de.tested!r} with {de.df} degrees of freedom."
        )


def wald_threshold(de: DEResult, lfc_threshold: float, alt_hypothesis: str) -> DEResult:
    """Turn a one-degree-of-freedom Wald test into DESeq2's thresholded test.

    Parameters
    ----------
    de : DEResult
        A Wald test of one coefficient or contrast (any ``dispersion``).
    lfc_threshold : float
        Threshold ``T`` on the log2 fold change (log2 units, ``>= 0``).
    alt_hypothesis : {"greaterAbs", "lessAbs", "greater", "less"}
        The alternative, as DESeq2's ``altHypothesis`` (see the module docstring).

    Returns
    -------
    DEResult
        ``de`` itself for ``lfc_threshold == 0`` with ``"greaterAbs"`` (the plain test);
        otherwise a :class:`ThresholdedDEResult` with the new ``stat`` and ``pval``.
        Features whose Wald statistic was replaced by a likelihood-ratio one (separated
        features, ``stat_kind == "lrt"``) have no valid standard error and get ``NaN``
        p-values, with a warning.

    Raises
    ------
    ValueError
        For invalid options or a joint test.
    """
    check_threshold(lfc_threshold, alt_hypothesis)
    if lfc_threshold == 0 and alt_hypothesis == "greaterAbs":
        return de
    _single_effect(de, "bg.de.wald")
    ln2 = np.log(2.0)
    b = de.coef_mle / ln2
    se = de.coef_se / ln2
    t = lfc_threshold
    from scipy import stats  # here only: importing scipy.stats costs about 2 s

    dist: Any = stats.norm if de.df_residual is None else stats.t(de.df_residual)
    with np.errstate(invalid="ignore", divide="ignore"):
        if alt_hypothesis == "greaterAbs":
            z = (np.abs(b) - t) / se
            stat = np.sign(b) * np.maximum(z, 0.0)
            pval = np.minimum(1.0, 2.0 * dist.sf(z))
        elif alt_hypothesis == "lessAbs":
            above, below = (t - b) / se, (b + t) / se
            stat = np.minimum(np.maximum(above, 0.0), np.maximum(below, 0.0))
            pval = np.maximum(dist.sf(above), dist.sf(below))
        elif alt_hypothesis == "greater":
            z = (b - t) / se
            stat, pval = np.maximum(z, 0.0), dist.sf(z)
        else:
            z = (b + t) / se
            stat, pval = np.minimum(z, 0.0), dist.sf(-z)
    ok = de.converged & np.isfinite(pval) & (se > 0)
    lrt = de.kind == "lrt"
    if np.any(lrt & ok):
        hit = np.flatnonzero(lrt & ok)
        names = ", ".join(str(n) for n in de.feature_names[hit[:5]])
        more = f" and {hit.size - 5} more" if hit.size > 5 else ""
        warnings.warn(
            f"{hit.size} feature(s) ({names}{more}) are separated in the tested direction (a "
            "group with only zeros): their standard error is not valid, so the thresholded "
            "Wald test gives them NaN p-values; test them with lfc_threshold=0 (likelihood "
            "ratio) or bg.de.ql_f(..., lfc_threshold=...) instead.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    # Separated features tested without data ("none") already have NaN and a warning.
    ok &= de.kind == "wald"
    pval = np.where(ok, pval, np.nan)
    stat = np.where(ok, stat, np.nan)
    return _promote(
        de,
        stat=stat,
        pval=pval,
        converged=de.converged & ok,
        tested=f"{de.tested} ({alt_hypothesis}, |LFC| threshold {lfc_threshold:g})",
        lfc_threshold=float(lfc_threshold),
        alt_hypothesis=alt_hypothesis,
        signed=stat,
    )


def treat_ql(
    de: DEResult,
    data: Any,
    shrunk: Shrunken,
    lmat: Array,
    lfc_threshold: float,
    layer: str | None = None,
    treat_null: str = "interval",
) -> DEResult:
    """TREAT quasi-likelihood test as edgeR's ``glmTreat``, for ``ql_f``.

    Parameters
    ----------
    de : DEResult
        The plain ``ql_f`` result (with QL dispersions and moderated degrees of freedom).
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit.
    shrunk : Shrunken
        The location refit at the trended dispersions that ``de`` was made from.
    lmat : ndarray
        ``(1, p)`` the tested combination over the location coefficients.
    lfc_threshold : float
        ``T`` on ``|log2FoldChange|`` (log2 units, ``> 0``).
    layer : str, optional
        AnnData layer of ``data``.
    treat_null : {"interval", "worst.case"}
        edgeR's ``null=``: the true effect anywhere in ``[-T, T]`` (default, as edgeR) or on
        the nearer boundary (more conservative); see :func:`treat_pvalues`.

    Returns
    -------
    ThresholdedDEResult
        ``pval`` the TREAT p-value; ``stat`` (and the summary's ``stat``) the t statistic
        at the nearer boundary floored at 0 as DESeq2's ``greaterAbs`` statistic,
        ``sign(b) max(sign(|b| - T) sqrt(LR_near / s2), 0)``.

    Raises
    ------
    ValueError
        For a threshold that is not positive, an unknown ``treat_null`` or a joint test.

    Notes
    -----
    Holding ``L a`` at ``+-T ln 2`` is the reduced model ``L a' = 0`` with the offset
    ``+-T ln 2 X v`` (``v = C w`` with ``L C w = 1``), which is a change of size factors:
    two refits of the reduced model for all features at once.
    """
    check_threshold(lfc_threshold, "greaterAbs")
    check_treat_null(treat_null)
    if lfc_threshold == 0:
        raise ValueError("`treat_ql` needs `lfc_threshold` > 0; use the plain ql_f test.")
    _single_effect(de, "bg.de.ql_f")
    b = de.coef_mle
    s2 = de.ql_dispersion if de.ql_dispersion is not None else np.ones_like(b)
    df2 = de.df_residual if de.df_residual is not None else np.full_like(b, np.inf)
    pval, signed, good = treat_pvalues(
        data, shrunk.fit, shrunk.alpha, lmat, lfc_threshold, s2, df2, layer=layer, null=treat_null
    )
    ok = good & np.asarray(de.converged, dtype=bool)
    pval = np.where(ok, pval, np.nan)
    signed = np.where(ok, signed, np.nan)
    return _promote(
        de,
        stat=signed,
        pval=pval,
        converged=ok,
        tested=f"{de.tested} (TREAT {treat_null} null, |LFC| threshold {lfc_threshold:g})",
        lfc_threshold=float(lfc_threshold),
        alt_hypothesis="greaterAbs",
        signed=signed,
    )


def treat_pvalues(
    data: Any,
    res: FitResult,
    alpha: Array,
    lmat: Array,
    lfc_threshold: float,
    s2: Array,
    df: Array,
    layer: str | None = None,
    null: str = "interval",
) -> tuple[Array, Array, NDArray[np.bool_]]:
    """TREAT p-values of one location combination at given dispersions.

    The definition of edgeR's ``glmTreat`` (McCarthy & Smyth 2009; edgeR 3.40) for a
    quasi-likelihood fit. With ``LR(+T)`` and ``LR(-T)`` the likelihood-ratio statistics of
    the model with ``L a`` held at ``+T ln 2`` and ``-T ln 2`` against the unrestricted fit,
    ``t_near`` the root of the *smaller* one and ``t_far`` of the larger one, each divided
    by ``sqrt(s2)``, and ``b = L a`` the estimate (log2 units):

    * ``null="worst.case"``: ``p = P(t_df > t_far) + P(t_df > t_near)`` when ``|b| > T``
      and ``p = P(t_df > t_far) + P(t_df < t_near)`` when ``|b| <= T``;
    * ``null="interval"`` (edgeR's default): both are first turned into z scores of the
      same upper tail probability, ``z = Phi^-1(1 - P(t_df > t))`` (limma's ``zscoreT``),
      ``z_r = z(t_far)`` and ``z_l = -z(t_near)`` outside ``[-T, T]``, ``+z(t_near)``
      inside. With ``I(u, v) = (1 / (v - u)) int_u^v Phi`` (the mean of the normal
      distribution function over ``[u, v]``) and ``c = 1.470402``,
      ``p = I(-z_r, c - z_r) + I(z_l - c, z_l)`` when ``z_r + z_l > c`` and
      ``p = 2 I(-z_r, z_l)`` otherwise.

    Choosing the nearer boundary by the smaller statistic, not by the sign of ``b``, keeps
    ``p <= 1`` and monotone in ``|b|`` where the likelihood is skewed (for ``|b|`` near 0
    the statistic at the boundary on ``b``'s side can be the larger one).

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit ``(n_obs, n_features)``.
    res : FitResult
        The NB location fit at the dispersions ``alpha`` (e.g. a QL refit at the trend);
        the boundary fits reuse its size factors, ``weights`` and ``offset``.
    alpha : ndarray
        ``(n_features,)`` NB dispersions the fit holds (``var = mu + alpha mu^2``).
    lmat : ndarray
        ``(1, p)`` the tested combination over the location coefficients.
    lfc_threshold : float
        ``T`` on ``|log2FoldChange|`` (log2 units, ``> 0``).
    s2 : ndarray
        ``(n_features,)`` posterior QL dispersions (ones for a likelihood-ratio TREAT).
    df : ndarray
        ``(n_features,)`` degrees of freedom of the t reference (``inf``: normal).
    layer : str, optional
        AnnData layer of ``data``.
    null : {"interval", "worst.case"}
        edgeR's ``glmTreat(null=)``.

    Returns
    -------
    pval : ndarray
        ``(n_features,)`` TREAT p-values.
    signed : ndarray
        ``sign(b) max(t_near', 0)`` with ``t_near'`` the t statistic at the nearer
        boundary, negative inside ``[-T, T]`` (the same for both nulls).
    ok : ndarray of bool
        Both boundary fits converged and the p-value is finite.

    Raises
    ------
    ValueError
        For an unknown ``null``.
    """
    from batchglm.fit import fit

    check_treat_null(null)
    c = res.loc.constraints
    l_free = (lmat @ c)[0]
    _, _, vt = np.linalg.svd(l_free[None, :], full_matrices=True)
    c_reduced = c @ vt[1:].T
    shift = res.loc.matrix @ (c @ (l_free / (l_free @ l_free)))
    tau = lfc_threshold * np.log(2.0)
    d = data_of_fit(data, res, layer=layer)
    ll = {}
    good = np.ones(len(res.feature_names), dtype=bool)
    for sign in (1.0, -1.0):
        red = fit(
            d,
            res.design_loc,
            constraints_loc=c_reduced,
            size_factors=res.size_factors * np.exp(sign * tau * shift),
            fixed_scale=fixed_log_r(alpha),
            max_iter=int(res.settings.get("max_iter", 100)),  # type: ignore[call-overload]
            tol=float(res.settings.get("tol", 1e-10)),  # type: ignore[arg-type]
            progress=False,
            weights=res.settings.get("weights"),  # type: ignore[arg-type]
            offset=res.settings.get("offset"),  # type: ignore[arg-type]
        )
        ll[sign] = red.loglik.to_numpy()
        good &= np.isin(red.status_codes, [int(x) for x in CONVERGED_CODES])
    ll_full = res.loglik.to_numpy()
    b = res.coef_loc.to_numpy() @ lmat[0]
    lr_plus = np.maximum(2.0 * (ll_full - ll[1.0]), 0.0)
    lr_minus = np.maximum(2.0 * (ll_full - ll[-1.0]), 0.0)
    near = np.minimum(lr_plus, lr_minus)
    far = np.maximum(lr_plus, lr_minus)
    with np.errstate(invalid="ignore", divide="ignore"):
        outside = np.where(np.abs(b) > tau, 1.0, -1.0)
        t_near = outside * np.sqrt(near / s2)
        t_far = np.sqrt(far / s2)
        if null == "worst.case":
            pval = t_sf(t_near, df) + t_sf(t_far, df)
        else:
            pval = interval_pvalues(-_zscore_t(t_near, df), _zscore_t(t_far, df))
    ok = good & np.isfinite(pval)
    signed = np.where(b >= 0, 1.0, -1.0) * np.maximum(t_near, 0.0)
    return pval, signed, ok


def interval_pvalues(z_left: Array, z_right: Array) -> Array:
    """P-values of edgeR's ``glmTreat(null="interval")`` from the two boundary z scores.

    Parameters
    ----------
    z_left : ndarray
        ``(n_features,)`` z score at the nearer boundary, signed as edgeR's ``z.left``:
        negative when the estimate lies outside ``[-T, T]``.
    z_right : ndarray
        ``(n_features,)`` z score at the farther boundary (``>= 0``).

    Returns
    -------
    ndarray
        ``(n_features,)`` p-values; ``NaN`` where an input is.
    """
    w = INTERVAL_WIDTH
    with np.errstate(invalid="ignore"):
        split = z_right + z_left > w
        p_split = _mean_norm_cdf(-z_right, w - z_right) + _mean_norm_cdf(z_left - w, z_left)
        p_joint = 2.0 * _mean_norm_cdf(-z_right, z_left)
        # Rounding can put p_joint a few ulps above 1 for estimates at 0 (edgeR's too).
        p = np.where(split, p_split, p_joint)
        return np.asarray(np.clip(p, 0.0, 1.0), dtype=np.float64)


def _mean_norm_cdf(lo: Array, hi: Array) -> Array:
    """Mean of the standard normal distribution function over ``[lo, hi]``.

    ``(psi(hi) - psi(lo)) / (hi - lo)`` with ``psi(x) = x Phi(x) + phi(x)`` (an
    antiderivative of ``Phi``), as edgeR's ``.integratepnorm``; ``Phi`` at the midpoint
    where the interval is shorter than 1e-6 (there the difference quotient would lose
    digits; the midpoint value is off by less than 1e-12). Below ``x = -1`` ``psi`` is
    written as ``phi(x) (1 - |x| m(|x|))`` with Mills' ratio ``m`` (from ``erfcx``), so it
    does not cancel to rounding for strongly significant features; it is 0, not ``NaN``,
    at ``-inf``.
    """
    from scipy import special

    def psi(x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        dens = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
        with np.errstate(invalid="ignore", over="ignore"):
            y = np.abs(x)
            mills = np.sqrt(0.5 * np.pi) * special.erfcx(y / np.sqrt(2.0))
            left = dens * (1.0 - y * mills)
            direct = x * special.ndtr(x) + dens
        out = np.where(x < -1.0, np.where(np.isfinite(left), left, 0.0), direct)
        return np.asarray(out, dtype=np.float64)

    width = hi - lo
    short = np.abs(width) < 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        quotient = (psi(hi) - psi(lo)) / np.where(short, 1.0, width)
    return np.asarray(np.where(short, special.ndtr(0.5 * (lo + hi)), quotient), dtype=np.float64)


def _zscore_t(t: Array, df: Array) -> Array:
    """Return the z score with the tail probability of ``t`` under ``t(df)`` (``zscoreT``).

    ``sign(t) Phi^-1(1 - P(t_df > |t|))``, computed from the upper tail; ``t`` itself for
    ``df = inf``. Where the tail underflows (below 1e-300) it is taken from its logarithm,
    ``log P = log(1/2) + log I_x(df/2, 1/2)`` with ``x = df / (df + t^2)`` and the first
    two terms of the incomplete beta function's series at small ``x`` (as edgeR's
    ``zscoreT``, which works with ``log.p``), so strongly significant features get a large
    finite z instead of ``inf``.
    """
    from scipy import special

    t = np.asarray(t, dtype=np.float64)
    df_b = np.broadcast_to(np.asarray(df, dtype=np.float64), t.shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        tail = t_sf(np.abs(t), df_b)
        z = np.sign(t) * -special.ndtri(tail)
        log_tail = _log_t_tail(np.abs(t), df_b)
        z_log = np.sign(t) * -special.ndtri_exp(log_tail)
    z = np.where((tail < 1e-300) & np.isfinite(z_log), z_log, z)
    return np.asarray(np.where(np.isinf(df_b), t, z), dtype=np.float64)


def _log_t_tail(t: Array, df: Array) -> Array:
    """``log P(t_df > t)`` for large ``t > 0`` from the incomplete beta function's series.

    ``P = I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``; the first two terms of
    ``I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) (1 + (a + b) / (a + 1) x + ...)`` have a
    relative error of order ``x^2``, negligible where the tail itself underflows.
    """
    from scipy import special

    a = 0.5 * np.asarray(df, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = 2.0 * a / (2.0 * a + t * t)
        return np.asarray(
            np.log(0.5)
            + a * np.log(x)
            + 0.5 * np.log1p(-x)
            - np.log(a)
            - special.betaln(a, 0.5)
            + np.log1p((a + 0.5) / (a + 1.0) * x),
            dtype=np.float64,
        )
