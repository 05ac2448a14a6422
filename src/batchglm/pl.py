"""Plots of differential-test results; every function returns a matplotlib Axes.

Nothing here calls ``plt.show()``: the caller decides how to display or save the figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batchglm.de.result import DEResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NS_COLOUR = "0.65"
_SIG_COLOUR = "#c0392b"


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=(5.0, 4.0))
    return new


def _table(de: DEResult, what: str) -> pd.DataFrame:
    if not isinstance(de, DEResult):
        raise ValueError(
            f"`de` must be a DEResult from bg.de.wald or bg.de.lrt, but a "
            f"{type(de).__name__} was given."
        )
    tab = de.summary()
    if not np.isfinite(tab["log2fc"]).any():
        raise ValueError(
            f"{what} plot needs a log2 fold change, but this {de.test} test "
            f"({de.tested}) has {de.df} degrees of freedom and no single effect; test one "
            "coefficient or contrast, or pass `coef=` to bg.de.lrt."
        )
    return tab


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")


def volcano(de: DEResult, ax: Axes | None = None, *, alpha: float = 0.05) -> Axes:
    """Volcano plot: log2 fold change against ``-log10`` p-value.

    Parameters
    ----------
    de : DEResult
        A one-effect test from :func:`batchglm.de.wald` or :func:`batchglm.de.lrt`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    alpha : float
        Features with ``qval < alpha`` are highlighted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Notes
    -----
    Features without a p-value (not converged, all zero) are not drawn; p-values of 0 are
    drawn at the smallest positive double so that they stay on the plot.
    """
    _check_alpha(alpha)
    tab = _table(de, "a volcano")
    ok = np.isfinite(tab["pval"]) & np.isfinite(tab["log2fc"])
    tab = tab[ok]
    y = -np.log10(np.maximum(tab["pval"].to_numpy(), np.finfo(np.float64).tiny))
    sig = (tab["qval"] < alpha).to_numpy()
    ax = _axes(ax)
    x = tab["log2fc"].to_numpy()
    ax.scatter(x[~sig], y[~sig], s=6, c=_NS_COLOUR, linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=8, c=_SIG_COLOUR, linewidths=0,
               label=f"q < {alpha:g} ({int(sig.sum())})")
    ax.axvline(0.0, color="0.3", lw=0.6)
    ax.set_xlabel(f"log2 fold change ({_effect_label(de)})")
    ax.set_ylabel("-log10 p-value")
    ax.set_title(_title(de))
    ax.legend(loc="best", framealpha=0.85, fontsize="small", markerscale=2)
    return ax


def ma(de: DEResult, ax: Axes | None = None, *, alpha: float = 0.05) -> Axes:
    """MA plot: log2 fold change against the mean on a log scale.

    Parameters
    ----------
    de : DEResult
        A one-effect test from :func:`batchglm.de.wald` or :func:`batchglm.de.lrt`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    alpha : float
        Features with ``qval < alpha`` are highlighted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Notes
    -----
    The mean is :attr:`DEResult.mean` (the fitted mean without size factors). Features
    without a p-value (not converged, all zero) or with a non-positive mean are not drawn.
    """
    _check_alpha(alpha)
    tab = _table(de, "an MA")
    ok = (np.isfinite(tab["pval"]) & np.isfinite(tab["log2fc"]) & np.isfinite(tab["mean"])
          & (tab["mean"] > 0))
    tab = tab[ok]
    sig = (tab["qval"] < alpha).to_numpy()
    x = tab["mean"].to_numpy()
    y = tab["log2fc"].to_numpy()
    ax = _axes(ax)
    ax.scatter(x[~sig], y[~sig], s=6, c=_NS_COLOUR, linewidths=0, label="not significant")
    ax.scatter(x[sig], y[sig], s=8, c=_SIG_COLOUR, linewidths=0,
               label=f"q < {alpha:g} ({int(sig.sum())})")
    ax.axhline(0.0, color="0.3", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("mean (fitted, normalised)")
    ax.set_ylabel(f"log2 fold change ({_effect_label(de)})")
    ax.set_title(_title(de))
    ax.legend(loc="best", framealpha=0.85, fontsize="small", markerscale=2)
    return ax


def _title(de: DEResult) -> str:
    name = {"wald": "Wald", "lrt": "Likelihood-ratio"}.get(de.test, de.test)
    return f"{name} test ({de.model} model, df={de.df})"


def _effect_label(de: DEResult) -> str:
    label = de.estimates.columns[0] if de.estimates.shape[1] == 1 else de.tested
    text = str(label)
    if de.effect_model == "scale":
        text += ", scale"
    return text if len(text) <= 40 else text[:37] + "..."
