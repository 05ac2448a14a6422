"""Replicate-aware routes of ``batchglm test``: ``--pseudobulk`` and ``--random-effects``.

Cells of a donor are not independent replicates of the donor's condition. The command
line offers the two remedies of the Python API (``docs/mixed_model.md``):

* ``--pseudobulk COLUMN`` sums the cells of each sample (:func:`batchglm.pseudobulk`)
  and runs the bulk pipeline (:func:`batchglm.de.test`) on the sums;
* ``--random-effects COLUMN`` fits a random intercept per level of the column
  (:func:`batchglm.fit` with ``random_effects=``, a negative binomial or Poisson mixed
  model) and tests its fixed effects with :func:`batchglm.de.wald` or
  :func:`batchglm.de.lrt` (small-sample references as documented there).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from batchglm.cli_tables import CliError

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.de.result import DEResult


def check_replicate_options(args: argparse.Namespace, lfc_threshold: float) -> None:
    """Refuse, before anything is read, the options a replicate-aware route cannot use.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``batchglm test`` arguments.
    lfc_threshold : float
        ``--lfc-threshold`` as a number.

    Raises
    ------
    CliError
        For ``--pseudobulk`` together with ``--random-effects``, ``--min-cells`` without
        ``--pseudobulk`` or below 1, and for options of the bulk pipeline (``--test ql``,
        ``--dispersion``, ``--lfc-shrink``, ``--lfc-threshold``, ``--weights``,
        ``--constraints-loc``, ``--model scale``, Cook's cutoff) with ``--random-effects``.
    """
    if args.min_cells is not None:
        if args.pseudobulk is None:
            raise CliError("--min-cells applies to --pseudobulk samples; give --pseudobulk too.")
        if args.min_cells < 1:
            raise CliError(f"--min-cells must be >= 1, but {args.min_cells} was given.")
    if args.random_effects is None:
        return
    if args.pseudobulk is not None:
        raise CliError(
            "give one of --pseudobulk (sum the cells of each sample) and --random-effects "
            "(fit the cells with random intercepts), not both."
        )
    refused = [
        (args.test == "ql", "--test ql"),
        (args.model != "loc", f"--model {args.model}"),
        (args.dispersion is not None, f"--dispersion {args.dispersion}"),
        (args.lfc_shrink is not None, "--lfc-shrink"),
        (lfc_threshold > 0, "--lfc-threshold"),
        (args.alt_hypothesis != "greaterAbs", "--alt-hypothesis"),
        (args.weights is not None, "--weights"),
        (bool(args.constraints_loc), "--constraints-loc"),
        (args.cooks_cutoff.lower() not in ("default", "none"), "--cooks-cutoff"),
        (args.contrast is not None and args.test == "lrt", "--test lrt --contrast"),
    ]
    given = [flag for bad, flag in refused if bad]
    if given:
        raise CliError(
            "--random-effects tests the fixed effects of a mixed model with --test wald "
            "(--coef or --contrast) or --test lrt (--reduced); it has no "
            f"{', '.join(given)} (drop it, or use --pseudobulk for the bulk pipeline)."
        )


def pseudobulk_input(adata: AnnData, args: argparse.Namespace) -> AnnData:
    """Sum the cells of each ``--pseudobulk`` sample (:func:`batchglm.pseudobulk`).

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x features as read from the input.
    args : argparse.Namespace
        Parsed arguments (``pseudobulk``, ``min_cells``, ``layer``).

    Returns
    -------
    anndata.AnnData
        Samples x features of summed counts, with the ``obs`` columns that are constant
        within samples and ``n_cells``.

    Raises
    ------
    CliError
        When a ``--pseudobulk`` column is not a column of ``obs``.
    """
    import batchglm as bg

    missing = [c for c in args.pseudobulk if c not in adata.obs.columns]
    if missing:
        raise CliError(
            f"--pseudobulk {missing[0]!r} is not a column of obs; the columns of obs are "
            f"{[str(c) for c in adata.obs.columns]}."
        )
    sample = args.pseudobulk[0] if len(args.pseudobulk) == 1 else list(args.pseudobulk)
    return bg.pseudobulk(
        adata, sample, layer=args.layer, min_cells=args.min_cells or 1, progress=False
    )


def random_effects_test(
    adata: AnnData, args: argparse.Namespace, options: dict[str, Any], size_factors: Any
) -> tuple[DEResult, str]:
    """Fit random intercepts per ``--random-effects`` column and test the fixed effects.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x features.
    args : argparse.Namespace
        Parsed arguments.
    options : dict
        The checked test options (``coef``, ``contrast``, ``method``, ``reduced``,
        ``alpha``).
    size_factors : array_like, str or None
        Resolved ``--size-factors``.

    Returns
    -------
    DEResult
        The test's result (Benjamini-Hochberg ``padj``, no independent filtering).
    str
        The one-line summary (features, tested, significant at ``--alpha``).

    Raises
    ------
    CliError
        When a ``--random-effects`` column is not a column of ``obs``.
    """
    import batchglm as bg

    missing = [c for c in args.random_effects if c not in adata.obs.columns]
    if missing:
        raise CliError(
            f"--random-effects {missing[0]!r} is not a column of obs; the columns of obs are "
            f"{[str(c) for c in adata.obs.columns]}."
        )
    groups = args.random_effects[0] if len(args.random_effects) == 1 else args.random_effects
    fit_args: dict[str, Any] = {
        "layer": args.layer,
        "size_factors": size_factors,
        "family": args.family,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "random_effects": groups,
    }
    if options["method"] == "lrt":
        result = bg.de.lrt(
            adata,
            args.design_loc,
            options["reduced"],
            args.design_scale,
            coef=options["coef"],
            **fit_args,
        )
    else:
        fit = bg.fit(adata, args.design_loc, args.design_scale, **fit_args)
        result = bg.de.wald(fit, options["coef"], contrast=options["contrast"])
    padj = np.asarray(result.qval, dtype=np.float64)
    tested = int(np.isfinite(padj).sum())
    n_sig = int(np.sum(padj[np.isfinite(padj)] < options["alpha"]))
    line = (
        f"{padj.size} features, {tested} tested, {n_sig} with padj < {options['alpha']:g} "
        f"(random intercepts for {', '.join(args.random_effects)}; {options['method']} test "
        "of the fixed effects)"
    )
    return result, line


def add_replicate_args(p_test: argparse.ArgumentParser) -> None:
    """Add ``--pseudobulk``, ``--min-cells`` and ``--random-effects`` to ``batchglm test``.

    Parameters
    ----------
    p_test : argparse.ArgumentParser
        The ``test`` subcommand's parser.
    """
    p_test.add_argument(
        "--pseudobulk",
        action="append",
        metavar="COLUMN",
        help="sum the cells of each sample (obs column, e.g. donor; repeat for a "
        "combination) and test the sums with the bulk pipeline (bg.pseudobulk)",
    )
    p_test.add_argument(
        "--min-cells",
        type=int,
        default=None,
        help="with --pseudobulk: drop samples with fewer cells (default 1)",
    )
    p_test.add_argument(
        "--random-effects",
        action="append",
        metavar="COLUMN",
        help="fit a random intercept per level of this obs column (e.g. donor; repeat for "
        "several grouping factors) and test the fixed effects with --test wald or lrt "
        "(size factors default to poscounts; count outliers flagged as by bg.de.wald on "
        "mixed fits; no Cook's check or independent filtering)",
    )
