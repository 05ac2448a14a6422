"""batchglm: exact maximum-likelihood location/scale GLMs for many features at once.

The public surface::

    import batchglm as bg
    sim = bg.simulate(design_loc, n_features=100, seed=0)
    res = bg.fit(sim.data, design_loc)
    res.coef_loc, res.se_loc, res.loglik, res.status
"""

from __future__ import annotations

from batchglm import de, dispersion, pl
from batchglm.fit import fit
from batchglm.pseudobulk import pseudobulk
from batchglm.result import FitResult
from batchglm.simulate import Simulation, simulate
from batchglm.size_factors import size_factors
from batchglm.solvers.status import ConvergenceWarning, Status

__version__ = "0.1.0"

__all__ = [
    "ConvergenceWarning",
    "FitResult",
    "Simulation",
    "Status",
    "de",
    "dispersion",
    "fit",
    "pl",
    "pseudobulk",
    "simulate",
    "size_factors",
]
