r"""The ``batchglm`` command line: ``batchglm fit``, ``batchglm test``, ``batchglm simulate``.

Examples::

    batchglm fit data.h5ad --design-loc "~ 1 + condition + replicate" \
        --constraints-loc '{"replicate": "condition"}' --layer counts --out fitted.h5ad
    batchglm test data.h5ad --design-loc "~ 1 + condition" --coef "condition[T.treated]" \
        --layer counts --out de.csv
    batchglm test counts.csv --obs samples.csv --design-loc "~ condition" \
        --contrast condition trt ctrl --size-factors tmm --test ql --out -
    batchglm fit counts.tsv --obs samples.tsv --design-loc "~ 1 + condition" --out fit.csv
    batchglm simulate --obs samples.csv --design-loc "~ 1 + condition" --n-features 100 \
        --seed 0 --out sim.h5ad

Inputs are ``.h5ad`` files or CSV/TSV count tables (first column: names) with a separate
observation table (``--obs``, first column: observation names). A count table may hold
observations in rows or in columns; its observations keep their order and the ``--obs``
rows are matched to them by name (any order); names that differ as sets are an error.
Errors print one line, ``batchglm: error: ...``, to stderr and exit with status 1
(``--debug`` shows the traceback instead); warnings (e.g. about ``--obs`` columns used in a
formula, see ``docs/annotations.md``) print one line each, ``batchglm: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchglm.align import as_names, positions

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.result import FitResult

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
#: DESeq2's ``altHypothesis`` values (``--alt-hypothesis``).
_ALTERNATIVES = ("greaterAbs", "lessAbs", "greater", "less")


class CliError(Exception):
    """A problem with the command line's inputs, reported as one line."""


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in {".gz", ".bz2", ".zip", ".xz"} and len(suffixes) > 1:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{what} file {path!r} does not exist.")
    if p.is_dir():
        raise CliError(f"{what} {path!r} is a directory, not a file.")
    return p


def _read_table(path: str, what: str) -> pd.DataFrame:
    p = _existing(path, what)
    sep = _TABLE_SUFFIXES.get(_suffix(p))
    if sep is None:
        raise CliError(
            f"{what} file {path!r} must be a .csv, .tsv or .txt table (optionally compressed)."
        )
    try:
        table = pd.read_csv(p, sep=sep, index_col=0)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise CliError(f"could not read {what} file {path!r}: {err}") from None
    table.index = table.index.astype(str)
    return table


def _read_obs(path: str | None) -> pd.DataFrame | None:
    return None if path is None else _read_table(path, "obs")


def _obs_in_order(obs: pd.DataFrame, names: pd.Index, path: str) -> pd.DataFrame:
    """Reorder the obs table to the input's observations, matching them by name."""
    pos = positions(
        as_names(names),
        obs.index,
        what="the obs table",
        target_what=repr(path),
        axis="observation",
        hint="give the obs table one row per observation of the input",
    )
    return obs if pos is None else obs.iloc[pos]


def _counts_to_anndata(counts: pd.DataFrame, obs: pd.DataFrame | None, path: str) -> AnnData:
    import anndata

    if obs is not None:
        names = pd.Index(obs.index.astype(str))
        if names.has_duplicates:
            raise CliError("the obs table has duplicate observation names (first column).")
        # Observations are the side of the table that the obs names label (rows or
        # columns); the table's order is kept and obs follows it by name.
        rows, cols = as_names(counts.index), as_names(counts.columns)
        # An exact match of the name sets decides first (numeric gene IDs 1..n may contain
        # the sample names 1..m); partial overlaps only when neither side matches exactly.
        same_rows = len(rows) == len(names) and bool(rows.isin(names).all())
        same_cols = len(cols) == len(names) and bool(cols.isin(names).all())
        if same_rows and same_cols:
            raise CliError(
                f"the obs table's names match both the row and the column names of the count "
                f"table {path!r}, so its orientation is ambiguous; give samples and genes "
                "distinct names (e.g. prefix the gene IDs)."
            )
        in_rows = int(names.isin(rows).sum())
        in_cols = int(names.isin(cols).sum())
        if in_rows == 0 and in_cols == 0:
            raise CliError(
                f"the observation names of the obs table (e.g. {list(names[:3])}) are neither "
                f"the row names nor the column names of the count table {path!r}."
            )
        if same_cols or (not same_rows and in_cols > in_rows):
            counts = counts.T
        counts.index = as_names(counts.index)
        obs = _obs_in_order(obs, counts.index, path)
    try:
        values = counts.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise CliError(
            f"the count table {path!r} must hold numbers only (names in the first column "
            "and the header)."
        ) from None
    return anndata.AnnData(
        X=values,
        obs=obs if obs is not None else pd.DataFrame(index=counts.index),
        var=pd.DataFrame(index=counts.columns.astype(str)),
    )


