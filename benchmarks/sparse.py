"""Sparse benchmark: a single-cell-shaped CSR matrix fitted without densifying it.

Usage::

    .venv/bin/python benchmarks/sparse.py            # 50000 obs x 2000 features, ~90 % zeros
    .venv/bin/python benchmarks/sparse.py --quick    # 10000 x 400

Reports the fit time in units of ``L`` (one dense NB log-likelihood evaluation with
``scipy.special.gammaln``, measured on a dense slice of 1/10 of the features and scaled up)
and the peak extra resident memory during the fit as a share of the dense matrix's size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import batchglm as bg
from run import nb_loglik

OUT = Path(__file__).resolve().parent / "results"


def simulate(n_obs: int, n_feat: int, seed: int) -> tuple[sp.csr_array, np.ndarray, dict]:
    """Sparse NB counts built feature block by feature block (never dense as a whole)."""
    rng = np.random.default_rng(seed)
    idx = np.arange(n_obs)
    cond = idx % 2
    batch = (idx // 2) % 4
    x = np.column_stack([np.ones(n_obs), cond] + [(batch == b) * 1.0 for b in (1, 2, 3)])
    coef = np.column_stack(
        [rng.uniform(np.log(0.005), np.log(0.5), n_feat), rng.uniform(-0.3, 0.3, (n_feat, 4))]
    )
    r = rng.integers(1, 11, n_feat).astype(float)
    sf = np.exp(rng.normal(0.0, 0.3, n_obs))
    sf /= np.exp(np.log(sf).mean())
    blocks = []
    for start in range(0, n_feat, 200):
        sl = slice(start, min(start + 200, n_feat))
        mu = sf[:, None] * np.exp(x @ coef[sl].T)
        y = rng.negative_binomial(r[sl], r[sl] / (r[sl] + mu)).astype(np.float64)
        blocks.append(sp.csr_array(y))
    return sp.hstack(blocks, format="csr"), x, {"sf": sf, "coef": coef, "r": r}


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Sample resident memory every few milliseconds while a block runs."""

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_obs, n_feat = (10000, 400) if args.quick else (50000, 2000)
    y, x, truth = simulate(n_obs, n_feat, args.seed)
    zeros = 1 - y.nnz / (n_obs * n_feat)
    dense_bytes = n_obs * n_feat * 8

    part = slice(0, n_feat // 10)
    dense_part = y[:, part].toarray()
    mu = truth["sf"][:, None] * np.exp(x @ truth["coef"][part].T)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        nb_loglik(dense_part, mu, truth["r"][part][None, :])
        times.append(time.perf_counter() - t0)
    big_l = float(np.median(times)) * n_feat / (part.stop - part.start)
    del dense_part, mu

    base = rss_bytes()
    with PeakSampler() as peak:
        t0 = time.perf_counter()
        res = bg.fit(y, x, size_factors=truth["sf"])
        seconds = time.perf_counter() - t0
    extra = peak.peak - base
    status = res.status.value_counts().to_dict()
    mean_count = y.sum() / (n_obs * n_feat)
    csr_bytes = y.data.nbytes + y.indices.nbytes + y.indptr.nbytes
    lines = [
        f"# Sparse benchmark ({dt.date.today()})",
        "",
        f"Command: `.venv/bin/python benchmarks/sparse.py{' --quick' if args.quick else ''}`"
        f" on {os.cpu_count()} cores.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| data | {n_obs} x {n_feat} CSR, {zeros:.1%} zeros, mean count {mean_count:.2f} |",
        f"| dense size | {dense_bytes / 1e6:.0f} MB (CSR {csr_bytes / 1e6:.0f} MB) |",
        f"| L (scaled from a dense 1/10 slice) | {big_l:.2f} s |",
        f"| bg.fit | {seconds:.2f} s = {seconds / big_l:.2f} L |",
        f"| peak extra resident memory during fit | {extra / 1e6:.0f} MB = "
        f"{extra / dense_bytes:.1%} of dense |",
        f"| status | {status} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / ("sparse-quick.md" if args.quick else "sparse.md")).write_text(text)


if __name__ == "__main__":
    main()
