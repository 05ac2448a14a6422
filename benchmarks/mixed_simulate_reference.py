"""Simulate the small data sets that glmmTMB refits for ``tests/test_mixed_glmmtmb.py``.

Writes ``tests/data/mixed_{design}_counts.csv`` (observations x genes) and
``tests/data/mixed_{design}_obs.csv`` for two designs:

* ``intercept``: random donor intercept only, 8 donors x 20 cells.
* ``condition``: condition (4 vs 4 donors) + a continuous covariate + random donor
  intercept, 8 donors x 20 cells.
* ``nested``: condition + random intercepts for batch and for donor within batch: 3
  batches of 4 donors (2 per condition), 15 cells each, 100 genes.

Donor variances are drawn per gene from 0 to 0.4 (natural-log scale), NB sizes from 1 to
20, so some genes have their variance optimum at zero (a boundary case). Then run
``Rscript benchmarks/mixed_glmmtmb_reference.R``.

Run: ``PYTHONPATH=src python benchmarks/mixed_simulate_reference.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"
N_DONORS, CELLS, GENES = 8, 20, 200


def simulate_nested(seed: int, genes: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and obs with donors nested in batches, condition crossed with batch."""
    rng = np.random.default_rng(seed)
    donor_id = np.repeat(np.arange(12), 15)
    batch_id = donor_id // 4
    stim = donor_id % 4 >= 2
    obs = pd.DataFrame(
        {
            "donor": [f"d{i}" for i in donor_id],
            "batch": [f"b{i}" for i in batch_id],
            "condition": np.where(stim, "stim", "ctrl"),
        },
        index=[f"c{i}" for i in range(donor_id.size)],
    )
    u_donor = rng.normal(size=(12, genes)) * np.sqrt(rng.uniform(0.0, 0.4, genes))
    u_batch = rng.normal(size=(3, genes)) * np.sqrt(rng.uniform(0.0, 0.4, genes))
    eta = (
        rng.uniform(-0.5, 2.0, genes)[None, :]
        + u_donor[donor_id]
        + u_batch[batch_id]
        + stim[:, None] * rng.normal(0, 0.3, genes)
    )
    size = rng.uniform(1.0, 20.0, genes)
    mu = np.exp(eta)
    y = rng.negative_binomial(size, size / (size + mu))
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(genes)])
    return counts, obs


def simulate(design: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts ``(n_obs, GENES)`` and obs for one design."""
    if design == "nested":
        return simulate_nested(seed)
    rng = np.random.default_rng(seed)
    donor_id = np.repeat(np.arange(N_DONORS), CELLS)
    n = donor_id.size
    obs = pd.DataFrame({"donor": [f"d{i}" for i in donor_id]}, index=[f"c{i}" for i in range(n)])
    var = rng.uniform(0.0, 0.4, GENES)
    u = rng.normal(size=(N_DONORS, GENES)) * np.sqrt(var)
    eta = rng.uniform(-0.5, 2.0, GENES)[None, :] + u[donor_id]
    if design == "condition":
        obs["condition"] = np.where(donor_id < N_DONORS // 2, "ctrl", "stim")
        obs["x"] = np.round(rng.normal(size=n), 4)
        beta = rng.normal(0, 0.3, GENES)
        gamma = rng.normal(0, 0.2, GENES)
        stim = (donor_id >= N_DONORS // 2)[:, None]
        eta = eta + stim * beta + obs["x"].to_numpy()[:, None] * gamma
    size = rng.uniform(1.0, 20.0, GENES)
    mu = np.exp(eta)
    y = rng.negative_binomial(size, size / (size + mu))
    counts = pd.DataFrame(y, index=obs.index, columns=[f"g{j}" for j in range(GENES)])
    return counts, obs


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for i, design in enumerate(["intercept", "condition", "nested"]):
        counts, obs = simulate(design, 100 + i)
        counts.to_csv(OUT / f"mixed_{design}_counts.csv")
        obs.to_csv(OUT / f"mixed_{design}_obs.csv")
