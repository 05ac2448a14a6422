"""Backed benchmark: a CSR ``.h5ad`` on disk fitted without reading it whole.

Usage::

    .venv/bin/python benchmarks/backed.py                    # 200000 cells x 2000 genes
    .venv/bin/python benchmarks/backed.py --n-obs 50000 --n-features 1000

Writes a CSR ``.h5ad`` (10 % non-zero NB counts, ``condition`` x ``batch`` categories in
``obs``), then, in a fresh process per mode so resident memory starts clean, reads it with
:func:`batchglm.anndata_io.read_backed` (``memory``: the default 2 GiB budget, CSC in
memory; ``disk``: ``memory_budget=0``, feature blocks in a temporary directory), computes
``normed_sum`` size factors and fits ``~ condition + batch`` (NB). Reported per mode:
seconds of each step, the whole in units of ``L`` (one dense NB log-likelihood pass with
``scipy.special.gammaln`` on a block of 100 features, scaled to all features; as in
``benchmarks/run.py``), and the peak extra resident memory (sampled every 5 ms, above the
process's memory after importing anndata, h5py, formulaic and batchglm) against the CSR
matrix's size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
# benchmarks/sparse.py would shadow the `sparse` package that dask imports: drop this
# script's folder from the import path (all other imports below are inside functions).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != OUT.parent]


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Sample resident memory every 5 ms while a block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_file(path: Path, n_obs: int, n_feat: int, seed: int) -> dict[str, float]:
    """Write NB counts (about 10 % non-zero) as a CSR ``.h5ad``, gene block by gene block."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    idx = np.arange(n_obs)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.where(idx % 2, "treated", "control")),
            "batch": pd.Categorical([f"b{b}" for b in (idx // 2) % 4]),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    x = np.column_stack(
        [np.ones(n_obs), idx % 2] + [((idx // 2) % 4 == b) * 1.0 for b in (1, 2, 3)]
    )
    sf = np.exp(rng.normal(0.0, 0.3, n_obs))
    # Means 0.02 .. 0.3 with r 1 .. 10 give about 10 % non-zero counts.
    coef = np.column_stack(
        [rng.uniform(np.log(0.02), np.log(0.3), n_feat), rng.uniform(-0.3, 0.3, (n_feat, 4))]
    )
    r = rng.integers(1, 11, n_feat).astype(float)
    parts = []
    for start in range(0, n_feat, 100):
        sl = slice(start, min(start + 100, n_feat))
        mu = sf[:, None] * np.exp(x @ coef[sl].T)
        parts.append(
            sp.csr_matrix(rng.negative_binomial(r[sl], r[sl] / (r[sl] + mu)).astype(np.float32))
        )
    csr = sp.hstack(parts, format="csr")
    del parts
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_feat)])
    ad.AnnData(X=csr, obs=obs, var=var).write_h5ad(path)
    return {
        "nnz": int(csr.nnz),
        "density": csr.nnz / (n_obs * n_feat),
        "csr_bytes": int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes),
    }


def measure(path: Path, mode: str, tmp_dir: str) -> dict[str, object]:
    """Read, size factors and fit in this (fresh) process; return timings and memory."""
    import anndata  # noqa: F401  (imported before the baseline: module code is not data)
    import formulaic  # noqa: F401
    import h5py  # noqa: F401
    from scipy.special import gammaln

    import batchglm as bg
    from batchglm.anndata_io import read_backed

    base = rss_bytes()
    budget = 0 if mode == "disk" else None
    with PeakSampler() as peak:
        with PeakSampler() as read_peak:
            t0 = time.perf_counter()
            d = read_backed(path, memory_budget=budget, tmp_dir=tmp_dir)
            t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        sf = bg.size_factors(d, "normed_sum", progress=False)
        t_sf = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = bg.fit(d, "~ condition + batch", size_factors=sf, progress=False)
        t_fit = time.perf_counter() - t0
    extra = peak.peak - base
    # L: one dense NB log-likelihood pass over 100 features at the fitted parameters,
    # scaled to all features (median of 3).
    n_obs, n_feat = d.shape
    block = slice(0, min(100, n_feat))
    y = d.block(block)
    mu = sf[:, None] * np.exp(res.loc.matrix @ res.coef_loc.to_numpy()[block].T)
    rr = np.exp(res.coef_scale.to_numpy()[block, 0])[None, :]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rm = rr + mu
        ll = gammaln(y + rr) - gammaln(rr) - gammaln(y + 1.0)
        ll += rr * np.log(rr / rm) + y * np.log(mu / rm)
        ll.sum(axis=0)
        times.append(time.perf_counter() - t0)
    big_l = float(np.median(times)) * n_feat / (block.stop - block.start)
    return {
        "mode": mode,
        "kind": d.kind,
        "read_s": t_read,
        "size_factors_s": t_sf,
        "fit_s": t_fit,
        "total_s": t_read + t_sf + t_fit,
        "L_s": big_l,
        "peak_extra_bytes": int(extra),
        "read_peak_extra_bytes": int(read_peak.peak - base),
        "status": {str(k): int(v) for k, v in res.status.value_counts().items()},
        "disk_bytes": int(getattr(d.values, "nbytes_on_disk", 0)),
    }


def main() -> None:
    """Write the file, measure each mode in its own process, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-obs", type=int, default=200_000)
    parser.add_argument("--n-features", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="memory,disk")
    parser.add_argument(
        "--measure", nargs=3, metavar=("PATH", "MODE", "TMP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], args.measure[2])))
        return
    with tempfile.TemporaryDirectory(prefix="batchglm-bench-") as tmp:
        path = Path(tmp) / "cells.h5ad"
        t0 = time.perf_counter()
        info = write_file(path, args.n_obs, args.n_features, args.seed)
        t_write = time.perf_counter() - t0
        rows = []
        for mode in args.modes.split(","):
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(path), mode, tmp],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    csr = info["csr_bytes"]
    lines = [
        f"# Backed benchmark ({dt.date.today()})",
        "",
        f"Command: `.venv/bin/python benchmarks/backed.py --n-obs {args.n_obs} --n-features "
        f"{args.n_features}` on {os.cpu_count()} cores (load average at end "
        f"{os.getloadavg()[0]:.1f}).",
        "",
        f"Data: {args.n_obs} x {args.n_features} CSR `.h5ad` (float32 counts, int32 indices), "
        f"{info['density']:.1%} non-zero, CSR {csr / 1e6:.0f} MB; written in {t_write:.1f} s.",
        "",
        "| mode | storage | read s | size factors s | fit s | total s | L s | total / L "
        "| read peak extra MB (/ CSR) | run peak extra MB (/ CSR) | on disk MB | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['kind']} | {r['read_s']:.1f} | {r['size_factors_s']:.1f} | "
            f"{r['fit_s']:.1f} | {r['total_s']:.1f} | {r['L_s']:.2f} | "
            f"{r['total_s'] / r['L_s']:.1f} | {r['read_peak_extra_bytes'] / 1e6:.0f} "
            f"({r['read_peak_extra_bytes'] / csr:.2f}) | {r['peak_extra_bytes'] / 1e6:.0f} "
            f"({r['peak_extra_bytes'] / csr:.2f}) | {r['disk_bytes'] / 1e6:.0f} | {r['status']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "backed.md").write_text(text)


if __name__ == "__main__":
    main()
