"""Shared set-ups of the mixed-model derivative tests (joint and REML Laplace objectives).

* :func:`cell_obs`: a cell-level covariate ``x``, a two-level ``lane`` varying within
  groups and a group-level ``condition``;
* :func:`draw_counts`: NB or Poisson counts at given means;
* :func:`loc_scale_problem`: the ``~ condition + x`` location problem with a scale design;
* :func:`value_and_gradient`, :func:`richardson`: the finite-difference references, which
  use only an objective's value and gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from batchglm.design import build_design
from batchglm.families import get_family
from batchglm.solvers.objective import Problem


def cell_obs(rng: np.random.Generator, group: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """``x ~ N(0, 1)`` per cell, a random ``lane`` and ``condition`` ``"a"`` for even groups."""
    n = group.size
    x = rng.normal(size=n)
    obs = pd.DataFrame(
        {
            "x": x,
            "lane": np.where(rng.integers(0, 2, n) == 1, "l1", "l0"),
            "condition": np.where(group % 2 == 0, "a", "b"),
        }
    )
    return x, obs


def draw_counts(rng: np.random.Generator, family: str, mu: np.ndarray) -> np.ndarray:
    """NB (size 4) or Poisson counts at means ``mu``, as float64."""
    if family == "nb":
        return rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(np.float64)
    return rng.poisson(mu).astype(np.float64)


def loc_scale_problem(family: str, scale: str | None, obs: pd.DataFrame) -> Problem:
    """``~ condition + x`` location and the ``scale`` formula's design, no offset."""
    n = len(obs)
    loc = build_design("~ condition + x", None, n, "loc", obs=obs)
    scale_design = build_design(scale, None, n, "scale", obs=obs)
    return Problem(get_family(family), loc, scale_design, np.zeros(n))


def value_and_gradient(
    obj: Any,
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``theta -> value (F, 1)`` and ``theta -> gradient (F, k)`` of ``obj.evaluate``."""

    def value(t: np.ndarray) -> np.ndarray:
        return np.asarray(obj.evaluate(t, 0)[0])[:, None]

    def gradient(t: np.ndarray) -> np.ndarray:
        g = obj.evaluate(t, 2)[1]
        assert g is not None
        return np.asarray(g)

    return value, gradient


def richardson(
    f: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, i: int, h: float
) -> np.ndarray:
    """``d f / d theta_i`` by central differences at ``h`` and ``h / 2``, extrapolated."""

    def central(step: float) -> np.ndarray:
        e = np.zeros_like(theta)
        e[:, i] = step
        return (f(theta + e) - f(theta - e)) / (2.0 * step)

    return (4.0 * central(h / 2.0) - central(h)) / 3.0


def donors_in_batches(donor: np.ndarray, n_batches: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Cells of donors nested in batches: first half of the donors ``ctrl``, second ``stim``.

    Donor ``g`` is in batch ``g mod n_batches`` (each batch has a donor of each condition
    when there are ``2 n_batches`` donors). Returns ``obs`` (``donor``, ``batch``,
    ``condition``; cells ``cell0, cell1, ...``) and the batch of each donor.
    """
    n_donors = int(donor.max()) + 1
    stim = np.repeat([0.0, 1.0], n_donors // 2)
    batch = np.tile(np.arange(n_batches), 2)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in donor],
            "batch": [f"b{b}" for b in batch[donor]],
            "condition": np.where(stim[donor] > 0, "stim", "ctrl"),
        },
        index=[f"cell{i}" for i in range(donor.size)],
    )
    return obs, batch


def nested_null_poisson(
    rng: np.random.Generator, n_donors: int, n_batches: int, n_feat: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Null Poisson counts of 15-39 cells per donor, batch SD 0.3, donor SD 0.2-0.4."""
    donor = np.repeat(np.arange(n_donors), rng.integers(15, 40, n_donors))
    obs, batch = donors_in_batches(donor, n_batches)
    eta = (
        rng.uniform(0.0, 2.0, n_feat)
        + rng.normal(0.0, 0.3, (n_batches, n_feat))[batch[donor]]
        + rng.normal(0.0, 1.0, (n_donors, n_feat))[donor] * rng.uniform(0.2, 0.4, n_feat)
    )
    return rng.poisson(np.exp(eta)).astype(float), obs
