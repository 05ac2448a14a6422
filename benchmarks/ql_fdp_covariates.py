"""False discovery proportion of the QL test at 4 vs 4 with covariates (issue 14).

Not part of ``make test``. Simulates 4 vs 4 tables with ``~ batch + RIN + age + condition``
(3 residual df; 3000 genes, mean 0.1-20, 300 DE genes with |log fold change| 1-3, natural
log) in two variants:

* ``indep``: NB dispersion log-uniform in 0.1-2, independent of the mean (the issue's
  simulator; no mean trend can describe it);
* ``trend``: NB dispersion ``(0.1 + 0.5 / mean) * exp(N(0, 0.5^2))``, capped at 5.

``python benchmarks/ql_fdp_covariates.py simulate DIR`` writes the tables,
``Rscript benchmarks/ql_fdp_covariates.R DIR`` runs edgeR (``glmQLFit`` with
``robust = FALSE``, its default, and ``TRUE``; ``glmQLFTest``) and DESeq2 (Wald, LRT) on them,
``python benchmarks/ql_fdp_covariates.py run DIR`` runs ``bg.de.test`` (Wald, LRT, QL) and
prints true / false calls at padj < 0.1 and 0.05 per tool and variant, with the QL test
also without independent filtering and edgeR's p-values filtered as ours
(``docs/validation.md``, "QL false discoveries at 3 residual df").
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

import batchglm as bg

SEEDS = (201, 202, 203)
DESIGN = "~ batch + RIN + age + condition"


def simulate(seed: int, variant: str, n: int = 4, n_genes: int = 3000, n_de: int = 300):
    """One table: counts ``(n_genes, 2n)``, sample table, true log fold changes."""
    rng = np.random.default_rng(seed)
    n_obs = 2 * n
    cond = np.repeat(["ctrl", "trt"], n)
    k, k2 = (3 * n) // 4, n // 4
    batch = np.array(["b1"] * k + ["b2"] * (n - k) + ["b1"] * k2 + ["b2"] * (n - k2))
    obs = pd.DataFrame(
        {
            "condition": cond,
            "batch": batch,
            "RIN": np.round(rng.uniform(5, 10, n_obs), 1),
            "age": np.round(rng.uniform(20, 80, n_obs)).astype(int),
        },
        index=[f"s{i}" for i in range(n_obs)],
    )
    sf = rng.uniform(0.7, 1.4, n_obs)
    mu = np.exp(rng.uniform(np.log(0.1), np.log(20), n_genes))
    if variant == "indep":
        disp = np.exp(rng.uniform(np.log(0.1), np.log(2), n_genes))
    else:
        disp = np.minimum((0.1 + 0.5 / mu) * np.exp(rng.normal(0, 0.5, n_genes)), 5.0)
    lfc = np.zeros(n_genes)
    lfc[:n_de] = rng.choice([-1, 1], n_de) * rng.uniform(1, 3, n_de)
    m = sf[:, None] * mu[None, :] * np.exp(lfc[None, :] * (cond == "trt")[:, None])
    r = 1.0 / disp
    y = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + m))
    genes = [f"g{j}" for j in range(n_genes)]
    return pd.DataFrame(y.T, index=genes, columns=obs.index), obs, pd.Series(lfc, index=genes)


def _bh(p: np.ndarray, keep: np.ndarray) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    ok = keep & np.isfinite(p)
    q[ok] = false_discovery_control(p[ok])
    return q


def main(mode: str, out: Path) -> None:
    """Simulate the tables, or test them and print the calls."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in ("indep", "trend"):
        for seed in SEEDS:
            tag = f"{variant}_{seed}"
            if mode == "simulate":
                y, obs, lfc = simulate(seed, variant)
                y.to_csv(out / f"Y_{tag}.csv")
                obs.to_csv(out / f"obs_{tag}.csv")
                lfc.rename("lfc").to_csv(out / f"lfc_{tag}.csv")
                continue
            obs = pd.read_csv(out / f"obs_{tag}.csv", index_col=0)
            y = pd.read_csv(out / f"Y_{tag}.csv", index_col=0).T
            de = pd.read_csv(out / f"lfc_{tag}.csv", index_col=0).lfc.reindex(y.columns) != 0
            peers = pd.read_csv(out / f"peers_{tag}.csv", index_col=0).reindex(y.columns)
            padj: dict[str, np.ndarray] = {}
            every = np.ones(y.shape[1], bool)
            for meth in ("wald", "lrt", "ql"):
                kw: dict = {"coef": "condition[T.trt]", "method": meth, "obs": obs}
                if meth == "lrt":
                    kw["reduced"] = "~ batch + RIN + age"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = bg.de.test(y, DESIGN, **kw).summary().reindex(y.columns)
                padj[f"batchglm {meth}"] = s.padj.to_numpy()
                if meth == "ql":
                    kept = ~s.filtered.astype(bool).to_numpy()
                    padj["batchglm ql, no filtering"] = _bh(s.pvalue.to_numpy(), every)
            for col, name in (("edgeR_p", "edgeR QL"), ("edgeR_rob_p", "edgeR QL robust")):
                padj[name] = _bh(peers[col].to_numpy(), every)
            padj["edgeR QL, our filter"] = _bh(peers["edgeR_p"].to_numpy(), kept)
            padj["DESeq2 Wald"] = peers["deseq2_wald_padj"].to_numpy()
            padj["DESeq2 LRT"] = peers["deseq2_lrt_padj"].to_numpy()
            for tool, q in padj.items():
                for alpha in (0.1, 0.05):
                    called = q < alpha
                    rows.append(
                        {
                            "variant": variant,
                            "seed": seed,
                            "tool": tool,
                            "alpha": alpha,
                            "true": int((called & de.to_numpy()).sum()),
                            "false": int((called & ~de.to_numpy()).sum()),
                        }
                    )
    if mode == "simulate":
        return
    d = pd.DataFrame(rows)
    d.to_csv(out / "calls.csv", index=False)
    for (variant, tool), g in d.groupby(["variant", "tool"], sort=False):
        cells = []
        for alpha in (0.1, 0.05):
            a = g[g.alpha == alpha]
            t, f = int(a["true"].sum()), int(a["false"].sum())
            per = ", ".join(f"{x}/{z}" for x, z in zip(a["true"], a["false"], strict=True))
            cells.append(f"{t} / {f} ({f / max(t + f, 1):.3f}; {per})")
        print(f"| {variant} | {tool} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
