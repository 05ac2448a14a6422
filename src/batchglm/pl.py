"""Plots of differential-test results; every function returns a matplotlib Axes.

Nothing here calls ``plt.show()``: the caller decides how to display or save the figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

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
    tab = pd.DataFrame(de.summary(sort_by=None))
    if not np.isfinite(tab["log2FoldChange"]).any():
        raise ValueError(
            f"{what} plot needs a log2 fold change, but this {de.test} test "
            f"({de.tested}) has {de.df} degrees of freedom and no single effect; test one "
            "coefficient or contrast, or pass `coef=` to bg.de.lrt."
        )
    return tab


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")


def _scatter(
    ax: Axes,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    sig: NDArray[np.bool_],
    alpha: float,
    n_sig: int,
) -> None:
    # ``n_sig`` counts every significant feature, the ones drawn at the edge included.
    ax.scatter(x[~sig], y[~sig], s=6, c=_NS_COLOUR, linewidths=0, label="not significant")
    ax.scatter(
        x[sig], y[sig], s=8, c=_SIG_COLOUR, linewidths=0, label=f"q < {alpha:g} ({n_sig} in all)"
    )


def _edge(
    ax: Axes,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    sig: NDArray[np.bool_],
    marker: str,
    label: str,
) -> None:
    """Features drawn at the plot's edge (capped fold change, p = 0) as triangles."""
    if x.size:
        ax.scatter(
            x,
            y,
            s=22,
            marker=marker,
            c=np.where(sig, _SIG_COLOUR, _NS_COLOUR),
            edgecolors="0.2",
            linewidths=0.4,
            label=f"{label} ({x.size})",
        )


def volcano(de: DEResult, ax: Axes | None = None, *, alpha: float = 0.05) -> Axes:
    """Volcano plot: log2 fold change against ``-log10`` p-value.

    Parameters
    ----------
    de : DEResult
        A one-effect test from :func:`batchglm.de.wald` or :func:`batchglm.de.lrt`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure by default.
    alpha : float
        Features with ``padj < alpha`` are highlighted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValueError
        If ``de`` is not a :class:`~batchglm.de.DEResult`, has no single effect, or
        ``alpha`` is not in ``(0, 1)``.

    Notes
    -----
    Features without a p-value (not converged, all zero) are not drawn. The fold-change
    axis ends at ``+-de.max_lfc`` (10 by default): features whose fold change was capped
    there (separated features, a group with only zeros) are drawn as triangles pointing
    outwards at the edge, and p-values of 0 as upward triangles at the top of the plot, so
    neither dominates the axes.
    """
    _check_alpha(alpha)
    tab = _table(de, "a volcano")
    ok = np.isfinite(tab["pvalue"]) & np.isfinite(tab["log2FoldChange"])
    tab = tab[ok]
    p = tab["pvalue"].to_numpy()
    zero = p <= 0
    y = -np.log10(np.where(zero, 1.0, p))
    top = 1.05 * max(float(y[~zero].max(initial=0.0)), 1.0)
    y[zero] = top
    sig = (tab["padj"] < alpha).to_numpy()
    x = tab["log2FoldChange"].to_numpy()
    capped = tab["lfc_capped"].to_numpy(dtype=bool)
    plain = ~capped & ~zero
    ax = _axes(ax)
    _scatter(ax, x[plain], y[plain], sig[plain], alpha, int(sig.sum()))
    right, left = capped & (x > 0), capped & (x < 0)
    _edge(ax, x[right], y[right], sig[right], ">", f"log2FC capped at +{de.max_lfc:g}")
    _edge(ax, x[left], y[left], sig[left], "<", f"log2FC capped at -{de.max_lfc:g}")
    up = zero & ~capped
    _edge(ax, x[up], y[up], sig[up], "^", "p = 0")
    ax.axvline(0.0, color="0.3", lw=0.6)
    lim = min(max(float(np.abs(x).max(initial=0.0)), 1.0), de.max_lfc) * 1.06
    ax.set_xlim(-lim, lim)
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
        Features with ``padj < alpha`` are highlighted.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValueError
        If ``de`` is not a :class:`~batchglm.de.DEResult`, has no single effect, or
        ``alpha`` is not in ``(0, 1)``.

    Notes
    -----
    The mean is the table's ``baseMean`` (the fitted mean without size factors). Features
    without a p-value (not converged, all zero) or with a non-positive mean are not drawn.
    The fold-change axis ends at ``+-de.max_lfc``; capped fold changes are drawn as
    triangles at that edge.
    """
    _check_alpha(alpha)
    tab = _table(de, "an MA")
    ok = (
        np.isfinite(tab["pvalue"])
        & np.isfinite(tab["log2FoldChange"])
        & np.isfinite(tab["baseMean"])
        & (tab["baseMean"] > 0)
    )
    tab = tab[ok]
    sig = (tab["padj"] < alpha).to_numpy()
    x = tab["baseMean"].to_numpy()
    y = tab["log2FoldChange"].to_numpy()
    capped = tab["lfc_capped"].to_numpy(dtype=bool)
    ax = _axes(ax)
    _scatter(ax, x[~capped], y[~capped], sig[~capped], alpha, int(sig.sum()))
    up, down = capped & (y > 0), capped & (y < 0)
    _edge(ax, x[up], y[up], sig[up], "^", f"log2FC capped at +{de.max_lfc:g}")
    _edge(ax, x[down], y[down], sig[down], "v", f"log2FC capped at -{de.max_lfc:g}")
    ax.axhline(0.0, color="0.3", lw=0.6)
    lim = min(max(float(np.abs(y).max(initial=0.0)), 1.0), de.max_lfc) * 1.06
    ax.set_ylim(-lim, lim)
    ax.set_xscale("log")
    ax.set_xlabel("baseMean (fitted mean without size factors)")
    ax.set_ylabel(f"log2 fold change ({_effect_label(de)})")
    ax.set_title(_title(de))
    ax.legend(loc="best", framealpha=0.85, fontsize="small", markerscale=2)
    return ax


def _title(de: DEResult) -> str:
    name = {"wald": "Wald", "lrt": "Likelihood-ratio", "ql_f": "Quasi-likelihood F"}.get(
        de.test, de.test
    )
    return f"{name} test ({de.model} model, df={de.df})"


def _effect_label(de: DEResult) -> str:
    label = de.estimates.columns[0] if de.estimates.shape[1] == 1 else de.tested
    text = str(label)
    if de.effect_model == "scale":
        text += ", scale"
    return text if len(text) <= 40 else text[:37] + "..."
