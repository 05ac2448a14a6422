"""Options shared by the ``batchglm`` commands.

The model and fit arguments, parameter constraints given as JSON or equations, and
``--size-factors``.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from batchglm.cli_tables import CliError

if TYPE_CHECKING:
    from anndata import AnnData


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
