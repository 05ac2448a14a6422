"""batchglm: exact maximum-likelihood location/scale GLMs for many features at once.

The public surface::

    import batchglm as bg
    sim = bg.simulate(design_loc, n_features=100, seed=0)
    res = bg.fit(sim.data, design_loc)
    res.coef_loc, res.se_loc, res.loglik, res.status
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from batchglm.fit import fit
from batchglm.pseudobulk import pseudobulk
from batchglm.result import FitResult
from batchglm.simulate import Simulation, simulate
from batchglm.size_factors import size_factors
from batchglm.solvers.status import ConvergenceWarning, Status, UnidentifiableWarning
from batchglm.version import __version__

if TYPE_CHECKING:
    from batchglm import de, dispersion, pl, tl


#: Submodules loaded on first use: they pull in scipy.stats and matplotlib, which would
#: otherwise double the import time of every script and of the command line.
_LAZY = ("de", "dispersion", "pl", "tl")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"batchglm.{name}")
    raise AttributeError(f"module 'batchglm' has no attribute {name!r}")


__all__ = [
    "ConvergenceWarning",
    "FitResult",
    "Simulation",
    "Status",
    "UnidentifiableWarning",
    "__version__",
    "de",
    "dispersion",
    "fit",
    "pl",
    "pseudobulk",
    "simulate",
    "size_factors",
    "tl",
]
