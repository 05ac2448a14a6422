"""Per-feature fit status codes and the one aggregated warning."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray


class Status(IntEnum):
    """Outcome of a feature's fit.

    ``CONVERGED``, ``SCALE_AT_BOUND`` and ``SEPARATED`` are optima (the last two on a
    documented bound); the others are not.
    """

    #: The Newton decrement fell below ``tol``: an interior maximum.
    CONVERGED = 0
    #: The scale optimum lies beyond the family's bound; the scale predictor stops there
    #: (for NB: under-dispersion, the fit is then numerically the Poisson fit).
    SCALE_AT_BOUND = 1
    #: Some fitted means are practically zero (a group with only zeros drives a location
    #: coefficient towards minus infinity); the fit stopped where the likelihood is flat.
    SEPARATED = 2
    #: Every observation is zero; coefficients are set, not fitted (see ``bg.fit``).
    ALL_ZERO = 3
    #: ``max_iter`` was reached before convergence.
    MAX_ITER = 4
    #: No step along the Newton direction increased the likelihood.
    STALLED = 5
    #: The likelihood or its derivatives became NaN or infinite.
    NONFINITE = 6
    #: Mixed models: the random-intercept variance optimum is zero (the data show no
    #: group-to-group variation beyond the noise model); an optimum on the boundary.
    RANDOM_VAR_AT_BOUND = 7
    #: Weights per observation and feature: the design restricted to the feature's
    #: observations of positive weight is rank-deficient (e.g. a level whose observations
    #: all have weight 0), so its coefficients are not identifiable; not fitted (NaN).
    UNIDENTIFIABLE = 8

    @property
    def label(self) -> str:
        """Lower-case name used in result tables."""
        return self.name.lower()


#: Codes that count as converged.
CONVERGED_CODES = (
    Status.CONVERGED,
    Status.SCALE_AT_BOUND,
    Status.SEPARATED,
    Status.RANDOM_VAR_AT_BOUND,
)


class ConvergenceWarning(UserWarning):
    """Some features did not reach an optimum."""


def warn_if_unconverged(
    status: NDArray[np.int8], max_iter: int, names: Sequence[str] | None = None
) -> None:
    """Emit one warning that summarises features without an optimum.

    Parameters
    ----------
    status : ndarray of int8
        Status code per feature.
    max_iter : int
        The iteration limit in force, named in the message.
    names : sequence of str, optional
        Feature names: the message then names the first five features without an optimum
        and their status.
    """
    bad = {s: int((status == s).sum()) for s in (Status.MAX_ITER, Status.STALLED, Status.NONFINITE)}
    total = sum(bad.values())
    if total == 0:
        return
    parts = ", ".join(f"{n} {s.label}" for s, n in bad.items() if n)
    which = ""
    if names is not None:
        pos = np.flatnonzero(np.isin(status, [int(s) for s in bad]))
        shown = ", ".join(f"{names[i]!s} ({Status(int(status[i])).label})" for i in pos[:5])
        which = f": {shown}{f' and {pos.size - 5} more' if pos.size > 5 else ''}"
    warnings.warn(
        f"{total} of {status.size} features did not converge ({parts}){which}. Increase "
        f"`max_iter` (now {max_iter}) for 'max_iter' features; inspect `result.status` for "
        "the others.",
        ConvergenceWarning,
        stacklevel=3,
    )


class UnidentifiableWarning(UserWarning):
    """Some features have no identifiable fit on their observations of positive weight."""


def warn_if_unidentifiable(status: NDArray[np.int8], names: Sequence[str]) -> None:
    """Emit one warning naming the features with status ``unidentifiable``.

    Parameters
    ----------
    status : ndarray of int8
        Status code per feature.
    names : sequence of str
        Feature names, for the message.
    """
    bad = np.flatnonzero(status == Status.UNIDENTIFIABLE)
    if bad.size == 0:
        return
    shown = ", ".join(repr(str(names[i])) for i in bad[:10])
    more = f" and {bad.size - 10} more" if bad.size > 10 else ""
    warnings.warn(
        f"{bad.size} of {status.size} features ({shown}{more}) have a rank-deficient design "
        "on their observations of positive weight (e.g. a level whose observations all "
        "have weight 0); they are not fitted (status 'unidentifiable', NaN coefficients "
        "and tests). Give those observations positive weights or drop the column.",
        UnidentifiableWarning,
        stacklevel=3,
    )
