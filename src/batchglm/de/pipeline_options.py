"""Validation of the options of :func:`batchglm.de.test` (DESeq2's ``DESeq`` + ``results``).

The rules (which test takes which dispersion, the threshold's alternatives, Cook's cutoff
and ``minReplicatesForReplace``) are DESeq2's and edgeR's; each error names the option and
what was given.
"""

from __future__ import annotations

from typing import Any

from batchglm.de.threshold import check_threshold

METHODS = ("wald", "lrt", "ql")


def check_options(
    method: str,
    dispersion: str | None,
    coef: Any,
    contrast: Any,
    reduced: Any,
    alpha: float,
    lfc_threshold: float,
    alt_hypothesis: str,
    cooks_cutoff: Any,
    min_replicates_for_replace: float,
) -> str:
    """Validate the options of :func:`batchglm.de.test` and resolve its ``dispersion``.

    Parameters
    ----------
    method : {"wald", "lrt", "ql"}
        The test.
    dispersion : {"map", "mle", "ql"} or None
        NB dispersions; ``None`` means ``"ql"`` for ``method="ql"``, else ``"map"``.
    coef, contrast, reduced : object
        What is tested (exactly one of ``coef`` and ``contrast``, or for an LRT one of
        ``reduced`` and ``contrast``).
    alpha : float
        False discovery rate, in ``(0, 1)``.
    lfc_threshold : float
        Threshold on the log2 fold change (log2 units, ``>= 0``).
    alt_hypothesis : str
        DESeq2's ``altHypothesis``.
    cooks_cutoff : "default", float or None
        Cook's distance cutoff.
    min_replicates_for_replace : float
        DESeq2's ``minReplicatesForReplace``, at least 3.

    Returns
    -------
    str
        The dispersion option to use.

    Raises
    ------
    ValueError
        For an unknown or inconsistent option; the message names it and what was given.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, but {method!r} was given.")
    if dispersion is None:
        dispersion = "ql" if method == "ql" else "map"
    if dispersion not in ("mle", "map", "ql"):
        raise ValueError(
            f"`dispersion` must be 'mle', 'map' or 'ql', but {dispersion!r} was given."
        )
    if method == "ql" and dispersion != "ql":
        raise ValueError(
            f"`method='ql'` holds the dispersion at its trend, so `dispersion` must be 'ql' "
            f"(or None), but {dispersion!r} was given."
        )
    if method == "lrt":
        if (reduced is None) == (contrast is None):
            raise ValueError(
                "`method='lrt'` needs exactly one of `reduced` (a reduced design, e.g. "
                "reduced='~ 1', as DESeq2's nbinomLRT) and `contrast` (the design under "
                "`contrast` = 0, as edgeR's glmLRT(contrast=)), but "
                + ("neither was given." if reduced is None else "both were given.")
            )
        if contrast is not None and coef is not None:
            raise ValueError(
                "`method='lrt'` with `contrast` reports the contrast as the effect; drop `coef`."
            )
    else:
        if reduced is not None:
            raise ValueError(f"`reduced` is only used by method='lrt', not {method!r}.")
        if (coef is None) == (contrast is None):
            raise ValueError(f"`method={method!r}` needs exactly one of `coef` and `contrast`.")
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), but {alpha} was given.")
    check_threshold(lfc_threshold, alt_hypothesis)
    thresholded = lfc_threshold > 0 or alt_hypothesis != "greaterAbs"
    if method == "ql" and alt_hypothesis != "greaterAbs":
        raise ValueError(
            "`method='ql'` tests a threshold by edgeR's TREAT, whose alternative is "
            f"|log2FoldChange| > `lfc_threshold` ('greaterAbs'), but {alt_hypothesis!r} was "
            "given; use method='wald' for the others."
        )
    if thresholded and (method == "lrt" or (method == "wald" and dispersion == "ql")):
        raise ValueError(
            "`lfc_threshold` > 0 or another `alt_hypothesis` than 'greaterAbs' needs a Wald "
            "test with dispersion 'map' or 'mle' (as DESeq2) or method='ql' (edgeR's TREAT), "
            f"but method={method!r} with dispersion={dispersion!r} was given."
        )
    if not (cooks_cutoff is None or (isinstance(cooks_cutoff, str) and cooks_cutoff == "default")):
        if (
            isinstance(cooks_cutoff, bool | str)
            or not isinstance(cooks_cutoff, int | float)
            or not cooks_cutoff > 0
        ):
            raise ValueError(
                f"`cooks_cutoff` must be 'default', a positive number or None, but "
                f"{cooks_cutoff!r} was given."
            )
    if not min_replicates_for_replace >= 3:
        raise ValueError(
            "`min_replicates_for_replace` must be at least 3 (or inf to never replace), but "
            f"{min_replicates_for_replace} was given."
        )
    return dispersion
