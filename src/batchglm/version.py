"""The package version, in a module of its own so writers of files can record it.

:mod:`batchglm.anndata_write` stores it with a fit; importing it from here rather than from
the package keeps the package facade (``batchglm/__init__.py``) at the top of the import
graph. Keep it equal to ``version`` in ``pyproject.toml``.
"""

from __future__ import annotations

__version__ = "0.1.0"
