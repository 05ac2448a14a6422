"""Many-seed calibration and power of the mixed model against pseudobulk, per gene.

Layouts (all 4 vs 4 donors, donor variance 0.01-0.25 on the natural-log scale, 400 null and
100 DE genes at fold change 2 with random sign unless nested):

* ``unequal``: 600/20/20/20 cells per condition (``benchmarks/mixed_calibration.py``),
* ``100-500``: 100-500 cells per donor (same simulator),
* ``nested``: donors in 4 batches (each batch one donor per condition), 30-300 cells, batch
  SD 0.3, donor SD 0.2-0.4, 400 genes of which 60 DE, a raw-scale cell covariate
  ``n_genes``; ``random_effects=["donor", "batch"]`` against pseudobulk
  ``~ batch + condition``.

Per seed, the default moderated ``bg.de.wald`` (and ``bg.de.lrt`` for the one-factor
layouts) and ``bg.pseudobulk`` + ``bg.de.ql_f``. Writes a markdown summary: null rejection
at 0.05 (mean and range over seeds), KS p of the null p-values (mean, min), FDP at BH
q < 0.05 pooled over seeds (false / discoveries) and the largest per seed, power at
q < 0.05, and power at equal size (each method's DE genes with p at or below the 5 %
quantile of its own null p-values, per seed).

Run: ``PYTHONPATH=src python benchmarks/mixed_power_seeds.py unequal 0,1,2 [genes.csv]``
(results in ``benchmarks/results/mixed_power_seeds_<layout>.md``; the optional third argument
writes every seed's per-gene p-values). The nested layout also reports ``moderate="limma"``
and ``moderate=False`` on the same fits.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/sparse.py would shadow the `sparse` package that anndata's dask support imports.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

import batchglm as bg  # noqa: E402

COEF = "condition[T.stim]"


def _calibration_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "mixed_calibration", HERE / "mixed_calibration.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mixed_calibration"] = mod
    spec.loader.exec_module(mod)
    return mod


def nested_data(seed: int, n_genes: int = 400, n_de: int = 60) -> tuple[ad.AnnData, np.ndarray]:
    """4 vs 4 donors in 4 batches; returns the cells and which genes are DE."""
    rng = np.random.default_rng(1000 + seed)
    cond = np.array(["ctrl"] * 4 + ["stim"] * 4)
    batch = np.array([f"b{i}" for i in range(4)] * 2)
    cd = np.repeat(np.arange(8), rng.integers(30, 301, 8))
    ngenes = rng.normal(2500, 600, cd.size).clip(500, None).round()
    lib = np.exp(rng.normal(0, 0.3, cd.size))
    base = rng.uniform(-1, 1.5, n_genes)
    r = rng.uniform(2, 10, n_genes)
    dsd = rng.uniform(0.2, 0.4, n_genes)
    lfc = np.zeros(n_genes)
    lfc[:n_de] = np.log(2) * rng.choice([-1, 1], n_de)
    u = rng.normal(size=(8, n_genes)) * dsd + rng.normal(0, 0.3, (4, n_genes))[np.arange(8) % 4]
    stim = cond[cd] == "stim"
    mu = np.exp(base + u[cd] + stim[:, None] * lfc + np.log(lib)[:, None])
    y = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in cd],
            "batch": batch[cd],
            "condition": cond[cd],
            "n_genes": ngenes,
        },
        index=[f"c{i}" for i in range(cd.size)],
    )
    return ad.AnnData(X=y, obs=obs), lfc != 0


def one_seed(layout: str, seed: int) -> pd.DataFrame:
    """Per-gene p-values of the methods on one simulated data set."""
    if layout == "nested":
        a, de = nested_data(seed)
        sf = a.X.sum(1) / a.X.sum(1).mean()
        full = bg.fit(
            a, "~ condition + np.log(n_genes)", random_effects=["donor", "batch"], size_factors=sf
        )
        out = {
            "mixed Wald (default)": bg.de.wald(full, coef=COEF).pval,
            'mixed Wald, moderate="limma"': bg.de.wald(full, coef=COEF, moderate="limma").pval,
            "mixed Wald, moderate=False": bg.de.wald(full, coef=COEF, moderate=False).pval,
        }
        pb_design = "~ batch + condition"
    else:
        y, obs = _calibration_module().simulate(400, 100, 2.0, seed, 4, layout, (0.01, 0.25), True)
        a, de = ad.AnnData(X=y, obs=obs), np.r_[np.zeros(400), np.ones(100)].astype(bool)
        full = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
        reduced = bg.fit(y, "~ 1", obs=obs, random_effects="donor")
        out = {
            "mixed Wald (default)": bg.de.wald(full, coef=COEF).pval,
            "mixed LRT (default)": bg.de.lrt(full=full, reduced=reduced).pval,
        }
        pb_design = "~ condition"
    pb = bg.pseudobulk(a, sample="donor")
    pres = bg.fit(pb, pb_design, size_factors="poscounts" if layout == "nested" else "median_ratio")
    out["pseudobulk + ql_f"] = bg.de.ql_f(pres, coef=COEF, data=pb).pval
    rv = np.asarray(full.random_var).reshape(de.size, -1)
    at_0 = {"donor_var_at_0": rv[:, 0] < 1e-6}
    if rv.shape[1] > 1:
        at_0["batch_var_at_0"] = rv[:, 1] < 1e-6
    return pd.DataFrame({"seed": seed, "de": de, **at_0, **out})


def _bh(p: np.ndarray) -> np.ndarray:
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    n = ok.sum()
    order = np.argsort(p[ok])
    ranked = np.minimum.accumulate((p[ok][order] * n / np.arange(1, n + 1))[::-1])[::-1]
    q[np.flatnonzero(ok)[order]] = np.minimum(ranked, 1.0)
    return q


def summary(frames: list[pd.DataFrame], methods: list[str]) -> list[str]:
    """Markdown rows: one per method, pooled and per-seed rates."""
    lines = [
        "| method | null rejection at 0.05 (range) | KS p mean (min) | FDP pooled (false / "
        "discoveries), max per seed | power (q < 0.05) | power at equal size |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        rej, ks, fdp, power, eq = [], [], [], [], []
        false = found = 0
        for f in frames:
            p, de = f[m].to_numpy(), f["de"].to_numpy()
            null = p[~de][np.isfinite(p[~de])]
            hits = np.nan_to_num(_bh(p), nan=1.0) < 0.05
            rej.append((null < 0.05).mean())
            ks.append(stats.kstest(null, "uniform").pvalue)
            false += int(hits[~de].sum())
            found += int(hits.sum())
            fdp.append(hits[~de].sum() / max(hits.sum(), 1))
            power.append(hits[de].mean())
            eq.append((np.nan_to_num(p[de], nan=1.0) <= np.quantile(null, 0.05)).mean())
        lines.append(
            f"| {m} | {np.mean(rej):.3f} ({min(rej):.3f}-{max(rej):.3f}) | {np.mean(ks):.2f} "
            f"({min(ks):.2g}) | {false / max(found, 1):.3f} ({false} / {found}), {max(fdp):.3f} "
            f"| {np.mean(power):.3f} | {np.mean(eq):.3f} |"
        )
    return lines


def main() -> None:
    """Run the seeds of one layout, write the summary (and, optionally, per-gene p-values)."""
    layout, seeds = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    warnings.simplefilter("ignore")
    frames = []
    for seed in seeds:
        frames.append(one_seed(layout, seed))
    methods = [c for c in frames[0].columns if c not in ("seed", "de") and "_at_0" not in c]
    text = [f"# {layout}: seeds {sys.argv[2]}", "", *summary(frames, methods), ""]
    (HERE / "results" / f"mixed_power_seeds_{layout}.md").write_text("\n".join(text))
    print("\n".join(text))
    if len(sys.argv) > 3:  # per-gene p-values of every seed, for pooled or per-stratum checks
        pd.concat(frames).to_csv(sys.argv[3])


if __name__ == "__main__":
    main()
