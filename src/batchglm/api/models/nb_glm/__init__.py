"""Negative-binomial GLMs with the seed's surface: ``Simulator``, ``InputData``, ``Estimator``.

A thin translation layer: :class:`Simulator` calls :func:`batchglm.simulate`,
:class:`Estimator` calls :func:`batchglm.fit`, and both hand results back in the seed's
shapes and names, i.e. parameters as ``(n_params, n_features)`` labelled arrays with dims
``("design_loc_params", "features")`` / ``("design_scale_params", "features")``, data and
designs as ``("observations", ...)`` arrays. Those arrays are :class:`batchglm.api.SeedArray`
objects, xarray DataArrays that ``np.matmul`` accepts, so seed code such as
``np.matmul(estimator.design_loc, estimator.par_link_loc)`` keeps working.
"""

from __future__ import annotations

from batchglm.api.models.nb_glm._common import SEED_TRAINING_STRATEGIES
from batchglm.api.models.nb_glm.estimator import Estimator
from batchglm.api.models.nb_glm.input_data import InputData
from batchglm.api.models.nb_glm.simulator import Simulator

__all__ = ["SEED_TRAINING_STRATEGIES", "Estimator", "InputData", "Simulator"]
