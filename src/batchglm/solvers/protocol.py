"""What the Newton engine needs from an objective: the structural interface of ``solve``.

:class:`batchglm.solvers.objective.Objective` (the plain GLM likelihood) satisfies it, and
so does :class:`batchglm.mixed.laplace.LaplaceObjective` (the Laplace marginal likelihood
of a mixed model), whose extra parameter sits in the location block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from batchglm.families import Family
from batchglm.solvers.linalg import PairProducts

if TYPE_CHECKING:
    from batchglm.solvers.objective import Evaluation

Array = NDArray[np.float64]


class SolverProblem(Protocol):
    """Parameter layout: ``k_loc`` unbounded parameters, then ``k_scale`` bounded ones."""

    k_loc: int
    k_scale: int
    family: Family
    scale_rows: Array
    pp_scale: PairProducts

    @property
    def units(self) -> Array:
        """``(k_loc + k_scale,)`` units of the parameters (their design columns' sizes).

        The engine measures steps in parameters times these units.
        """

    def eta_scale_groups(self, b: Array) -> Array:
        """Scale predictors ``(n_groups, F)`` (bounded by ``family.scale_bounds``)."""


class SolverObjective(Protocol):
    """A per-feature objective with derivatives, restrictable to a subset of features."""

    @property
    def problem(self) -> SolverProblem:
        """The parameter layout."""

    def evaluate(self, theta: Array, order: int) -> tuple[Array, Array | None, Array | None]:
        """Objective ``(F,)``, gradient ``(F, k)`` and Hessian ``(F, k, k)`` (order 2)."""

    def evaluate_terms(self, theta: Array, order: int) -> Evaluation:
        """Return the same with the size of the summed terms (rounding-noise test)."""

    def subset(self, keep: NDArray[np.bool_]) -> SolverObjective:
        """Return the objective over the features where ``keep`` is true."""
