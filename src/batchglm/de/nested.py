"""Nested models for the tests: see :mod:`batchglm.nested_designs` (kept for old imports)."""

from __future__ import annotations

from batchglm.nested_designs import check_nested, outside_columns

__all__ = ["check_nested", "outside_columns"]
