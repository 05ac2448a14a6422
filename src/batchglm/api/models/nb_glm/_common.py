"""Shared helpers of the seed facade: labelled arrays, names, one-time notices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.api._arrays import SeedArray, as_matrix, labelled

logger = logging.getLogger("batchglm")

#: Training-strategy names of the seed's estimators; all of them run the exact solver here.
SEED_TRAINING_STRATEGIES: tuple[str, ...] = (
    "AUTO",
    "DEFAULT",
    "EXACT",
    "QUICK",
    "PRE_INITIALIZED",
    "CONSTRAINED",
    "CONTINUOUS",
    "BY_GENE",
    "INEXACT",
    "GD",
    "IRLS",
    "IRLS_TR",
    "IRLS_GD",
    "IRLS_GD_TR",
)

_LOC_DIMS = ("design_loc_params", "features")
_SCALE_DIMS = ("design_scale_params", "features")
_logged_notices: set[str] = set()


def _log_once(key: str, msg: str, *args: object) -> None:
    """Log an INFO notice the first time ``key`` comes up in this process."""
    if key not in _logged_notices:
        _logged_notices.add(key)
        logger.info(msg, *args)


def _design(dmat: Any, what: str, dim: str, names: Sequence[str] | None = None) -> SeedArray:
    """Read a design matrix into an ``("observations", dim)`` array with parameter names."""
    values, columns = as_matrix(dmat, what, names)
    if columns is None:
        columns = [f"p{j}" for j in range(values.shape[1])]
    return labelled(values.astype(np.float64), ("observations", dim), (None, columns))


def _intercept(n_obs: int, dim: str) -> SeedArray:
    """Build an intercept-only ``(n_obs, 1)`` design named ``"Intercept"``."""
    return labelled(np.ones((n_obs, 1)), ("observations", dim), (None, ["Intercept"]))


def _frame(design: SeedArray) -> pd.DataFrame:
    """Return the design as the DataFrame handed to the core (names as columns)."""
    names = [str(n) for n in design.coords[design.dims[1]].to_numpy()]
    return pd.DataFrame(design.to_numpy(), columns=names)


def _params(coef: pd.DataFrame, dims: tuple[str, str], name: str | None) -> SeedArray:
    """Turn a core ``(features x coefficients)`` frame into a seed ``(params, features)`` array."""
    return labelled(
        coef.to_numpy().T,
        dims,
        ([str(c) for c in coef.columns], [str(f) for f in coef.index]),
        name=name,
    )


def _constraints(value: ArrayLike | None, what: str) -> NDArray[np.float64] | None:
    """Validate the container of a seed constraint matrix; its meaning is checked by the core."""
    if value is None:
        return None
    m = np.array(value, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"`{what}` must be a 2-D matrix, but it has {m.ndim} dimension(s).")
    return m
