"""The results table of a differential test, with the column names of earlier releases.

:meth:`batchglm.de.DEResult.summary` returns a :class:`DETable`: a plain
:class:`pandas.DataFrame` indexed by feature, whose item and attribute access also accept
the names of the old layout (``pval``, ``qval``, ``log2fc``, ``mean``, ``ll``, ``coef_sd``
and ``feature``) with a :class:`DeprecationWarning` that names the new column. Rows
(``table.iloc[0]``) are :class:`DERow` series with the same mapping.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

#: Old column name -> column of the current table. ``feature`` is the index.
LEGACY_COLUMNS: dict[str, str] = {
    "pval": "pvalue",
    "qval": "padj",
    "log2fc": "log2FoldChange",
    "mean": "baseMean",
    "ll": "loglik",
    "coef_sd": "coef_se",
    "feature": "feature",
}


def _warn(old: str, stacklevel: int) -> None:
    new = LEGACY_COLUMNS[old]
    where = "the index (index name 'feature')" if old == "feature" else f"column {new!r}"
    warnings.warn(
        f"column {old!r} of the DE table is deprecated; use {where} instead.",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def _legacy(key: Any, present: pd.Index) -> bool:
    """Whether ``key`` is an old name to map, given the labels ``present``."""
    if not isinstance(key, str) or key not in LEGACY_COLUMNS or key in present:
        return False
    # A row has the table's columns as labels; a column (labels = features) maps nothing.
    return "pvalue" in present if key == "feature" else LEGACY_COLUMNS[key] in present


class DERow(pd.Series):
    """A row (or column) of a :class:`DETable`; old column names still work, with a warning."""

    @property
    def _constructor(self) -> type[DERow]:
        return DERow

    @property
    def _constructor_expanddim(self) -> type[DETable]:
        return DETable

    def _legacy_item(self, key: str, stacklevel: int) -> Any:
        _warn(key, stacklevel + 1)
        return self.name if key == "feature" else super().__getitem__(LEGACY_COLUMNS[key])

    def __getitem__(self, key: Any) -> Any:
        if _legacy(key, self.index):
            return self._legacy_item(key, 2)
        if isinstance(key, list) and any(_legacy(k, self.index) for k in key):
            values = []
            for k in key:
                legacy = _legacy(k, self.index)
                values.append(self._legacy_item(k, 2) if legacy else super().__getitem__(k))
            return DERow(values, index=list(key), name=self.name, dtype=object)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:  # type: ignore[misc]
        if not name.startswith("_") and name in LEGACY_COLUMNS:
            if _legacy(name, object.__getattribute__(self, "index")):
                return self._legacy_item(name, 2)
        return super().__getattr__(name)


class DETable(pd.DataFrame):
    """Per-feature test results indexed by feature name.

    Columns are documented in :meth:`batchglm.de.DEResult.summary`. Reading a column by
    its old name (``table.pval``, ``table["qval"]``, ``table[["feature", "pval"]]``)
    works and warns with :class:`DeprecationWarning`; ``feature`` is the index.
    """

    @property
    def _constructor(self) -> type[DETable]:
        return DETable

    @property
    def _constructor_sliced(self) -> type[DERow]:
        return DERow

    def _legacy_item(self, key: str, stacklevel: int) -> Any:
        _warn(key, stacklevel + 1)
        if key == "feature":
            return DERow(self.index.to_numpy(), index=self.index, name="feature")
        return super().__getitem__(LEGACY_COLUMNS[key])

    def __getitem__(self, key: Any) -> Any:
        if _legacy(key, self.columns):
            return self._legacy_item(key, 2)
        if isinstance(key, list) and any(_legacy(k, self.columns) for k in key):
            parts = {}
            for k in key:
                legacy = _legacy(k, self.columns)
                parts[k] = self._legacy_item(k, 2) if legacy else super().__getitem__(k)
            return DETable(parts, index=self.index)
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:  # type: ignore[misc]
        if not name.startswith("_") and name in LEGACY_COLUMNS:
            if _legacy(name, object.__getattribute__(self, "columns")):
                return self._legacy_item(name, 2)
        return super().__getattr__(name)
