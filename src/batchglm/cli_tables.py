"""Reading and writing the command line's tables.

Count tables (either orientation), obs tables and ``.h5ad`` files in; result tables out.
Problems raise :class:`CliError`, which ``batchglm`` prints as one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batchglm.align import as_names, positions

if TYPE_CHECKING:
    from anndata import AnnData

_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}


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
        side = "rows"
        if same_cols or (not same_rows and in_cols > in_rows):
            counts, side = counts.T, "columns"
        counts.index = as_names(counts.index)
        extra = [str(n) for n in counts.index if n not in set(names)]
        if extra and len(extra) < len(counts.index):
            # Typically an annotation column next to the samples (a gene symbol, or
            # featureCounts' Chr/Start/End/Strand/Length), not a missing obs row.
            raise CliError(
                f"the count table {path!r} has {len(extra)} {side} that are not in the obs "
                f"table: {extra[:5]}; if they are annotation columns (gene symbols, "
                "featureCounts' Length), drop them, as a count table holds only counts (names "
                "in the first column and the header); if they are observations, add them to "
                "the obs table."
            )
        obs = _obs_in_order(obs, counts.index, path)
    try:
        # C order whichever way the table was written: a transposed table would otherwise
        # give a column-major array, whose sums and products run in another order (p-values
        # then differed between the two orientations of one table: 5e-13 relative on a
        # simulated table, up to 2.3e-5 as reported on another).
        values = np.ascontiguousarray(counts.to_numpy(dtype=np.float64))
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


def _out_path(path: str, allowed: Sequence[str]) -> Path:
    p = Path(path)
    if _suffix(p) not in allowed:
        raise CliError(f"--out {path!r} must end in one of {', '.join(allowed)}.")
    if not p.parent.exists():
        raise CliError(f"the directory of --out {path!r} does not exist.")
    return p


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, sep=_TABLE_SUFFIXES[_suffix(path)])
