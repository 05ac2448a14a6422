"""NB dispersions for small samples: Cox-Reid estimates, trend and shrinkage.

::

    import batchglm as bg
    res = bg.fit(counts, design)
    disp = bg.dispersion.estimate_dispersions(counts, res)   # genewise, trend, map
    disp.to_frame()
    # any scale model (e.g. dispersion varying by batch): gene-wise Cox-Reid only
    gw = bg.dispersion.genewise_dispersions(counts, bg.fit(counts, design, "~ 1 + batch"))
    gw.coef

Differential tests use these through ``dispersion="map"`` or ``"ql"`` in
:func:`batchglm.de.wald`, :func:`batchglm.de.lrt` and :func:`batchglm.de.ql_f`.
"""

from __future__ import annotations

from batchglm.dispersion.cox_reid import LogNormalPrior, cox_reid_log_r
from batchglm.dispersion.cox_reid_design import ScaleSolution, cox_reid_scale
from batchglm.dispersion.estimate import Dispersions, estimate_dispersions
from batchglm.dispersion.genewise import GenewiseScale, genewise_dispersions
from batchglm.dispersion.ql_dispersions import QuasiLikelihood, quasi_likelihood
from batchglm.dispersion.quasi_likelihood import SqueezedVariances, nb_deviance, squeeze_var
from batchglm.dispersion.refit import refit_location
from batchglm.dispersion.trend import Trend, fit_trend

__all__ = [
    "Dispersions",
    "GenewiseScale",
    "LogNormalPrior",
    "QuasiLikelihood",
    "ScaleSolution",
    "SqueezedVariances",
    "Trend",
    "cox_reid_log_r",
    "cox_reid_scale",
    "estimate_dispersions",
    "fit_trend",
    "genewise_dispersions",
    "nb_deviance",
    "quasi_likelihood",
    "refit_location",
    "squeeze_var",
]
