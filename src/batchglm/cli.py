r"""The ``batchglm`` command line: ``batchglm fit``, ``batchglm test``, ``batchglm simulate``.

Examples::

    batchglm fit data.h5ad --design-loc "~ 1 + condition + replicate" \
        --constraints-loc '{"replicate": "condition"}' --layer counts --out fitted.h5ad
    batchglm test data.h5ad --design-loc "~ 1 + condition" --coef "condition[T.treated]" \
        --layer counts --out de.csv
    batchglm test counts.csv --obs samples.csv --design-loc "~ condition" \
        --contrast condition trt ctrl --size-factors tmm --test ql --out -
    batchglm fit counts.tsv --obs samples.tsv --design-loc "~ 1 + condition" --out fit.csv
    batchglm test cells.h5ad --design-loc "~ condition" --random-effects donor \
        --coef "condition[T.stim]" --out de.csv
    batchglm simulate --obs samples.csv --design-loc "~ 1 + condition" --n-features 100 \
        --seed 0 --out sim.h5ad

Modules: this one parses the arguments and runs ``fit`` and ``simulate``;
:mod:`batchglm.cli_de` is the ``test`` command, :mod:`batchglm.cli_tables` reads and
writes the tables and :mod:`batchglm.cli_options` holds the options the commands share.

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
import io
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import pandas as pd

from batchglm.anndata_write import write_h5ad
from batchglm.cli_de import add_test_parser, cmd_test
from batchglm.cli_options import _add_fit_args, _add_model_args, _constraints, _size_factors
from batchglm.cli_tables import (
    CliError,
    _out_path,
    _read_input,
    _read_table,
    _suffix,
    _write_table,
)

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.result import FitResult

__all__ = ["CliError", "build_parser", "cmd_fit", "cmd_simulate", "cmd_test", "main"]


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
        write_h5ad(adata, out)
    else:
        _write_table(_fit_table(res), out)


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
    write_h5ad(adata, out)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``batchglm`` command.

    Returns
    -------
    argparse.ArgumentParser
        Parser with the sub-commands ``fit``, ``test`` and ``simulate``.
    """
    from batchglm import __version__

    parser = _OneLineParser(
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

    add_test_parser(sub)

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


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit status 1, as every other error."""

    def error(self, message: str) -> NoReturn:
        """Print ``batchglm: error: ...`` (with the sub-command) and exit with status 1.

        Parameters
        ----------
        message : str
            argparse's message.

        Raises
        ------
        SystemExit
            Always, with status 1.
        """
        print(
            f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)",
            file=sys.stderr,
        )
        raise SystemExit(1)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    # Each text once per run: a refit after Cook's replacement repeats the fit's warnings,
    # and the library's own warning filters (nested catch_warnings) reset Python's "once".
    if text in _SHOWN:
        return
    _SHOWN.add(text)
    if "(pseudoreplication)" in text:
        # The advice names the Python API; say what the command line offers.
        text += " On the command line: `batchglm test --random-effects COLUMN` or "
        text += "`--pseudobulk COLUMN`."
    print(f"batchglm: warning: {text}", file=sys.stderr)


#: Warning texts printed in this run (see :func:`_show_warning`).
_SHOWN: set[str] = set()


#: Exit status of a process ended by SIGPIPE in a shell (128 + 13).
_SIGPIPE_STATUS = 141


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (e.g. replaced in tests): nothing is flushed at exit


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``batchglm`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; by default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 1 on an error, usage errors included (reported as one
        line on stderr); 141 without a message when the reader of stdout closed it early
        (``--out - | head``), as for a process ended by SIGPIPE.
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
            # Warnings print as lines whatever the caller's filters (e.g. "error" in tests).
            warnings.simplefilter("always")
            _SHOWN.clear()
            args.func(args)
    except BrokenPipeError:
        # The reader stopped early (`batchglm test ... --out - | head`): quiet, as Unix
        # tools killed by SIGPIPE, with their exit status.
        _silence_stdout()
        return _SIGPIPE_STATUS
    except (CliError, ValueError, KeyError, OSError, NotImplementedError) as err:
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