def _read_input(path: str, obs_path: str | None) -> AnnData:
    p = _existing(path, "input")
    obs = _read_obs(obs_path)
    if _suffix(p) == ".h5ad":
        import anndata

        try:
            adata = anndata.read_h5ad(p)
        except (OSError, ValueError, KeyError) as err:
            raise CliError(f"could not read {path!r} as an .h5ad file: {err}") from None
        if obs is not None:
            adata.obs = _obs_in_order(obs, adata.obs_names, path)
        return adata
    return _counts_to_anndata(_read_table(path, "input"), obs, path)


def _constraints(values: list[str] | None, flag: str) -> Any:
    """JSON dict/list of nested factors or equations, or one equation per flag."""
    if not values:
        return None
    parsed: list[Any] = []
    for value in values:
        text = value.strip()
        if text[:1] in "{[":
            try:
                parsed.append(json.loads(text))
            except json.JSONDecodeError as err:
                raise CliError(f"{flag} {value!r} is not valid JSON: {err.msg}.") from None
        else:
            parsed.append(text)
    if len(parsed) == 1 and isinstance(parsed[0], dict | list):
        return parsed[0]
    if all(isinstance(p, str) for p in parsed):
        return parsed
    raise CliError(
        f"give {flag} either once as JSON (a dict of nested factors such as "
        '\'{"replicate": "condition"}\' or a list of equations), or once per equation.'
    )


#: ``--size-factors`` values that name a method rather than an obs column.
SIZE_FACTOR_METHODS = ("median_ratio", "poscounts", "normed_sum", "tmm")


def _size_factors(adata: AnnData, value: str | None) -> Any:
    """Resolve a method name (``median_ratio``, ..., ``tmm``), ``none``, or an obs column."""
    if value is None or value == "none":
        return None
    if value in SIZE_FACTOR_METHODS:
        if value in adata.obs.columns:
            raise CliError(
                f"--size-factors {value!r} is both a method and a column of obs; rename the "
                "column to use it."
            )
        return value
    if value not in adata.obs.columns:
        raise CliError(
            f"--size-factors {value!r} is not a column of obs nor a method "
            f"({', '.join(SIZE_FACTOR_METHODS)}, none); the columns of obs are "
            f"{[str(c) for c in adata.obs.columns]}."
        )
    return adata.obs[value].to_numpy(dtype=np.float64)


def _fit(args: argparse.Namespace) -> tuple[AnnData, FitResult]:
    import batchglm as bg

    adata = _read_input(args.input, args.obs)
    res = bg.fit(
        adata,
        args.design_loc,
        args.design_scale,
        layer=args.layer,
        constraints_loc=_constraints(args.constraints_loc, "--constraints-loc"),
        constraints_scale=_constraints(args.constraints_scale, "--constraints-scale"),
        size_factors=_size_factors(adata, args.size_factors),
        family=args.family,
        max_iter=args.max_iter,
        tol=args.tol,
    )
    return adata, res


def _out_path(path: str, allowed: Sequence[str]) -> Path:
    p = Path(path)
    if _suffix(p) not in allowed:
        raise CliError(f"--out {path!r} must end in one of {', '.join(allowed)}.")
    if not p.parent.exists():
        raise CliError(f"the directory of --out {path!r} does not exist.")
    return p


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, sep=_TABLE_SUFFIXES[_suffix(path)])


def _fit_table(res: FitResult) -> pd.DataFrame:
    parts = [
        res.coef_loc.add_prefix("coef_loc:"),
        res.se_loc.add_prefix("se_loc:"),
        res.coef_scale.add_prefix("coef_scale:"),
        res.se_scale.add_prefix("se_scale:"),
        res.summary(),
    ]
    out = pd.concat(parts, axis=1)
    out.index.name = "feature"
    return out


