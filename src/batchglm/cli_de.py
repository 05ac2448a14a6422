"""The ``batchglm test`` command: options, checks and :func:`batchglm.de.test`.

Every option is checked before anything is read or fitted, so a bad value costs nothing
and prints one line (``batchglm: error: ...``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import pandas as pd

from batchglm.cli_options import _add_fit_args, _constraints, _size_factors
from batchglm.cli_replicates import (
    add_replicate_args,
    check_replicate_options,
    pseudobulk_input,
    random_effects_test,
)
from batchglm.cli_tables import CliError, _out_path, _read_input, _write_table

#: DESeq2's ``altHypothesis`` values (``--alt-hypothesis``).
_ALTERNATIVES = ("greaterAbs", "lessAbs", "greater", "less")


def _cooks_cutoff(value: str) -> float | str | None:
    if value.lower() == "none":
        return None
    if value.lower() == "default":
        return "default"
    try:
        cutoff = float(value)
    except ValueError:
        cutoff = float("nan")
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise CliError(
            f"--cooks-cutoff must be a positive number, 'default' or 'none', but {value!r} "
            "was given."
        )
    return cutoff


def _number(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CliError(f"{flag} must be a number, but {value!r} was given.") from None


def _check_lfc_shrink(args: argparse.Namespace, lfc_threshold: float) -> None:
    shrink = args.lfc_shrink
    if shrink is None:
        return
    if shrink not in ("apeglm", "normal"):
        raise CliError(f"--lfc-shrink must be apeglm or normal, but {shrink!r} was given.")
    if args.test != "wald" or args.model != "loc":
        raise CliError(
            "--lfc-shrink shrinks the fold change of a Wald test of the location model, but "
            f"--test {args.test} --model {args.model} was given; use --test wald."
        )
    if args.coef is not None and len(args.coef) > 1:
        raise CliError("--lfc-shrink shrinks one --coef or --contrast, not a joint test.")
    if lfc_threshold > 0 or args.alt_hypothesis != "greaterAbs":
        raise CliError(
            "--lfc-shrink keeps the plain Wald p-values, so it cannot be combined with "
            "--lfc-threshold or --alt-hypothesis."
        )
    if args.weights is not None:
        raise CliError(
            "--lfc-shrink cannot be combined with --weights (its prior and MAP dispersions "
            "are unweighted); drop --lfc-shrink to report the weighted Wald fold changes."
        )


def _check_weights(args: argparse.Namespace, cooks_cutoff: Any) -> None:
    """Refuse, before anything is fitted, the options that --weights cannot be used with."""
    if args.weights is None:
        return
    need = (
        "--weights needs --dispersion mle and --cooks-cutoff none (the MAP and QL dispersion "
        "estimators and Cook's distances are unweighted)"
    )
    if args.test == "ql":
        raise CliError(f"{need} and --test wald or lrt, but --test ql was given.")
    if args.dispersion != "mle":
        given = (
            "no --dispersion (default map)"
            if args.dispersion is None
            else f"--dispersion {args.dispersion}"
        )
        raise CliError(f"{need}, but {given} was given.")
    if cooks_cutoff is not None:
        raise CliError(f"{need}, but --cooks-cutoff {args.cooks_cutoff} was given.")


def _test_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check the test's options before anything is read or fitted."""
    if args.test not in ("wald", "lrt", "ql"):
        raise CliError(f"--test must be wald, lrt or ql, but {args.test!r} was given.")
    if args.dispersion not in (None, "mle", "map", "ql"):
        raise CliError(f"--dispersion must be mle, map or ql, but {args.dispersion!r} was given.")
    alpha = _number(args.alpha, "--alpha")
    lfc_threshold = _number(args.lfc_threshold, "--lfc-threshold")
    if args.test == "lrt":
        if (args.reduced is None) == (args.contrast is None):
            raise CliError(
                '--test lrt needs exactly one of --reduced (e.g. --reduced "~ 1") and '
                "--contrast (the design under contrast = 0, as edgeR's glmLRT), but "
                + ("neither was given." if args.reduced is None else "both were given.")
            )
        if args.contrast is not None and args.coef is not None:
            raise CliError("--test lrt --contrast reports the contrast as the effect; drop --coef.")
        if args.coef is not None and len(args.coef) > 1:
            raise CliError("--test lrt reports one --coef as the effect; give at most one.")
    else:
        if args.reduced is not None:
            raise CliError(f"--reduced is only used by --test lrt, not --test {args.test}.")
        if (args.coef is None) == (args.contrast is None):
            raise CliError("give exactly one of --coef and --contrast.")
    if not 0 < alpha < 1:
        raise CliError(f"--alpha must lie in (0, 1), but {alpha:g} was given.")
    if not (np.isfinite(lfc_threshold) and lfc_threshold >= 0):
        raise CliError(
            f"--lfc-threshold must be a finite number >= 0, but {lfc_threshold:g} was given."
        )
    alt = args.alt_hypothesis
    if alt not in _ALTERNATIVES:
        raise CliError(
            f"--alt-hypothesis must be one of {', '.join(_ALTERNATIVES)}, but {alt!r} was given."
        )
    if alt == "lessAbs" and lfc_threshold == 0:
        raise CliError("--alt-hypothesis lessAbs needs --lfc-threshold > 0, but 0 was given.")
    if args.test == "ql" and alt != "greaterAbs":
        raise CliError(
            "--test ql tests --lfc-threshold by edgeR's TREAT, whose alternative is greaterAbs, "
            f"but --alt-hypothesis {alt} was given; use --test wald."
        )
    if args.treat_null not in ("interval", "worst.case"):
        raise CliError(
            f"--treat-null must be interval or worst.case, but {args.treat_null!r} was given."
        )
    if args.treat_null != "interval" and not (args.test == "ql" and lfc_threshold > 0):
        raise CliError(
            "--treat-null chooses the null of edgeR's TREAT test, which needs --test ql and "
            f"--lfc-threshold > 0, but --test {args.test} --lfc-threshold {lfc_threshold:g} "
            "was given."
        )
    if args.test == "lrt" and (lfc_threshold > 0 or alt != "greaterAbs"):
        raise CliError(
            "--lfc-threshold and --alt-hypothesis need --test wald or ql, not --test lrt."
        )
    _check_lfc_shrink(args, lfc_threshold)
    check_replicate_options(args, lfc_threshold)
    cooks_cutoff = _cooks_cutoff(args.cooks_cutoff)
    _check_weights(args, cooks_cutoff)
    coef: Any = None
    if args.coef is not None:
        coef = args.coef[0] if len(args.coef) == 1 else list(args.coef)
    return {
        "coef": coef,
        "contrast": None if args.contrast is None else tuple(args.contrast),
        "method": args.test,
        "reduced": args.reduced,
        "dispersion": args.dispersion,
        "cooks_cutoff": cooks_cutoff,
        "independent_filtering": not args.no_independent_filtering,
        "alpha": alpha,
        "lfc_threshold": lfc_threshold,
        "alt_hypothesis": alt,
        "treat_null": args.treat_null if args.test == "ql" and lfc_threshold > 0 else None,
        "model": args.model,
    }


