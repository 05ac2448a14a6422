"""A million cells: NB fits from a backed ``.h5ad``, the scaling curve and glmGamPoi.

Usage::

    .venv/bin/python benchmarks/million.py fit --n-obs 1000000 --n-features 2000 --threads 8
    .venv/bin/python benchmarks/million.py scaling --sizes 10000,100000,1000000 --n-features 100
    .venv/bin/python benchmarks/million.py glmgampoi --n-obs 200000 --n-features 50
    .venv/bin/python benchmarks/million.py zerosums --n-obs 200000 --n-features 100

Data (all modes): NB counts, about 10 % non-zero, per-cell size factors (lognormal, sd 0.3),
``obs`` with ``cell_type`` (8 levels), ``condition`` (2 levels) and a standard-normal
``covariate``; intercept-only scale. Written gene block by gene block as a CSR ``.h5ad``.

* ``fit``: two designs, each in a fresh process: ``~ cell_type + condition`` (categorical:
  zero counts summed per group, :mod:`batchglm.solvers.zero_sums`) and ``~ cell_type +
  condition + covariate`` (continuous: fused compiled kernel,
  :mod:`batchglm.families.nb_kernel`). Each process reads the file with
  ``read_backed(path, memory_budget=0)`` (feature blocks on disk), times ``normed_sum``
  size factors and fits with the simulation's size factors (``obs["size_factor"]``).
  Reported: seconds per step, the fit in units of ``L`` (one dense NB log-likelihood pass
  with ``gammaln`` over a block of features at the fitted parameters, scaled to all
  features, median of 3) and the peak extra resident memory (sampled every 5 ms above the
  memory after imports, numba included) against the CSR matrix's size.
* ``scaling``: the continuous design at several numbers of cells (in memory).
* ``glmgampoi``: the categorical design, batchglm (2 threads) against
  ``glmGamPoi::glm_gp(size_factors = sf, overdispersion = TRUE,
  overdispersion_shrinkage = FALSE)`` (R, single-threaded, gene-wise dispersions) on
  the same counts and size factors; per-gene log-likelihoods at each method's own
  estimates with one shared function.
* ``zerosums``: one objective evaluation of a feature block with the zero sums and with
  the direct sums over all cells: seconds and the largest difference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
# benchmarks/sparse.py would shadow the `sparse` package that dask imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

CATEGORICAL = "~ cell_type + condition"
CONTINUOUS = "~ cell_type + condition + covariate"


def sibling(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` without putting this folder on the import path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulate_obs(n_obs: int, seed: int):
    """Cell annotations, the location design and size factors."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cell_type = rng.integers(0, 8, n_obs)
    condition = rng.integers(0, 2, n_obs)
    covariate = rng.normal(0.0, 1.0, n_obs)
    log_sf = rng.normal(0.0, 0.3, n_obs)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(cell_type, [f"t{k}" for k in range(8)]),
            "condition": pd.Categorical.from_codes(condition, ["control", "treated"]),
            "covariate": covariate,
            "size_factor": np.exp(log_sf),
        },
        index=pd.Index(np.char.add("cell", np.arange(n_obs).astype(str)).astype(object)),
    )
    x = np.column_stack(
        [np.ones(n_obs)] + [cell_type == k for k in range(1, 8)] + [condition, covariate]
    ).astype(np.float64)
    return obs, x, np.exp(log_sf)


