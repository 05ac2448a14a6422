"""Refits at shrunken dispersions for the tests' ``dispersion=`` option.

``"mle"`` tests the fit as it is (per-feature maximum-likelihood dispersions).
``"map"`` (DESeq2) refits the location with the NB dispersion held at its maximum a
posteriori estimate; the Wald or LR statistic keeps its chi-squared reference.
``"ql"`` (edgeR, glmGamPoi) refits at the trended dispersion and divides the statistic by
the moderated quasi-likelihood dispersion, with an F reference whose denominator degrees
of freedom are the moderated ones: the prior's plus the feature's residual df without
fitted zeros (see :func:`batchglm.dispersion.quasi_likelihood.zero_fit_residual_df`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from batchglm.de.degrees_of_freedom import check_residual_df
from batchglm.de.result import DEResult
from batchglm.dispersion.estimate import (
    Dispersions,
    QuasiLikelihood,
    estimate_dispersions,
    quasi_likelihood,
    refit_location,
)
from batchglm.families.tails import f_sf
from batchglm.inputs import data_of_fit
from batchglm.obs_weights import require_unweighted
from batchglm.result import FitResult

Array = NDArray[np.float64]

DISPERSIONS = ("mle", "map", "ql")


@dataclass(frozen=True)
class Shrunken:
    """A location refit at shrunken dispersions, with what it was made from.

    Attributes
    ----------
    fit : FitResult
        The refit (scale fixed).
    alpha : ndarray
        The NB dispersion per feature it was made at.
    dispersions : Dispersions
        All dispersion estimates.
    ql : QuasiLikelihood or None
        QL dispersions for ``"ql"``.
    """

    fit: FitResult
    alpha: Array
    dispersions: Dispersions
    ql: QuasiLikelihood | None


def check_dispersion(dispersion: str, data: Any, model: str = "loc") -> None:
    """Validate the ``dispersion`` option of a test.

    Parameters
    ----------
    dispersion : str
        ``"mle"``, ``"map"`` or ``"ql"``.
    data : object
        The counts (required unless ``dispersion == "mle"``).
    model : str
        The tested model part; shrunken dispersions only serve location tests.

    Raises
    ------
    ValueError
        For an unknown ``dispersion``, a held dispersion for a test of the scale model, or
        ``"map"``/``"ql"`` without the data.
    """
    if dispersion not in DISPERSIONS:
        raise ValueError(
            f"`dispersion` must be 'mle', 'map' or 'ql', but {dispersion!r} was given."
        )
    if dispersion == "mle":
        return
    if data is None:
        raise ValueError(
            f"`dispersion={dispersion!r}` re-estimates dispersions from the counts, so pass "
            "the fit's data as `data=`."
        )
    if model != "loc":
        raise ValueError(
            f"`dispersion={dispersion!r}` holds the NB dispersion fixed, so it only applies "
            f"to tests of the location model, but the {model} model is tested."
        )


def shrunken_fit(
    data: Any,
    res: FitResult,
    dispersion: str,
    *,
    layer: str | None = None,
    trend: str = "parametric",
    progress: bool | None = None,
) -> Shrunken:
    """Estimate dispersions for ``res`` and refit its location at them.

    Parameters
    ----------
    data : array_like, scipy.sparse, pandas.DataFrame or AnnData
        The counts of the fit. Named observations and features are matched to the fit's
        names and reordered; different names are an error (see
        :func:`batchglm.inputs.data_of_fit`).
    res : FitResult
        An NB fit with an intercept-only scale model.
    dispersion : {"map", "ql"}
        Which dispersion to hold fixed: the MAP estimate or the trend.
    layer : str, optional
        AnnData layer with the counts.
    trend : {"parametric", "local", "mean"}
        The mean-dispersion trend.
    progress : bool, optional
        Progress bars of the dispersion passes and the refit (default: on for long passes
        on a terminal, as :func:`batchglm.fit`).

    Returns
    -------
    Shrunken
        The refit and the estimates.

    Raises
    ------
    NotImplementedError
        For fits with observation weights or an offset (the dispersion estimators are
        unweighted).
    """
    require_unweighted(res, f"dispersion={dispersion!r}")
    check_residual_df(res, f"dispersion={dispersion!r}")
    # With the fit's own data the estimates are kept on the fit: a second test (another
    # coefficient, ql_f after wald(dispersion="map"), ...) reuses them.
    own = data is not None and data is res.data
    key = ("shrunken", dispersion, trend)
    if own and key in res.derived:
        return cast(Shrunken, res.derived[key])
    # Converted (and matched to the fit by name) once for the three passes below.
    d = data_of_fit(data, res, layer=layer)
    disp = res.derived.get(("dispersions", trend)) if own else None
    if disp is not None and dispersion == "map" and not disp.has_map:
        disp = None
    if disp is None:
        # The QL route holds the trend: the MAP pass is left out.
        shrink = dispersion == "map"
        disp = estimate_dispersions(d, res, trend=trend, progress=progress, shrink=shrink)
    alpha = disp.map if dispersion == "map" else disp.trend
    refit = refit_location(d, res, alpha, progress=progress)
    ql = quasi_likelihood(d, refit, disp, progress=progress) if dispersion == "ql" else None
    shrunk = Shrunken(refit, alpha, disp, ql)
    if own:
        res.derived[("dispersions", trend)] = disp
        res.derived[key] = shrunk
    return shrunk


def attach(de: DEResult, shrunk: Shrunken, dispersion: str) -> DEResult:
    """Add the dispersions to a test result; for ``"ql"`` turn it into an F test.

    Parameters
    ----------
    de : DEResult
        Wald or LR test on the refit, with a chi-squared statistic.
    shrunk : Shrunken
        The refit and its dispersions.
    dispersion : {"map", "ql"}
        The option used.

    Returns
    -------
    DEResult
        For ``"ql"``: ``stat = chi2 / (df s2_post)`` with p-values from
        ``F(df, df_total)`` (``df_total`` per feature, the prior df plus the feature's
        residual df without fitted zeros), and ``coef_se`` scaled by ``sqrt(s2_post)``.
    """
    if shrunk.ql is None:
        return replace(de, dispersion=dispersion, nb_dispersion=shrunk.alpha)
    s2 = shrunk.ql.var_post
    df2 = shrunk.ql.df_total
    with np.errstate(invalid="ignore", divide="ignore"):
        fstat = de.stat / (de.df * s2)
        pval = f_sf(fstat, de.df, df2)
    ok = np.isfinite(fstat) & np.isfinite(df2) & np.isfinite(de.pval)
    return replace(
        de,
        stat=np.where(ok, fstat, np.nan),
        pval=np.where(ok, pval, np.nan),
        coef_se=de.coef_se * np.sqrt(s2),
        converged=de.converged & ok,
        dispersion=dispersion,
        nb_dispersion=shrunk.alpha,
        ql_dispersion=s2,
        df_residual=df2,
    )
