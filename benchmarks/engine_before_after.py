"""Wall time of the dispersion paths under two source trees, alternated in one run.

Usage::

    .venv/bin/python benchmarks/engine_before_after.py --before /path/to/old/src
    .venv/bin/python benchmarks/engine_before_after.py --before A/src --after B/src --repeats 5

Each measurement runs in a fresh subprocess with ``PYTHONPATH`` set to one tree; the trees
alternate (before, after, before, ...) so drifting machine load hits both alike. Timed per
data set: ``bg.fit`` (intercept-only scale model), ``bg.de.wald(dispersion="map")`` on that
fit (gene-wise Cox-Reid dispersions, trend, MAP, location refit), ``bg.de.ql_f`` (trend,
location refits, QL dispersions) and ``bg.dispersion.genewise_dispersions`` for a fit whose
dispersion differs by batch (the general scale design). Reported: the median CPU time
(``time.process_time``, all threads) of the repeats per tree and the ratio after / before
(below 1: faster).

Data sets: the Marioni kidney/liver counts of ``tests/data`` (DESeq2's reference data,
10 samples), and simulated NB counts, 5,000 genes x 40 samples (two conditions crossed
with two batches, dispersions 0.01-1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("fit", "wald_map", "ql_f", "genewise_by_batch")


def _datasets(path: Path) -> None:
    """Write the data sets (counts, condition, batch) to one ``.npz``."""
    import pandas as pd

    counts = pd.read_csv(ROOT / "tests/data/deseq2_marioni_counts.csv.gz", index_col=0)
    coldata = pd.read_csv(ROOT / "tests/data/deseq2_marioni_coldata.csv")
    y_m = counts.to_numpy().T.astype(np.float64)
    y_m = y_m[:, y_m.sum(axis=0) > 0]
    cond_m = (coldata["tissue"].to_numpy() == coldata["tissue"].iloc[0]).astype(np.float64)
    rng = np.random.default_rng(20261130)
    n, f = 40, 5000
    cond = np.repeat([0.0, 1.0], n // 2)
    batch = np.tile([0.0, 1.0], n // 2)
    base = np.exp(rng.uniform(np.log(0.5), np.log(5000.0), f))
    alpha = np.exp(rng.uniform(np.log(0.01), np.log(1.0), f))
    lfc = np.where(rng.random(f) < 0.1, rng.normal(0.0, 1.5, f), 0.0)
    sf = np.exp(rng.normal(0.0, 0.3, n))
    mu = sf[:, None] * base * np.exp(np.outer(cond, lfc) + 0.2 * batch[:, None])
    r = 1.0 / alpha
    y_s = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    y_s = y_s[:, y_s.sum(axis=0) > 0]
    batch_m = np.tile([0.0, 1.0], y_m.shape[0] // 2 + 1)[: y_m.shape[0]]
    np.savez(path, y_m=y_m, cond_m=cond_m, batch_m=batch_m, y_s=y_s, cond_s=cond, batch_s=batch)


def _child(data_path: str, name: str) -> dict[str, float]:
    """Time every task on data set ``name`` with the ``batchglm`` on ``sys.path``.

    Times are CPU seconds of the process (all threads): on a shared machine they depend far
    less on the other load than wall time does.
    """
    import batchglm as bg

    warnings.simplefilter("ignore")
    d = np.load(data_path)
    y, cond, batch = d[f"y_{name}"], d[f"cond_{name}"], d[f"batch_{name}"]
    n = y.shape[0]
    x = np.column_stack([np.ones(n), cond])
    out: dict[str, float] = {}
    t0 = time.process_time()
    res = bg.fit(y, x)
    out["fit"] = time.process_time() - t0
    t0 = time.process_time()
    bg.de.wald(res, coef=1, dispersion="map", data=y)
    out["wald_map"] = time.process_time() - t0
    t0 = time.process_time()
    bg.de.ql_f(res, coef=1, data=y)
    out["ql_f"] = time.process_time() - t0
    z = np.column_stack([np.ones(n), batch])
    res_b = bg.fit(y, x, z)
    t0 = time.process_time()
    bg.dispersion.genewise_dispersions(y, res_b)
    out["genewise_by_batch"] = time.process_time() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    """Alternate the two trees and print medians and ratios (markdown).

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments.

    Returns
    -------
    int
        Exit status.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="source tree (the `src` folder) before")
    p.add_argument("--after", default=str(ROOT / "src"), help="source tree after")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    trees = {"before": args.before, "after": args.after}
    times: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.npz"
        _datasets(data_path)
        for rep in range(args.repeats):
            for name in ("m", "s"):
                for label, src in trees.items():
                    env = {**os.environ, "PYTHONPATH": src, "MPLBACKEND": "agg"}
                    cmd = [sys.executable, __file__, "--before", src]
                    cmd += ["--child", str(data_path), name]
                    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                    times.setdefault((name, label), []).append(json.loads(run.stdout))
                    print(f"# repeat {rep + 1} {name} {label}: {run.stdout.strip()}", flush=True)
    titles = {"m": "Marioni (10 samples)", "s": "simulated, 5000 genes x 40 samples"}
    print("\n| data | task | before (CPU s) | after (CPU s) | after / before |")
    print("|---|---|---|---|---|")
    for name in ("m", "s"):
        for task in TASKS:
            b = float(np.median([t[task] for t in times[(name, "before")]]))
            a = float(np.median([t[task] for t in times[(name, "after")]]))
            print(f"| {titles[name]} | {task} | {b:.3f} | {a:.3f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