def cmd_test(args: argparse.Namespace) -> None:
    """Run ``batchglm test``: :func:`batchglm.de.test` (fit, test, outliers, filtering).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Raises
    ------
    CliError
        For option values that do not fit together or are out of range, and for an output
        table whose columns do not include ``--sort-by``.
    """
    from batchglm import de

    options = _test_options(args)
    to_stdout = args.out == "-"
    out = None if to_stdout else _out_path(args.out, [".csv", ".tsv", ".txt"])
    adata = _read_input(args.input, args.obs)
    if args.pseudobulk is not None:
        adata = pseudobulk_input(adata, args)
    sf = args.size_factors
    if args.random_effects is not None:
        # Cells: the median ratio is undefined for genes with a zero in any cell.
        sf = "poscounts" if sf is None and args.family in ("nb", "poisson") else sf or "none"
        mixed, line = random_effects_test(adata, args, options, _size_factors(adata, sf))
        _write_result(pd.DataFrame(mixed.summary(sort_by=args.sort_by)), line, out)
        return
    if sf is None:
        sf = "median_ratio" if args.family in ("nb", "poisson") else "none"
    result = de.test(
        adata,
        args.design_loc,
        layer=args.layer,
        size_factors=_size_factors(adata, sf),
        design_scale=args.design_scale,
        constraints_loc=_constraints(args.constraints_loc, "--constraints-loc"),
        constraints_scale=_constraints(args.constraints_scale, "--constraints-scale"),
        family=args.family,
        max_iter=args.max_iter,
        tol=args.tol,
        weights=args.weights,
        **options,
    )
    columns = list(result.summary(n_max=0).columns)
    if args.lfc_shrink is not None:
        columns = [c for c in columns if c != "stat"] + ["log2FoldChange_MLE", "lfcSE_MLE", "lfsr"]
    if args.sort_by is not None and args.sort_by not in columns:
        raise CliError(
            f"--sort-by {args.sort_by!r} is not a column of the table; its columns are {columns}."
        )
    if args.lfc_shrink is not None:
        shrunk = de.lfc_shrink(
            result,
            options["coef"],
            contrast=options["contrast"],
            type=args.lfc_shrink,
            data=adata,
            layer=args.layer,
        )
        table = pd.DataFrame(shrunk.summary(sort_by=args.sort_by))
    else:
        table = pd.DataFrame(result.summary(sort_by=args.sort_by))
    _write_result(table, result.summary_line(), out)


def _write_result(table: pd.DataFrame, line: str, out: Any) -> None:
    """Print the summary line and write the table to ``out`` (``None``: stdout)."""
    # The 0.1 column names, kept at the end for scripts that read them (deprecated): they
    # repeat pvalue, padj and log2FoldChange (shrunken with --lfc-shrink).
    table["pval"], table["qval"], table["log2fc"] = (
        table["pvalue"],
        table["padj"],
        table["log2FoldChange"],
    )
    # The summary goes to stderr when stdout carries the table.
    print(f"batchglm: {line}", file=sys.stdout if out is not None else sys.stderr)
    if out is None:
        table.to_csv(sys.stdout)
    else:
        _write_table(table, out)