def cmd_fit(args: argparse.Namespace) -> None:
    """Run ``batchglm fit``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.
    """
    out = _out_path(args.out, [".h5ad", ".csv", ".tsv", ".txt"])
    adata, res = _fit(args)
    if _suffix(out) == ".h5ad":
        res.to_anndata(adata, key_added=args.key_added)
        adata.write_h5ad(out)
    else:
        _write_table(_fit_table(res), out)


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


def _test_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check the test's options before anything is read or fitted."""
    if args.test not in ("wald", "lrt", "ql"):
        raise CliError(f"--test must be wald, lrt or ql, but {args.test!r} was given.")
    if args.dispersion not in (None, "mle", "map", "ql"):
        raise CliError(f"--dispersion must be mle, map or ql, but {args.dispersion!r} was given.")
    alpha = _number(args.alpha, "--alpha")
    lfc_threshold = _number(args.lfc_threshold, "--lfc-threshold")
    if args.test == "lrt":
        if args.reduced is None:
            raise CliError('--test lrt needs --reduced, e.g. --reduced "~ 1".')
        if args.contrast is not None:
            raise CliError("--test lrt compares --design-loc with --reduced; drop --contrast.")
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
        raise CliError(f"--lfc-threshold must be >= 0, but {lfc_threshold:g} was given.")
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
    if args.test == "lrt" and (lfc_threshold > 0 or alt != "greaterAbs"):
        raise CliError(
            "--lfc-threshold and --alt-hypothesis need --test wald or ql, not --test lrt."
        )
    coef: Any = None
    if args.coef is not None:
        coef = args.coef[0] if len(args.coef) == 1 else list(args.coef)
    return {
        "coef": coef,
        "contrast": None if args.contrast is None else tuple(args.contrast),
        "method": args.test,
        "reduced": args.reduced,
        "dispersion": args.dispersion,
        "cooks_cutoff": _cooks_cutoff(args.cooks_cutoff),
        "independent_filtering": not args.no_independent_filtering,
        "alpha": alpha,
        "lfc_threshold": lfc_threshold,
        "alt_hypothesis": alt,
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
        When ``--sort-by`` is not a column of the results table.
    """
    from batchglm import de

    options = _test_options(args)
    to_stdout = args.out == "-"
    out = None if to_stdout else _out_path(args.out, [".csv", ".tsv", ".txt"])
    adata = _read_input(args.input, args.obs)
    sf = args.size_factors
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
        **options,
    )
    if args.sort_by is not None and args.sort_by not in result.summary(n_max=0).columns:
        raise CliError(
            f"--sort-by {args.sort_by!r} is not a column of the table; its columns are "
            f"{list(result.summary(n_max=0).columns)}."
        )
    table = pd.DataFrame(result.summary(sort_by=args.sort_by))
    # The 0.1 column names, kept at the end for scripts that read them (deprecated).
    table["pval"], table["qval"], table["log2fc"] = (
        table["pvalue"],
        table["padj"],
        table["log2FoldChange"],
    )
    # The summary goes to stderr when stdout carries the table.
    print(f"batchglm: {result.summary_line()}", file=sys.stderr if to_stdout else sys.stdout)
    if out is None:
        table.to_csv(sys.stdout)
    else:
        _write_table(table, out)


def cmd_simulate(args: argparse.Namespace) -> None:
    """Run ``batchglm simulate``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.
    """
    import anndata

    import batchglm as bg

    out = _out_path(args.out, [".h5ad", ".csv", ".tsv", ".txt"])
    obs = _read_table(args.obs, "obs")
    sim = bg.simulate(
        args.design_loc,
        args.design_scale,
        n_features=args.n_features,
        obs=obs,
        family=args.family,
        constraints_loc=_constraints(args.constraints_loc, "--constraints-loc"),
        constraints_scale=_constraints(args.constraints_scale, "--constraints-scale"),
        seed=args.seed,
    )
    counts = pd.DataFrame(sim.data, index=obs.index, columns=sim.feature_names)
    if _suffix(out) != ".h5ad":
        _write_table(counts, out)
        return
    adata = anndata.AnnData(X=sim.data, obs=obs, var=pd.DataFrame(index=sim.feature_names))
    if args.layer is not None:
        adata.layers[args.layer] = sim.data.copy()
    adata.varm["true_coef_loc"] = sim.coef_loc
    adata.varm["true_coef_scale"] = sim.coef_scale
    adata.uns["simulation"] = {
        "family": sim.family,
        "design_loc": args.design_loc,
        "design_scale": args.design_scale or "~ 1",
        "seed": -1 if args.seed is None else args.seed,
    }
    adata.write_h5ad(out)


def _add_model_args(p: argparse.ArgumentParser, required_loc: bool = True) -> None:
    p.add_argument(
        "--design-loc",
        required=required_loc,
        help='location formula, e.g. "~ 1 + condition + replicate"',
    )
    p.add_argument(
        "--design-scale", default=None, help='scale formula (default: "~ 1", intercept only)'
    )
    p.add_argument(
        "--constraints-loc",
        action="append",
        metavar="SPEC",
        help='JSON dict of nested factors, e.g. \'{"replicate": "condition"}\', '
        "a JSON list of equations, or one equation per flag, e.g. "
        '"replicate[T.r2] + replicate[T.r3] = 0"',
    )
    p.add_argument(
        "--constraints-scale",
        action="append",
        metavar="SPEC",
        help="as --constraints-loc, for the scale model",
    )
    p.add_argument("--family", default="nb", help="noise model (default: nb)")


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help=".h5ad file, or a CSV/TSV count table")
    p.add_argument("--obs", help="CSV/TSV observation table (first column: names)")
    p.add_argument("--layer", help="AnnData layer with the counts (default: X)")
    _add_model_args(p)
    p.add_argument(
        "--size-factors",
        metavar="METHOD|COLUMN",
        help="median_ratio (DESeq2), poscounts, normed_sum, tmm (edgeR), none, or "
        "an obs column with size factors (test: median_ratio for nb/poisson; "
        "fit: none)",
    )
    p.add_argument("--max-iter", type=int, default=100, help="Newton iterations per feature")
    p.add_argument("--tol", type=float, default=1e-10, help="convergence tolerance")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``batchglm`` command.

    Returns
    -------
    argparse.ArgumentParser
        Parser with the sub-commands ``fit``, ``test`` and ``simulate``.
    """
    from batchglm import __version__

    parser = argparse.ArgumentParser(
        prog="batchglm",
        description="Fit location/scale GLMs per feature, test them, or simulate data.",
    )
    parser.add_argument("--version", action="version", version=f"batchglm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_fit = sub.add_parser(
        "fit",
        help="fit a GLM per feature",
        description="Fit a GLM per feature; write .h5ad or a table.",
    )
    _add_fit_args(p_fit)
    p_fit.add_argument("--key-added", default="batchglm", help="prefix of the .h5ad keys")
    p_fit.add_argument(
        "--out", required=True, help=".h5ad (the input with the fit added) or .csv/.tsv table"
    )
    p_fit.set_defaults(func=cmd_fit)

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
        help="compare two levels of a factor",
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
        help="wald (default, DESeq2), lrt (against --reduced) or ql "
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
        "--sort-by",
        metavar="COLUMN",
        help="sort the table by this column, e.g. pvalue (default: input order)",
    )
    p_test.add_argument(
        "--out",
        required=True,
        help=".csv/.tsv with one row per feature (baseMean, log2FoldChange, lfcSE, "
        "stat, pvalue, padj, status, maxCooks, ...), or - for stdout (CSV)",
    )
    p_test.set_defaults(func=cmd_test)

    p_sim = sub.add_parser(
        "simulate",
        help="simulate data with known parameters",
        description="Simulate counts for the observations of --obs.",
    )
    p_sim.add_argument(
        "--obs", required=True, help="CSV/TSV observation table (first column: names)"
    )
    _add_model_args(p_sim)
    p_sim.add_argument("--n-features", type=int, default=100, help="features to simulate")
    p_sim.add_argument("--seed", type=int, default=None, help="random seed")
    p_sim.add_argument("--layer", help="also store the counts in this layer")
    p_sim.add_argument("--out", required=True, help=".h5ad, or .csv/.tsv count table")
    p_sim.set_defaults(func=cmd_simulate)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    print(f"batchglm: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchglm`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 on an error (reported as one line on stderr), 2 for
        usage errors (reported by argparse).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="batchglm: %(message)s"
    )
    try:
        with warnings.catch_warnings():
            # One line per warning, like the errors, instead of a file name and source line.
            warnings.showwarning = _show_warning
            args.func(args)
    except (CliError, ValueError, KeyError, OSError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"batchglm: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - one line instead of a traceback, as promised
        if args.debug:
            raise
        print(
            f"batchglm: error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
