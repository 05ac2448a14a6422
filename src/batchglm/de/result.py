"""The result of a differential test: one row per feature."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from batchglm.de.multiple_testing import bh_qvalues
from batchglm.result import FitResult

Array = NDArray[np.float64]

#: Inverse location links by family name, for the ``mean`` column. Families added later
#: that are missing here give ``NaN`` means rather than a wrong scale.
_INVERSE_LINK: dict[str, Callable[[Array], Array]] = {
    "nb": np.exp,
    "poisson": np.exp,
    "normal": lambda eta: eta,
    "beta": lambda eta: 1.0 / (1.0 + np.exp(-eta)),
}


def fitted_mean(res: FitResult) -> Array:
    """Mean over observations of the fitted location parameter, without size factors.

    Parameters
    ----------
    res : FitResult
        A fit.

    Returns
    -------
    ndarray
        One value per feature: ``mean_i g^{-1}(x_i . a)`` (for NB, the mean of the counts
        normalised by the size factors as the model sees it). ``NaN`` for families whose
        location link is not known here.
    """
    inv = _INVERSE_LINK.get(res.family)
    n_feat = len(res.feature_names)
    if inv is None:
        return np.full(n_feat, np.nan)
    eta = res.loc.matrix @ res.coef_loc.to_numpy().T
    with np.errstate(over="ignore"):
        return np.asarray(inv(eta), dtype=np.float64).mean(axis=0)


@dataclass(frozen=True, eq=False)
class DEResult:
    """Per-feature results of a Wald or likelihood-ratio test.

    Build it with :func:`batchglm.de.wald` or :func:`batchglm.de.lrt`.

    Attributes
    ----------
    test : str
        ``"wald"`` or ``"lrt"``.
    model : str
        The tested model part: ``"loc"``, ``"scale"`` or ``"loc+scale"``.
    tested : str
        What was tested, in words (coefficient names, a contrast, or the two models).
    df : int
        Degrees of freedom of the chi-squared reference distribution.
    feature_names : pandas.Index
        Feature names.
    pval : ndarray
        P-values; ``NaN`` for features that could not be tested.
    stat : ndarray
        Test statistics (chi-squared with ``df`` degrees of freedom under the null).
    coef_mle, coef_sd : ndarray
        Estimate and standard error of the reported effect on the natural-log (link)
        scale; ``NaN`` when the test has several degrees of freedom or no single effect.
    effect_model : str or None
        ``"loc"`` or ``"scale"``: the model the reported effect belongs to.
    mean : ndarray
        Fitted mean per feature, see :func:`fitted_mean`.
    ll : ndarray
        Log-likelihood of the (full) model.
    converged : ndarray of bool
        Whether the feature could be tested (all fits reached an optimum).
    estimates : pandas.DataFrame
        The tested linear combinations, features x tests (one column per degree of freedom
        before rank reduction).
    fit : FitResult
        The (full) fit.
    reduced : FitResult or None
        The reduced fit of a likelihood-ratio test.
    ll_reduced : ndarray or None
        Log-likelihood of the reduced model.
    dispersion : str
        How NB dispersions were set for the test: ``"mle"`` (per feature, fitted jointly),
        ``"map"`` (empirical-Bayes shrunken, held fixed) or ``"ql"`` (held at the trend,
        quasi-likelihood F test).
    nb_dispersion : ndarray or None
        The NB dispersion ``alpha = 1 / r`` held fixed per feature (``"map"``, ``"ql"``).
    ql_dispersion : ndarray or None
        Moderated quasi-likelihood dispersion per feature (``"ql"``).
    df_residual : ndarray or None
        Denominator degrees of freedom of the F test per feature (``"ql"``); ``stat`` is
        then F distributed with ``df`` and ``df_residual`` degrees of freedom.
    """

    test: str
    model: str
    tested: str
    df: int
    feature_names: pd.Index
    pval: Array
    stat: Array
    coef_mle: Array
    coef_sd: Array
    effect_model: str | None
    mean: Array
    ll: Array
    converged: NDArray[np.bool_]
    estimates: pd.DataFrame
    fit: FitResult
    reduced: FitResult | None = None
    ll_reduced: Array | None = None
    dispersion: str = "mle"
    nb_dispersion: Array | None = None
    ql_dispersion: Array | None = None
    df_residual: Array | None = None

    @cached_property
    def qval(self) -> Array:
        """Benjamini-Hochberg q-values over the features with a finite p-value.

        Returns
        -------
        ndarray
            ``NaN`` where ``pval`` is ``NaN``; those features do not count as tests.
        """
        return bh_qvalues(self.pval)

    @property
    def log2fc(self) -> Array:
        """Log2 fold change of the reported effect: ``coef_mle / ln 2``.

        Returns
        -------
        ndarray
            For a location effect under a log link, the log2 fold change of the mean; for
            a scale effect, that of the scale parameter (NB: the size ``r``).
        """
        return self.coef_mle / np.log(2.0)

    def summary(self) -> pd.DataFrame:
        """One row per feature.

        Returns
        -------
        pandas.DataFrame
            Columns ``feature, pval, qval, log2fc, mean, coef_mle, coef_sd, stat, ll,
            converged``, then ``dispersion`` (the NB dispersion held fixed) for tests with
            ``dispersion="map"`` or ``"ql"``, and ``ql_dispersion, df_residual`` for
            ``"ql"``. Features that did not converge (or are all zero) have ``NaN``
            ``pval`` and ``qval`` and are left out of the Benjamini-Hochberg correction.
        """
        table = pd.DataFrame(
            {
                "feature": np.asarray(self.feature_names),
                "pval": self.pval,
                "qval": self.qval,
                "log2fc": self.log2fc,
                "mean": self.mean,
                "coef_mle": self.coef_mle,
                "coef_sd": self.coef_sd,
                "stat": self.stat,
                "ll": self.ll,
                "converged": self.converged,
            }
        )
        extra = {"dispersion": self.nb_dispersion, "ql_dispersion": self.ql_dispersion,
                 "df_residual": self.df_residual}
        for name, values in extra.items():
            if values is not None:
                table[name] = values
        return table

    def significant(self, alpha: float = 0.05) -> pd.Index:
        """Features with ``qval < alpha``.

        Parameters
        ----------
        alpha : float
            Target false discovery rate.

        Returns
        -------
        pandas.Index
            Names of the significant features.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")
        with np.errstate(invalid="ignore"):
            return self.feature_names[self.qval < alpha]

    def __repr__(self) -> str:
        n_tested = int(np.isfinite(self.pval).sum())
        with np.errstate(invalid="ignore"):
            n_sig = int((self.qval < 0.05).sum())
        return (
            f"DEResult(test={self.test!r}, model={self.model!r}, tested={self.tested!r}, "
            f"df={self.df}, dispersion={self.dispersion!r}, "
            f"n_features={len(self.feature_names)}, tested_features={n_tested}, "
            f"qval<0.05: {n_sig})"
        )
