"""Seed-compatible facade: ``import batchglm.api as glm``.

Code written for the original (TensorFlow-based) batchglm runs against this package:
``glm.models.nb_glm.Simulator``, ``glm.models.nb_glm.InputData``,
``glm.models.nb_glm.Estimator`` and ``glm.utils.stats``. The facade only translates: data are
simulated by :func:`batchglm.simulate` and every fit is :func:`batchglm.fit`, the exact
solver. Parameters come back as ``(n_params, n_features)`` labelled arrays
(:class:`batchglm.api.SeedArray`, an :class:`xarray.DataArray` that ``np.matmul`` accepts).
"""

from __future__ import annotations

from batchglm.api import models, utils
from batchglm.api._arrays import SeedArray

__all__ = ["SeedArray", "models", "utils"]