def nb_draws(rng: np.random.Generator, mu: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
    """Non-zero NB draws of an ``(n, F)`` block: ``(rows, cols, counts)``, exact.

    Inverse-CDF sampling with one uniform per entry: an entry is 0 where ``u <= P(0) =
    (r / (r + mu))^r`` (about 90 % here), and only the others walk up the CDF with the
    recurrence ``P(k + 1) = P(k) (k + r) / (k + 1) * mu / (r + mu)``. NumPy's
    ``negative_binomial`` draws a gamma and a Poisson variate for every entry, zeros
    included, which made writing the 1,000,000 x 100 file take 118 s. The few entries
    whose walk does not end in 10,000 steps (rounding of the CDF near 1) are drawn with
    ``negative_binomial``.
    """
    n_col = mu.shape[1]
    r_full = np.broadcast_to(r, mu.shape).ravel()
    mu = mu.ravel()
    p0 = np.exp(r_full * np.log(r_full / (r_full + mu)))
    u = rng.random(mu.size)
    flat = np.flatnonzero(u > p0)
    uu, rr, pmf = u[flat], r_full[flat], p0[flat]
    ratio = mu[flat] / (rr + mu[flat])
    cdf = pmf.copy()
    k = np.zeros(flat.size)
    live = np.arange(flat.size)
    for _ in range(10_000):
        if live.size == 0:
            break
        pmf[live] *= (k[live] + rr[live]) / (k[live] + 1.0) * ratio[live]
        cdf[live] += pmf[live]
        k[live] += 1.0
        live = live[uu[live] > cdf[live]]
    if live.size:
        k[live] = rng.negative_binomial(rr[live], 1.0 - ratio[live])
    rows, cols = np.divmod(flat, n_col)
    keep = k > 0
    return rows[keep], cols[keep], k[keep]


def simulate_counts(n_obs: int, n_feat: int, seed: int):
    """CSR counts (float32) with about 10 % non-zero, built in gene blocks."""
    import scipy.sparse as sp

    obs, x, sf = simulate_obs(n_obs, seed)
    rng = np.random.default_rng(seed + 1)
    coef = np.column_stack(
        [
            rng.uniform(np.log(0.02), np.log(0.3), n_feat),
            rng.uniform(-0.3, 0.3, (n_feat, 8)),
            rng.uniform(-0.2, 0.2, n_feat),
        ]
    )
    r = rng.uniform(1.0, 10.0, n_feat)
    width = max(1, int(2e7 // n_obs))
    rows, cols, vals = [], [], []
    for start in range(0, n_feat, width):
        sl = slice(start, min(start + width, n_feat))
        mu = sf[:, None] * np.exp(x @ coef[sl].T)
        i, j, v = nb_draws(rng, mu, r[None, sl])
        rows.append(i)
        cols.append(j + start)
        vals.append(v.astype(np.float32))
    csr = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_obs, n_feat),
    )
    csr.sort_indices()
    return obs, sf, csr


def write_file(path: Path, n_obs: int, n_feat: int, seed: int) -> dict[str, float]:
    """Write the counts as a CSR ``.h5ad``; return its size facts."""
    import anndata as ad
    import pandas as pd

    obs, _, csr = simulate_counts(n_obs, n_feat, seed)
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_feat)])
    ad.AnnData(X=csr, obs=obs, var=var).write_h5ad(path)
    return {
        "nnz": int(csr.nnz),
        "density": csr.nnz / (n_obs * n_feat),
        "csr_bytes": int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes),
    }


def big_l(y: np.ndarray, mu: np.ndarray, r: np.ndarray, n_feat: int) -> float:
    """One dense NB log-likelihood pass over the block, scaled to ``n_feat`` (median of 3)."""
    from scipy.special import gammaln

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rm = r + mu
        ll = gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
        ll += r * np.log(r / rm) + y * np.log(mu / rm)
        ll.sum(axis=0)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * n_feat / y.shape[1]


