"""Separated features of random-intercept fits: randomization vs pseudobulk QL F test.

Not part of ``make test``. Simulates 200 genes (NB size 4) over ``n`` vs ``n`` donors with
20-500 cells each, donor SD uniform on 0.2-0.4 per seed, size factors lognormal(0, 0.3):
8 on/off genes (means 0.05-0.5 per cell in the control donors, zero in every stimulated
cell), 22 DE genes at fold change 2, 60 sparse null genes with 1-8 expected reads in total
and null genes with means 0.001-2 per cell. Fits ``~ condition`` with
``random_effects="donor"`` and tests ``condition[T.stim]`` by the default ``bg.de.wald``,
once with the pseudobulk QL test of separated features (``de/pseudobulk_ql.py``) and
once with the randomization test forced (``MIN_FEATURES_QL`` above the number of genes).

Run from the repository root::

    .venv/bin/python benchmarks/mixed_separation_pseudobulk.py [n_seeds]

Prints the counts behind the table of ``docs/mixed_separation.md`` ("Pseudobulk QL vs
randomization").
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd

import batchglm as bg
from batchglm.de import pseudobulk_ql


def _bh(p: np.ndarray) -> np.ndarray:
    p = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(p)
    q = p[order] * p.size / np.arange(1, p.size + 1)
    out = np.empty(p.size)
    out[order] = np.minimum(np.minimum.accumulate(q[::-1])[::-1], 1.0)
    return out


def _simulate(seed: int, per_side: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    n_donors = 2 * per_side
    g = np.repeat(np.arange(n_donors), rng.integers(20, 501, n_donors))
    stim = g >= per_side
    obs = pd.DataFrame(
        {"donor": [f"D{k}" for k in g], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(g.size)],
    )
    sf = rng.lognormal(0.0, 0.3, g.size)
    n_genes = 200
    base = np.exp(rng.uniform(np.log(0.001), np.log(2.0), n_genes))
    base[30:90] = rng.uniform(1.0, 8.0, 60) / g.size
    lfc = np.zeros(n_genes)
    lfc[8:30] = np.log(2.0) * rng.choice([-1.0, 1.0], 22)
    u = rng.normal(0.0, rng.uniform(0.2, 0.4), (n_donors, n_genes))
    mu = sf[:, None] * base * np.exp(u[g] + np.outer(stim, lfc))
    on = np.exp(rng.uniform(np.log(0.05), np.log(0.5), 8))
    mu[:, :8] = sf[:, None] * on * np.exp(u[g][:, :8])
    mu[np.ix_(stim, np.arange(8))] = 0.0
    y = rng.negative_binomial(4, 4 / (4 + mu)).astype(np.float64)
    kinds = {
        "onoff": np.arange(n_genes) < 8,
        "null": lfc == 0,
        "sparse": (np.arange(n_genes) >= 30) & (np.arange(n_genes) < 90),
    }
    kinds["null"] &= ~kinds["onoff"]
    return obs, sf, y, kinds


def main(n_seeds: int) -> None:
    rows = []
    for per_side in (4, 6):
        for seed in range(n_seeds):
            obs, sf, y, kinds = _simulate(100 * per_side + seed, per_side)
            keep = y.sum(axis=0) > 0
            k = {name: v[keep] for name, v in kinds.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = bg.fit(
                    pd.DataFrame(y[:, keep], index=obs.index),
                    "~ condition",
                    obs=obs,
                    size_factors=sf,
                    random_effects="donor",
                )
                after = bg.de.wald(res, "condition[T.stim]")
                saved = pseudobulk_ql.MIN_FEATURES_QL
                pseudobulk_ql.MIN_FEATURES_QL = 10**9
                try:
                    before = bg.de.wald(res, "condition[T.stim]")
                finally:
                    pseudobulk_ql.MIN_FEATURES_QL = saved
            sep = after.kind == "pseudobulk_ql_f"
            for method, de in (("randomization", before), ("pseudobulk QL", after)):
                p, q = de.pval, _bh(de.pval)
                null = k["null"]
                rows.append(
                    {
                        "design": f"{per_side} vs {per_side}",
                        "method": method,
                        "sep_null": int((sep & null).sum()),
                        "sep_null_rej": int(((p < 0.05) & sep & null).sum()),
                        "onoff": int(k["onoff"].sum()),
                        "onoff_q05": int(((q < 0.05) & k["onoff"]).sum()),
                        "onoff_p1e-3": int(((p < 1e-3) & k["onoff"]).sum()),
                        "null": int(null.sum()),
                        "null_rej": int(((p < 0.05) & null).sum()),
                        "sparse_nonsep": int((k["sparse"] & null & ~sep).sum()),
                        "sparse_nonsep_rej": int(((p < 0.05) & k["sparse"] & null & ~sep).sum()),
                    }
                )
    table = pd.DataFrame(rows).groupby(["design", "method"], sort=False).sum()
    table["sep_null_rate"] = table["sep_null_rej"] / table["sep_null"]
    table["null_rate"] = table["null_rej"] / table["null"]
    table["sparse_nonsep_rate"] = table["sparse_nonsep_rej"] / table["sparse_nonsep"]
    print(table.round(3).to_string())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