def add_test_parser(sub: Any) -> None:
    """Add the ``test`` subcommand to the ``batchglm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of the main parser.
    """
    p_test = sub.add_parser(
        "test",
        help="differential test per feature (DESeq2-style pipeline)",
        description="Fit, then test per feature as DESeq2 (size factors, MAP dispersions, "
        "Wald test, Cook's outliers, independent filtering) or edgeR (--test ql). "
        "Prints one summary line; --out - writes the table to stdout (the "
        "summary line then goes to stderr).",
    )
    _add_fit_args(p_test)
    p_test.add_argument(
        "--coef",
        action="append",
        help='coefficient to test, e.g. "condition[T.treated]" (repeat for '
        "a joint test; with --test lrt: the effect to report)",
    )
    p_test.add_argument(
        "--contrast",
        nargs=3,
        metavar=("FACTOR", "LEVEL", "REFERENCE"),
        help="compare two levels of a factor (with --test lrt: the likelihood-ratio test "
        "of --design-loc against it under the contrast = 0, instead of --reduced)",
    )
    p_test.add_argument(
        "--model",
        choices=["loc", "scale"],
        default="loc",
        help="model whose coefficients are tested",
    )
    p_test.add_argument(
        "--test",
        default="wald",
        metavar="{wald,lrt,ql}",
        help="wald (default, DESeq2), lrt (against --reduced, or of --contrast) or ql "
        "(quasi-likelihood F test, edgeR)",
    )
    p_test.add_argument(
        "--reduced", metavar="FORMULA", help='reduced location formula for --test lrt, e.g. "~ 1"'
    )
    p_test.add_argument(
        "--dispersion",
        default=None,
        metavar="{mle,map,ql}",
        help="NB dispersions: map (default for wald/lrt, DESeq2), mle (per "
        "feature; default for other families and --model scale) or ql",
    )
    p_test.add_argument(
        "--cooks-cutoff",
        default="default",
        metavar="FLOAT|none",
        help="Cook's distance cutoff for count outliers (default: DESeq2's "
        "F(0.99; p, n - p) quantile; none: off)",
    )
    p_test.add_argument(
        "--no-independent-filtering",
        action="store_true",
        help="adjust all p-values (default: filter low baseMean as DESeq2)",
    )
    p_test.add_argument(
        "--alpha", default="0.1", help="FDR for independent filtering and the summary (default 0.1)"
    )
    p_test.add_argument(
        "--lfc-threshold",
        default="0",
        help="threshold T on the log2 fold change (log2 units, default 0); --test wald: "
        "DESeq2's thresholded Wald test, --test ql: edgeR's TREAT (glmTreat)",
    )
    p_test.add_argument(
        "--alt-hypothesis",
        default="greaterAbs",
        metavar="{greaterAbs,lessAbs,greater,less}",
        help="alternative, as DESeq2's altHypothesis: |LFC| > T (default), |LFC| < T, "
        "LFC > T, LFC < -T (--test wald; --test ql: greaterAbs only)",
    )
    p_test.add_argument(
        "--treat-null",
        default="interval",
        metavar="{interval,worst.case}",
        help="null of the TREAT test (--test ql --lfc-threshold T), as edgeR's glmTreat: "
        "the true LFC anywhere in [-T, T] (interval, default, as edgeR) or on the nearer "
        "boundary (worst.case, larger p-values)",
    )
    p_test.add_argument(
        "--weights",
        metavar="COLUMN",
        help="obs column of per-sample observation weights (frequency weights: 2 counts a "
        "sample twice); needs --dispersion mle and --cooks-cutoff none (--test wald or lrt; "
        "not with --lfc-shrink)",
    )
    p_test.add_argument(
        "--lfc-shrink",
        nargs="?",
        const="apeglm",
        default=None,
        metavar="{apeglm,normal}",
        help="report shrunken log2FoldChange and lfcSE (bg.de.lfc_shrink: apeglm's Cauchy "
        "prior, the default, or DESeq2's normal prior), with log2FoldChange_MLE, lfcSE_MLE "
        "and lfsr; p-values stay those of the Wald test (--test wald only)",
    )
    p_test.add_argument(
        "--sort-by",
        metavar="COLUMN",
        help="sort the table by this column, e.g. pvalue (default: input order)",
    )
    p_test.add_argument(
        "--out",
        required=True,
        help=".csv/.tsv with one row per feature (baseMean, log2FoldChange, lfcSE, "
        "stat, pvalue, padj, status, maxCooks, ...; the last three columns pval, qval, "
        "log2fc repeat pvalue, padj, log2FoldChange for scripts written for batchglm 0.1), "
        "or - for stdout (CSV)",
    )
    add_replicate_args(p_test)
    p_test.set_defaults(func=cmd_test)
