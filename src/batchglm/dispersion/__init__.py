"""NB dispersions for small samples: Cox-Reid estimates, trend and shrinkage.

::

    import batchglm as bg
    res = bg.fit(counts, design)
    disp = bg.dispersion.estimate_dispersions(counts, res)   # genewise, trend, map
    disp.to_frame()

Differential tests use these through ``dispersion="map"`` or ``"ql"`` in
:func:`batchglm.de.wald`, :func:`batchglm.de.lrt` and :func:`batchglm.de.ql_f`.
"""

from __future__ import annotations

from batchglm.dispersion.cox_reid import LogNormalPrior, cox_reid_log_r
from batchglm.dispersion.estimate import (
    Dispersions,
    QuasiLikelihood,
    estimate_dispersions,
    quasi_likelihood,
    refit_location,
)
from batchglm.dispersion.quasi_likelihood import SqueezedVariances, nb_deviance, squeeze_var
from batchglm.dispersion.trend import Trend, fit_trend

__all__ = [
    "Dispersions",
    "LogNormalPrior",
    "QuasiLikelihood",
    "SqueezedVariances",
    "Trend",
    "cox_reid_log_r",
    "estimate_dispersions",
    "fit_trend",
    "nb_deviance",
    "quasi_likelihood",
    "refit_location",
    "squeeze_var",
]
