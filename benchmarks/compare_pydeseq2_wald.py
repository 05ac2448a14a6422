"""Compare batchglm's Wald p-values with PyDESeq2's on the same simulated data.

Usage::

    .venv/bin/python benchmarks/compare_pydeseq2_wald.py                 # 20 samples
    .venv/bin/python benchmarks/compare_pydeseq2_wald.py --n-obs 200 --n-features 2000

The data: two conditions (half the observations each), ``--n-features`` NB features with
mean counts log-uniform in ``[--min-mean, --max-mean]``, size ``r`` log-uniform in
``[1, 20]``, known size factors, and a true log2 fold change for 10 % of the features
(``+-U(0.5, 1.5)``).

batchglm: ``bg.fit(counts, "~ 1 + condition", obs=...)`` with the true size factors, then
``bg.de.wald(res, coef="condition[T.treated]")`` (per-gene maximum likelihood, inverse
observed information). PyDESeq2 runs in the separate benchmark venv (``.bench-venv``, never
a dependency of batchglm) as a subprocess of this same file (``--peer``): the same size
factors are installed, then the steps of ``DeseqDataSet.deseq2()`` (MAP dispersions with
the trend prior) and ``DeseqStats(...).summary()`` with Cook's filtering and independent
filtering off, so that both report a p-value for every feature. The script prints the
Spearman rank correlation of the p-values, of the fold changes, and power / false
discovery proportion at q < 0.05 for both tools.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCH_VENV = ROOT / ".bench-venv"


def simulate(n_obs: int, n_features: int, min_mean: float, max_mean: float, seed: int):
    rng = np.random.default_rng(seed)
    treated = np.arange(n_obs) % 2 == 1
    mu = np.exp(rng.uniform(np.log(min_mean), np.log(max_mean), n_features))
    r = np.exp(rng.uniform(0.0, np.log(20.0), n_features))
    lfc = np.zeros(n_features)
    n_de = n_features // 10
    lfc[:n_de] = rng.choice([-1.0, 1.0], n_de) * rng.uniform(0.5, 1.5, n_de)
    sf = np.exp(rng.normal(0.0, 0.25, n_obs))
    sf /= np.exp(np.log(sf).mean())
    m = sf[:, None] * mu[None, :] * np.exp2(np.outer(treated, lfc))
    counts = rng.negative_binomial(r[None, :], r[None, :] / (r[None, :] + m))
    obs = pd.DataFrame(
        {"condition": np.where(treated, "treated", "control")},
        index=[f"obs{i}" for i in range(n_obs)],
    )
    return counts, obs, sf, lfc


def run_batchglm(
    counts: np.ndarray, obs: pd.DataFrame, sf: np.ndarray
) -> tuple[pd.DataFrame, float]:
    import batchglm as bg

    t0 = time.perf_counter()
    res = bg.fit(counts.astype(float), "~ 1 + condition", obs=obs, size_factors=sf)
    de = bg.de.wald(res, coef="condition[T.treated]")
    seconds = time.perf_counter() - t0
    return de.summary(sort_by=None), seconds  # feature order: aligned with the truth


def run_peer(data_dir: Path, n_cpus: int) -> int:
    """Inside the bench venv: PyDESeq2 Wald test, results written to ``data_dir``."""
    import warnings

    import pydeseq2
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    warnings.filterwarnings("ignore")
    counts = np.load(data_dir / "counts.npy")
    sf = np.load(data_dir / "size_factors.npy")
    meta = pd.read_csv(data_dir / "metadata.csv", index_col=0, dtype=str)
    counts_df = pd.DataFrame(
        counts.astype(np.int64),
        index=meta.index,
        columns=[f"feature{j}" for j in range(counts.shape[1])],
    )
    inference = DefaultInference(n_cpus=n_cpus)
    dds = DeseqDataSet(
        counts=counts_df,
        metadata=meta,
        design="~condition",
        refit_cooks=False,
        inference=inference,
        quiet=True,
    )
    t0 = time.perf_counter()
    # The steps of DeseqDataSet.deseq2() (pydeseq2 0.5), with the given size factors.
    dds.obs["size_factors"] = sf
    dds.layers["normed_counts"] = dds.X / sf[:, None]
    dds.var["_normed_means"] = dds.layers["normed_counts"].mean(axis=0)
    dds.fit_genewise_dispersions()
    dds.fit_dispersion_trend()
    dds.fit_dispersion_prior()
    dds.fit_MAP_dispersions()
    dds.fit_LFC()
    dds.calculate_cooks()
    ds = DeseqStats(
        dds,
        contrast=["condition", "treated", "control"],
        inference=inference,
        cooks_filter=False,
        independent_filter=False,
        quiet=True,
    )
    ds.summary()
    seconds = time.perf_counter() - t0
    out = ds.results_df[["log2FoldChange", "pvalue", "padj", "baseMean"]]
    out.to_csv(data_dir / "pydeseq2_results.csv")
    print(json.dumps({"seconds": seconds, "version": pydeseq2.__version__}))
    return 0


def run_pydeseq2(counts, obs, sf, venv: Path, n_cpus: int):
    py = venv / "bin" / "python"
    if not py.exists():
        return None, f"no bench venv at {venv}"
    with tempfile.TemporaryDirectory(prefix="batchglm-de-bench-") as tmp:
        d = Path(tmp)
        np.save(d / "counts.npy", counts.astype(np.int64))
        np.save(d / "size_factors.npy", sf)
        obs.to_csv(d / "metadata.csv")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cmd = [
            str(py),
            str(Path(__file__).resolve()),
            "--peer",
            "--data-dir",
            str(d),
            "--n-cpus",
            str(n_cpus),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            return None, f"PyDESeq2 failed: {proc.stderr.strip().splitlines()[-3:]}"
        info = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
        table = pd.read_csv(d / "pydeseq2_results.csv", index_col=0)
    return (table, info), ""


def power_fdp(q: np.ndarray, truth: np.ndarray) -> tuple[float, float, int]:
    hit = np.nan_to_num(q, nan=1.0) < 0.05
    fdp = float((hit & ~truth).sum() / max(hit.sum(), 1))
    return float(hit[truth].mean()), fdp, int(hit.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-obs", type=int, default=20)
    parser.add_argument("--n-features", type=int, default=1000)
    parser.add_argument("--min-mean", type=float, default=5.0)
    parser.add_argument("--max-mean", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-cpus", type=int, default=2)
    parser.add_argument("--bench-venv", type=Path, default=DEFAULT_BENCH_VENV)
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return run_peer(args.data_dir, args.n_cpus)

    from scipy import stats

    counts, obs, sf, lfc = simulate(
        args.n_obs, args.n_features, args.min_mean, args.max_mean, args.seed
    )
    truth = lfc != 0
    ours, t_ours = run_batchglm(counts, obs, sf)
    print(
        f"data: {args.n_obs} observations x {args.n_features} features, 2 conditions, "
        f"means {args.min_mean:g}..{args.max_mean:g}, {int(truth.sum())} true effects, "
        f"seed {args.seed}"
    )
    p, fdp, n_hit = power_fdp(ours["padj"].to_numpy(), truth)
    print(
        f"batchglm Wald: {t_ours:.2f} s, power {p:.3f}, FDP {fdp:.3f} ({n_hit} at q < 0.05), "
        f"{int(ours['converged'].sum())} converged"
    )
    peer, reason = run_pydeseq2(counts, obs, sf, args.bench_venv, args.n_cpus)
    if peer is None:
        print(f"PyDESeq2 skipped: {reason}")
        return 0
    table, info = peer
    theirs = table.reindex(ours.index)
    p2, fdp2, n_hit2 = power_fdp(theirs["padj"].to_numpy(), truth)
    print(
        f"PyDESeq2 {info['version']} Wald: {info['seconds']:.2f} s, power {p2:.3f}, "
        f"FDP {fdp2:.3f} ({n_hit2} at q < 0.05)"
    )
    a = ours["pvalue"].to_numpy()
    b = theirs["pvalue"].to_numpy()
    ok = np.isfinite(a) & np.isfinite(b)
    rho_p = stats.spearmanr(a[ok], b[ok]).statistic
    rho_null = stats.spearmanr(a[ok & ~truth], b[ok & ~truth]).statistic
    rho_lfc = stats.spearmanr(
        ours["log2FoldChange"].to_numpy()[ok], theirs["log2FoldChange"].to_numpy()[ok]
    ).statistic
    both = (ours["padj"].to_numpy() < 0.05) & (theirs["padj"].to_numpy() < 0.05)
    print(
        f"Spearman rank correlation of Wald p-values: {rho_p:.4f} over {int(ok.sum())} "
        f"features (null features only: {rho_null:.4f})"
    )
    print(f"Spearman rank correlation of log2 fold changes: {rho_lfc:.4f}")
    print(f"significant in both at q < 0.05: {int(both.sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
