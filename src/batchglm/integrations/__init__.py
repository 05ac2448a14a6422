"""batchglm behind other tools' interfaces.

Each submodule adapts batchglm to one tool and imports that tool when it is imported
itself, so ``import batchglm`` never needs them:

* :mod:`batchglm.integrations.pertpy`: :class:`~batchglm.integrations.pertpy.BatchglmDE`, a
  differential-expression backend with pertpy's ``LinearModelBase`` interface
  (``pip install "batchglm[pertpy]"``).
"""

from __future__ import annotations
