"""A million cells x 2,000 genes at full size, each design's fit pinned to two cores.

Usage (a machine with at least 4 cores and ~16 GB of memory; the lead ran it on a lent
16-core machine, see the million-cell section of ``docs/benchmarks.md``)::

    python benchmarks/million_device.py 1000000 2000 14 555

Arguments: cells, genes, worker processes for writing the file, and a deadline in seconds
for the whole run. The counts are simulated as in ``million.py`` (same cell annotations,
coefficient ranges and exact NB sampler) but gene chunks are drawn in parallel with their
own seeds, so the file differs from ``million.py``'s; it is written as a CSR ``.h5ad``.
Then ``million.py measure`` runs for the continuous design on cores 0-1 and for the
categorical design on cores 2-3 **at the same time** (``taskset``; BLAS, OpenMP and numba
limited to 2 threads; ``bg.fit(n_jobs=2)``), each reading the file with
``read_backed(path, memory_budget=0)``. Running both at once shares the memory bandwidth
and the last-level cache, so each time is, if anything, an over-estimate of a lone run.
One JSON line per design and one for the file are printed and appended to
``$OUT/million_device.jsonl``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_spec = importlib.util.spec_from_file_location("bench_million", HERE / "million.py")
assert _spec is not None and _spec.loader is not None
million: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(million)


def draw_chunk(args: tuple[int, int, int, int]) -> sp.csc_matrix:
    """Counts of genes ``lo:hi`` (CSC, float32) with their own seed."""
    n_obs, lo, hi, seed = args
    _, x, sf = million.simulate_obs(n_obs, 0)
    rng = np.random.default_rng(seed)
    n = hi - lo
    coef = np.column_stack(
        [
            rng.uniform(np.log(0.02), np.log(0.3), n),
            rng.uniform(-0.3, 0.3, (n, 8)),
            rng.uniform(-0.2, 0.2, n),
        ]
    )
    r = rng.uniform(1.0, 10.0, n)
    width = max(1, int(2e7 // n_obs))
    mats = []
    for s in range(0, n, width):
        sl = slice(s, min(s + width, n))
        mu = sf[:, None] * np.exp(x @ coef[sl].T)
        i, j, v = million.nb_draws(rng, mu, r[None, sl])
        shape = (n_obs, sl.stop - sl.start)
        mats.append(sp.csc_matrix((v.astype(np.float32), (i, j)), shape=shape))
    return sp.hstack(mats, format="csc")


def write(path: Path, n_obs: int, n_feat: int, workers: int) -> dict[str, Any]:
    """Simulate in ``workers`` processes and write the CSR ``.h5ad``."""
    import anndata as ad
    import pandas as pd

    t0 = time.time()
    bounds = np.linspace(0, n_feat, workers + 1).astype(int)
    jobs = [(n_obs, int(bounds[k]), int(bounds[k + 1]), 1000 + k) for k in range(workers)]
    with Pool(workers) as pool:
        parts = pool.map(draw_chunk, jobs)
    csr = sp.hstack(parts, format="csr")
    csr.sort_indices()
    del parts
    obs, _, _ = million.simulate_obs(n_obs, 0)
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_feat)])
    adata = ad.AnnData(X=csr, obs=obs, var=var)
    settings = getattr(ad, "settings", None)
    if settings is not None and hasattr(settings, "allow_write_nullable_strings"):
        with settings.override(allow_write_nullable_strings=True):
            adata.write_h5ad(path)
    else:
        adata.write_h5ad(path)
    return {
        "n_obs": n_obs,
        "n_feat": n_feat,
        "nnz": int(csr.nnz),
        "density": csr.nnz / (n_obs * n_feat),
        "csr_bytes": int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes),
        "write_s": time.time() - t0,
    }


def main() -> None:
    """Write the file, then fit both designs at once on separate core pairs."""
    n_obs, n_feat, workers, deadline = (int(a) for a in sys.argv[1:5])
    # Optional fifth argument: "continuous", "categorical" or "both" (default).
    which = sys.argv[5] if len(sys.argv) > 5 else "both"
    start = time.time()
    out_dir = Path(os.environ.get("OUT", "."))
    path = Path("/tmp/million_device.h5ad")
    info = write(path, n_obs, n_feat, workers)
    print(json.dumps(info), flush=True)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "2"
    runs = []
    pairs = [("0,1", million.CONTINUOUS), ("2,3", million.CATEGORICAL)]
    if which != "both":
        pairs = [
            p
            for p in pairs
            if p[1] == {"continuous": million.CONTINUOUS}.get(which, million.CATEGORICAL)
        ]
    for cores, design in pairs:
        tmp = Path(f"/tmp/million_device_{cores[0]}")
        tmp.mkdir(exist_ok=True)
        cmd = ["taskset", "-c", cores, sys.executable, str(HERE / "million.py"), "measure"]
        cmd += [str(path), design, str(tmp), "0", "2"]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        runs.append((design, time.time(), proc))
    lines = []
    for design, t1, proc in runs:
        try:
            stdout, stderr = proc.communicate(timeout=max(deadline - (time.time() - start), 1))
            if proc.returncode == 0:
                lines.append(stdout.strip().splitlines()[-1])
            else:
                lines.append(
                    json.dumps({"design": design, "rc": proc.returncode, "err": stderr[-1500:]})
                )
        except subprocess.TimeoutExpired:
            proc.kill()
            lines.append(json.dumps({"design": design, "timeout_after_s": time.time() - t1}))
        print(lines[-1], flush=True)
    with (out_dir / "million_device.jsonl").open("a") as fh:
        fh.write("\n".join([*lines, json.dumps(info)]) + "\n")


if __name__ == "__main__":
    main()
