"""Zero-side floor at the full fit's nuisance estimates: null calibration and power.

Not part of ``make test``. Simulates NB tables (``nrep`` vs ``nrep`` samples; raw-scale
covariates ``batch`` (2 levels), ``RIN`` (6-9.5) and ``age`` (22-80 years) with true
effects 0.4, 0.25 per unit and 0.01 per year on the log mean; no condition effect) of
2000 low-count null genes (means log-uniform 0.1..2), 1000 null genes with means
log-uniform 2..1000 (for the dispersion trend), and 20 on/off genes (zero in condition B,
500-3000 reads in condition A except one A sample with 1-3 reads). Dispersions
``(0.05 + 1 / mean) exp(N(0, 0.3^2))``, size factors ``exp(N(0, 0.3^2))``.

Reports, for ``bg.de.test`` with ``method`` Wald (MAP), LRT (contrast) and QL and the
designs ``~ condition`` and ``~ batch + RIN + age + condition``: the share of p < 0.05
among null genes with 1-5 reads, all in one condition (the stratum the floor is for),
among those with 6-50 reads in one condition, among all null genes, and the largest
p-value of the on/off genes.

Run from the repository root (compare sources by ``PYTHONPATH``)::

    .venv/bin/python benchmarks/separated_floor_null_means.py
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

import batchglm as bg

N_LOW, N_MID, N_ONOFF = 2000, 1000, 20
DESIGNS = {"plain": "~ condition", "covariates": "~ batch + RIN + age + condition"}
METHODS = {"wald": {}, "lrt": {"method": "lrt"}, "ql": {"method": "ql"}}


def simulate(seed: int, nrep: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts ``(2 nrep, genes)`` and the sample table of one layout."""
    rng = np.random.default_rng(seed)
    n = 2 * nrep
    obs = pd.DataFrame(
        {
            "condition": ["A"] * nrep + ["B"] * nrep,
            "batch": rng.choice(["b1", "b2"], n),
            "RIN": np.round(rng.uniform(6.0, 9.5, n), 1),
            "age": rng.integers(22, 80, n).astype(float),
        },
        index=[f"s{i:02d}" for i in range(n)],
    )
    nuisance = 0.4 * (obs["batch"] == "b2") + 0.25 * (obs["RIN"] - 8) + 0.01 * (obs["age"] - 50)
    sf = np.exp(rng.normal(0, 0.3, n))
    sf /= np.exp(np.mean(np.log(sf)))
    base = np.concatenate(
        [
            np.exp(rng.uniform(np.log(0.1), np.log(2), N_LOW)),
            np.exp(rng.uniform(np.log(2), np.log(1000), N_MID)),
        ]
    )
    alpha = (0.05 + 1 / base) * np.exp(rng.normal(0, 0.3, base.size))
    mu = (sf * np.exp(nuisance.to_numpy()))[:, None] * base[None, :]
    r = 1 / alpha[None, :]
    y = rng.negative_binomial(r, r / (r + mu))
    on = np.zeros((n, N_ONOFF), dtype=np.int64)
    level = rng.uniform(500, 3000, N_ONOFF)
    m_on = (sf * np.exp(nuisance.to_numpy()))[:nrep, None] * level[None, :]
    on[:nrep] = rng.negative_binomial(20, 20 / (20 + m_on))
    on[0] = rng.integers(1, 4, N_ONOFF)
    names = [f"null{j}" for j in range(base.size)] + [f"onoff{j}" for j in range(N_ONOFF)]
    return pd.DataFrame(np.hstack([y, on]), index=obs.index, columns=names), obs


def main() -> None:
    """Print one markdown row per layout, design and method."""
    warnings.simplefilter("ignore")
    print(
        "| layout | design | method | n 1-5 reads | p<0.05 | n 6-50 reads | p<0.05 "
        "| null p<0.05 | on/off max p |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for seed, nrep in [(31, 5), (32, 8)]:
        counts, obs = simulate(seed, nrep)
        null = [c for c in counts.columns if c.startswith("null")]
        onoff = [c for c in counts.columns if c.startswith("onoff")]
        y = counts[null]
        by = y.groupby(obs["condition"]).sum()
        total = y.sum(axis=0)
        separated = (by == 0).any(axis=0)
        stratum = (separated & (total >= 1) & (total <= 5)).to_numpy()
        wider = (separated & (total >= 6) & (total <= 50)).to_numpy()
        for dname, design in DESIGNS.items():
            for mname, kw in METHODS.items():
                s = bg.de.test(counts, design, obs=obs, contrast=("condition", "B", "A"), **kw)
                p = s.summary()["pvalue"]
                pn = p[null].to_numpy()
                print(
                    f"| {nrep}v{nrep} | {dname} | {mname} | {stratum.sum()} | "
                    f"{np.mean(pn[stratum] < 0.05):.3f} | {wider.sum()} | "
                    f"{np.mean(pn[wider] < 0.05):.3f} | {np.nanmean(pn < 0.05):.3f} | "
                    f"{p[onoff].max():.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