def measure(
    path: Path, design: str, tmp_dir: str, budget: int | None, threads: int | None
) -> dict[str, object]:
    """Read, size factors and fit in this (fresh) process; return timings and memory."""
    import anndata  # (imported before the baseline: module code is not data)
    import formulaic  # noqa: F401
    import h5py  # noqa: F401
    import numba  # noqa: F401

    backed = sibling("backed")

    import batchglm as bg
    from batchglm.anndata_io import read_backed

    base = backed.rss_bytes()
    with backed.PeakSampler() as peak:
        t0 = time.perf_counter()
        d = read_backed(path, memory_budget=budget, tmp_dir=tmp_dir)
        t_read = time.perf_counter() - t0
        # Size factors: the simulation's (in `obs`); `normed_sum` is timed alongside where
        # every cell has a count (not so with few genes).
        sf = anndata.read_h5ad(path, backed="r").obs["size_factor"].to_numpy()
        t0 = time.perf_counter()
        try:
            bg.size_factors(d, "normed_sum", progress=False)
            t_sf = time.perf_counter() - t0
        except ValueError:
            t_sf = float("nan")
        t0 = time.perf_counter()
        res = bg.fit(d, design, size_factors=sf, progress=False, n_jobs=threads)
        t_fit = time.perf_counter() - t0
    n_obs, n_feat = d.shape
    block = slice(0, min(max(1, int(2e7 // n_obs)), n_feat))
    y = d.block(block)
    mu = sf[:, None] * np.exp(res.loc.matrix @ res.coef_loc.to_numpy()[block].T)
    rr = np.exp(res.coef_scale.to_numpy()[block, 0])[None, :]
    return {
        "design": design,
        "n_obs": n_obs,
        "n_features": n_feat,
        "threads": threads,
        "read_s": t_read,
        "size_factors_s": t_sf,
        "fit_s": t_fit,
        "L_s": big_l(y, mu, rr, n_feat),
        "peak_extra_bytes": int(peak.peak - base),
        "status": {str(k): int(v) for k, v in res.status.value_counts().items()},
    }


def child(args: list[str]) -> dict[str, object]:
    """Run ``measure`` in a fresh process and return its JSON."""
    out = subprocess.run(
        [sys.executable, __file__, "measure", *args], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"measure {args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_fit(
    n_obs: int,
    n_feat: int,
    seed: int,
    budget: int | None,
    designs: list[str],
    threads: int | None,
) -> str:
    """Both designs from one backed file; a markdown table."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="batchglm-million-") as tmp:
        path = Path(tmp) / "cells.h5ad"
        t0 = time.perf_counter()
        info = write_file(path, n_obs, n_feat, seed)
        t_write = time.perf_counter() - t0
        load0 = os.getloadavg()[0]
        rows = [child([str(path), d, tmp, str(budget), str(threads)]) for d in designs]
    csr = info["csr_bytes"]
    lines += [
        f"{n_obs} cells x {n_feat} genes, {info['density']:.1%} non-zero, CSR "
        f"{csr / 1e6:.0f} MB (written in {t_write:.0f} s); memory_budget={budget}; "
        f"threads={threads or 'default'}; "
        f"load average (1 min) {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end.",
        "",
        "| design | read s | size factors s | fit s | L s | fit / L | run peak extra MB "
        "(/ CSR) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fit_s, l_s, pk = float(r["fit_s"]), float(r["L_s"]), int(r["peak_extra_bytes"])
        lines.append(
            f"| `{r['design']}` | {float(r['read_s']):.1f} | {float(r['size_factors_s']):.1f} | "
            f"{fit_s:.1f} | {l_s:.2f} | {fit_s / l_s:.1f} | {pk / 1e6:.0f} ({pk / csr:.2f}) | "
            f"{r['status']} |"
        )
    return "\n".join(lines) + "\n"


def run_scaling(sizes: list[int], n_feat: int, seed: int, threads: int | None) -> str:
    """The continuous design at several numbers of cells (in-memory read)."""
    lines = [
        f"`{CONTINUOUS}`, {n_feat} genes, in-memory read, load average "
        f"{os.getloadavg()[0]:.1f} at start.",
        "",
        "| cells | fit s | L s | fit / L | fit s per 10^5 cells |",
        "|---|---|---|---|---|",
    ]
    for n_obs in sizes:
        with tempfile.TemporaryDirectory(prefix="batchglm-scaling-") as tmp:
            path = Path(tmp) / "cells.h5ad"
            write_file(path, n_obs, n_feat, seed)
            r = child([str(path), CONTINUOUS, tmp, "None", str(threads)])
        fit_s, l_s = float(r["fit_s"]), float(r["L_s"])
        lines.append(
            f"| {n_obs} | {fit_s:.2f} | {l_s:.3f} | {fit_s / l_s:.1f} | {fit_s / n_obs * 1e5:.3f} |"
        )
    lines.append(f"\nload average at end {os.getloadavg()[0]:.1f}.")
    return "\n".join(lines) + "\n"


R_GLMGAMPOI = r"""
suppressMessages(library(glmGamPoi))
args <- commandArgs(trailingOnly = TRUE)
d <- args[1]
dims <- scan(file.path(d, "dims.txt"), quiet = TRUE)
n_obs <- dims[1]; n_feat <- dims[2]; k <- dims[3]
# counts.bin: cells x genes in C order = genes x cells in R's column-major order
y <- matrix(readBin(file.path(d, "counts.bin"), "double", n_obs * n_feat), nrow = n_feat)
sf <- readBin(file.path(d, "sf.bin"), "double", n_obs)
x <- t(matrix(readBin(file.path(d, "design.bin"), "double", n_obs * k), nrow = k))
t <- system.time(fit <- glm_gp(y, design = x, size_factors = sf, overdispersion = TRUE,
                               overdispersion_shrinkage = FALSE, on_disk = FALSE))
write.table(fit$Beta, file.path(d, "beta.csv"), sep = ",", row.names = FALSE,
            col.names = FALSE)
write.table(fit$overdispersions, file.path(d, "alpha.csv"), sep = ",", row.names = FALSE,
            col.names = FALSE)
cat(t[["elapsed"]], "\n", file = file.path(d, "time.txt"))
"""


def nb_loglik_alpha(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-gene NB log-likelihood, overdispersion ``alpha = 1/r`` (floored at 1e-12).

    The ``betaln`` / ``log1p`` form of ``benchmarks/peers.py`` (exact near the Poisson
    limit, where ``scipy.stats.nbinom.logpmf`` loses digits).
    """
    from scipy.special import betaln

    r = 1.0 / np.maximum(np.asarray(alpha, dtype=np.float64), 1e-12)
    r = np.broadcast_to(r[None, :], y.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = -betaln(y + 1.0, r) - np.log(y + r) - r * np.log1p(mu / r)
        ll += np.where(y > 0, y * (np.log(mu) - np.log(r + mu)), 0.0)
    return np.asarray(ll.sum(axis=0))


def run_glmgampoi(n_obs: int, n_feat: int, seed: int, threads: int | None) -> str:
    """Categorical design: batchglm against glmGamPoi on the same counts."""
    import batchglm as bg

    obs, sf, csr = simulate_counts(n_obs, n_feat, seed)
    x = np.column_stack(
        [np.ones(n_obs)]
        + [(obs["cell_type"] == f"t{k}").to_numpy() for k in range(1, 8)]
        + [(obs["condition"] == "treated").to_numpy()]
    ).astype(np.float64)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = bg.fit(csr, x, size_factors=sf, progress=False, n_jobs=threads)
    t_bg = time.perf_counter() - t0
    y = csr.toarray().astype(np.float64)
    with tempfile.TemporaryDirectory(prefix="batchglm-ggp-") as tmp:
        y.tofile(Path(tmp) / "counts.bin")
        sf.tofile(Path(tmp) / "sf.bin")
        x.tofile(Path(tmp) / "design.bin")
        (Path(tmp) / "dims.txt").write_text(f"{n_obs} {n_feat} {x.shape[1]}\n")
        (Path(tmp) / "run.R").write_text(R_GLMGAMPOI)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        subprocess.run(["Rscript", str(Path(tmp) / "run.R"), tmp], check=True, env=env)
        t_r = float((Path(tmp) / "time.txt").read_text().split()[0])
        beta = np.loadtxt(Path(tmp) / "beta.csv", delimiter=",", ndmin=2)
        alpha = np.loadtxt(Path(tmp) / "alpha.csv", delimiter=",", ndmin=1)
    ll_r = nb_loglik_alpha(y, sf[:, None] * np.exp(x @ beta.T), alpha)
    coef = res.coef_loc.to_numpy()
    ll_bg = nb_loglik_alpha(
        y, sf[:, None] * np.exp(x @ coef.T), np.exp(-res.coef_scale.to_numpy()[:, 0])
    )
    diff = ll_bg - ll_r
    return (
        f"{n_obs} cells x {n_feat} genes, `{CATEGORICAL}` (9 coefficients), load average "
        f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end.\n\n"
        "| method | cores | wall s | glmGamPoi / batchglm |\n|---|---|---|---|\n"
        f"| batchglm | {threads or 'default'} threads | {t_bg:.2f} | 1 |\n"
        f"| glmGamPoi (`overdispersion_shrinkage=FALSE`) | 1 | {t_r:.2f} | "
        f"{t_r / t_bg:.1f} |\n\n"
        f"Per-gene log-likelihood, batchglm minus glmGamPoi (`peers.nb_loglik_alpha` at each "
        f"method's estimates): min {diff.min():.3g}, median {np.median(diff):.3g}, max "
        f"{diff.max():.3g}; batchglm >= glmGamPoi - 1e-6 on "
        f"{int((diff >= -1e-6).sum())} / {n_feat} genes.\n"
    )


def run_zero_sums(n_obs: int, n_feat: int, seed: int) -> str:
    """One objective evaluation (order 2) with and without the zero sums: time and error."""
    import batchglm as bg
    from batchglm.design import build_design
    from batchglm.families import get_family
    from batchglm.solvers.objective import Objective, Problem

    obs, sf, csr = simulate_counts(n_obs, n_feat, seed)
    x = np.column_stack(
        [np.ones(n_obs)]
        + [(obs["cell_type"] == f"t{k}").to_numpy() for k in range(1, 8)]
        + [(obs["condition"] == "treated").to_numpy()]
    ).astype(np.float64)
    res = bg.fit(csr, x, size_factors=sf, progress=False)
    theta = np.column_stack([res.coef_loc.to_numpy(), res.coef_scale.to_numpy()])
    problem = Problem(
        get_family("nb"),
        build_design(x, None, n_obs, "loc"),
        build_design(np.ones((n_obs, 1)), None, n_obs, "scale"),
        np.log(sf),
    )
    y = csr.toarray().astype(np.float64)
    fast = Objective(problem, y)
    direct = Objective(problem, y)
    direct.zero_sums, direct.rows = None, problem.rows
    assert fast.zero_sums is not None
    times = {}
    evs = {}
    for name, obj in (("zero sums", fast), ("direct", direct)):
        obj.evaluate_terms(theta, 2)  # warm-up: buffers, the compiled kernel
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            evs[name] = obj.evaluate_terms(theta, 2)
            ts.append(time.perf_counter() - t0)
        times[name] = float(np.median(ts))
    a, b = evs["zero sums"], evs["direct"]
    assert a.grad is not None and b.grad is not None and a.hess is not None
    assert b.hess is not None
    err_ll = float(np.max(np.abs(a.ll - b.ll) / b.magnitude))
    big = np.abs(b.hess).max(axis=(1, 2))
    err_g = float(np.max(np.abs(a.grad - b.grad).max(axis=1) / big))
    err_h = float(np.max(np.abs(a.hess - b.hess).max(axis=(1, 2)) / big))
    return (
        f"{n_obs} cells x {n_feat} genes (one block), `{CATEGORICAL}`, at the fitted "
        f"parameters; load average {os.getloadavg()[0]:.1f}.\n\n"
        "| evaluation (order 2) | s (median of 3) |\n|---|---|\n"
        f"| direct sums over all cells | {times['direct']:.3f} |\n"
        f"| zero sums (groups + non-zeros) | {times['zero sums']:.3f} |\n\n"
        f"Speed-up {times['direct'] / times['zero sums']:.1f}x. Largest difference to the "
        f"direct sums: log-likelihood {err_ll:.1e} of the summed magnitude, gradient "
        f"{err_g:.1e} and Hessian {err_h:.1e} of the feature's largest Hessian entry.\n"
    )


def main() -> None:
    """Dispatch the modes; print markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["fit", "scaling", "glmgampoi", "zerosums", "measure"])
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--n-obs", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=2000)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", default="0", help="read_backed memory_budget ('None')")
    parser.add_argument("--designs", default="categorical,continuous")
    parser.add_argument(
        "--threads", type=int, default=None, help="bg.fit n_jobs (default: all cores)"
    )
    args = parser.parse_args()
    threads = args.threads
    if args.mode == "measure":
        path, design, tmp, budget, n_threads = args.rest
        b = None if budget == "None" else int(budget)
        t = None if n_threads == "None" else int(n_threads)
        print(json.dumps(measure(Path(path), design, tmp, b, t)))
        return
    if args.mode == "fit":
        names = {"categorical": CATEGORICAL, "continuous": CONTINUOUS}
        designs = [names[d] for d in args.designs.split(",")]
        budget = None if args.budget == "None" else int(args.budget)
        text = run_fit(args.n_obs, args.n_features, args.seed, budget, designs, threads)
    elif args.mode == "scaling":
        sizes = [int(s) for s in args.sizes.split(",")]
        text = run_scaling(sizes, args.n_features, args.seed, threads)
    elif args.mode == "zerosums":
        text = run_zero_sums(args.n_obs, args.n_features, args.seed)
    else:
        text = run_glmgampoi(args.n_obs, args.n_features, args.seed, threads)
    print(text)


if __name__ == "__main__":
    main()
