"""Speed of random-intercept NB fits: batchglm vs glmmTMB looped over genes, and in L.

Data: ``--cells`` cells (default 20,000) of 8 donors (4 per condition), condition + one
continuous covariate, NB counts with donor variance 0.05-0.3. batchglm fits
``--genes`` genes (default 2,000; pass fewer to time a subset, results are scaled
linearly to 2,000); glmmTMB (``y ~ condition + x + (1 | donor)``, nbinom2) fits
``--tmb-genes`` genes one at a time, scaled to 2,000. L is one dense NB log-likelihood pass
over the same counts (as in ``benchmarks/run.py``), so ``fit / L`` is the cost in
likelihood evaluations. Before timing, a small fit (2,000 cells x 40 genes) loads the
lazily imported modules and the compiled kernels (one-time costs of a process, about 1-2 s,
not per-fit work); ``--reml`` times ``reml=True`` as well (``--reml-differenced``: also
with the outer derivatives of ``L_R`` differenced, the method before the analytic ones, same
process); ``--numpy-path`` times the fit
again with the compiled per-group passes of ``batchglm.mixed.group_pass`` switched off
(the NumPy derivative arrays and sparse group sums they replaced), in the same process;
``--threads`` sets ``n_jobs`` (default: all cores). The load average of the machine is
recorded with the results.

Run: ``PYTHONPATH=src python benchmarks/mixed_speed.py [--genes 200] [--tmb-genes 3]``;
writes ``benchmarks/results/mixed_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/sparse.py would shadow the `sparse` package that anndata's dask support imports.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.special import gammaln  # noqa: E402

import batchglm as bg  # noqa: E402

TARGET_GENES = 2000
R_LOOP = r"""
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(TRUE)
counts <- read.csv(args[1]); obs <- read.csv(args[2])
t0 <- proc.time()[["elapsed"]]
for (g in colnames(counts)) {
  obs$y <- counts[[g]]
  fit <- glmmTMB(y ~ condition + x + (1 | donor), data = obs, family = nbinom2)
}
cat((proc.time()[["elapsed"]] - t0) / ncol(counts), "\n")
"""


def nb_loglik(y: np.ndarray, mu: np.ndarray, r: np.ndarray) -> np.ndarray:
    """One dense NB log-likelihood pass, summed per gene (L, as in ``benchmarks/run.py``)."""
    r = np.broadcast_to(r, y.shape)
    rm = r + mu
    ll = gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
    ll += r * np.log(r / rm)
    ll += y * np.log(mu / rm)
    return ll.sum(axis=0)


def simulate(n_cells: int, n_genes: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Counts ``(n_cells, n_genes)`` and obs with donor, condition and covariate x."""
    rng = np.random.default_rng(seed)
    gid = rng.integers(0, 8, n_cells)
    obs = pd.DataFrame(
        {
            "donor": [f"d{g}" for g in gid],
            "condition": np.where(gid < 4, "ctrl", "stim"),
            "x": rng.normal(size=n_cells),
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    u = rng.normal(size=(8, n_genes)) * np.sqrt(rng.uniform(0.05, 0.3, n_genes))
    eta = (
        rng.uniform(-1.0, 1.5, n_genes)
        + u[gid]
        + 0.2 * obs["x"].to_numpy()[:, None] * rng.normal(size=n_genes)
    )
    size = rng.uniform(2.0, 10.0, n_genes)
    mu = np.exp(eta)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


def main() -> None:
    """Time both tools and write the markdown report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=20000)
    ap.add_argument("--genes", type=int, default=TARGET_GENES)
    ap.add_argument("--tmb-genes", type=int, default=3)
    ap.add_argument("--reml", action="store_true", help="time reml=True too")
    ap.add_argument("--numpy-path", action="store_true", help="time the NumPy path too")
    ap.add_argument(
        "--reml-differenced",
        action="store_true",
        help="with --reml: time REML with differenced outer derivatives too (the old method)",
    )
    ap.add_argument("--threads", type=int, default=None, help="n_jobs (default: all cores)")
    ap.add_argument("--out", default="mixed_speed.md")
    args = ap.parse_args()
    from batchglm.mixed import group_pass

    load = [os.getloadavg()[0]]
    y_w, obs_w = simulate(2000, 40, seed=1)
    bg.fit(y_w, "~ condition + x", obs=obs_w, random_effects="donor")
    group_pass.ENABLED = False
    bg.fit(y_w, "~ condition + x", obs=obs_w, random_effects="donor")
    group_pass.ENABLED = True
    y, obs = simulate(args.cells, args.genes)
    mu = np.broadcast_to(y.mean(axis=0), y.shape)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        nb_loglik(y, mu, np.full((1, y.shape[1]), 5.0))
        times.append(time.perf_counter() - t0)
    one_l = float(np.median(times))
    kw = {"obs": obs, "random_effects": "donor", "n_jobs": args.threads}
    t0 = time.perf_counter()
    res = bg.fit(y, "~ condition + x", **kw)
    fit_s = time.perf_counter() - t0
    load.append(os.getloadavg()[0])
    numpy_s = float("nan")
    if args.numpy_path:
        group_pass.ENABLED = False
        t0 = time.perf_counter()
        res_np = bg.fit(y, "~ condition + x", **kw)
        numpy_s = time.perf_counter() - t0
        group_pass.ENABLED = True
        load.append(os.getloadavg()[0])
        diff_ll = float(np.abs(res.loglik - res_np.loglik).max())
        diff_coef = float(np.abs(res.coef_loc.to_numpy() - res_np.coef_loc.to_numpy()).max())
    reml_s = reml_np_s = reml_d_s = float("nan")
    diff_reml = (float("nan"), float("nan"))
    if args.reml:
        t0 = time.perf_counter()
        res_reml = bg.fit(y, "~ condition + x", reml=True, **kw)
        reml_s = time.perf_counter() - t0
        load.append(os.getloadavg()[0])
        if args.numpy_path:
            group_pass.ENABLED = False
            t0 = time.perf_counter()
            bg.fit(y, "~ condition + x", reml=True, **kw)
            reml_np_s = time.perf_counter() - t0
            group_pass.ENABLED = True
            load.append(os.getloadavg()[0])
        if args.reml_differenced:
            from batchglm.mixed import reml as reml_module

            reml_module.DIFFERENCED = True
            t0 = time.perf_counter()
            res_d = bg.fit(y, "~ condition + x", reml=True, **kw)
            reml_d_s = time.perf_counter() - t0
            reml_module.DIFFERENCED = False
            load.append(os.getloadavg()[0])
            both = (res_reml.status == "converged") & (res_d.status == "converged")
            diff_reml = (
                float(np.abs(res_reml.loglik - res_d.loglik)[both].max()),
                float(
                    np.abs(res_reml.random_var - res_d.random_var).to_numpy()[both.to_numpy()].max()
                ),
            )
    # L again after the fits: the machine's load can change while they run.
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        nb_loglik(y, mu, np.full((1, y.shape[1]), 5.0))
        times.append(time.perf_counter() - t0)
    one_l = 0.5 * (one_l + float(np.median(times)))
    scale = TARGET_GENES / args.genes
    tmb = float("nan")
    if args.tmb_genes > 0:
        with tempfile.TemporaryDirectory() as tmp:
            cpath, opath, rpath = (Path(tmp) / n for n in ("y.csv", "obs.csv", "loop.R"))
            pd.DataFrame(y[:, : args.tmb_genes].astype(int)).add_prefix("g").to_csv(
                cpath, index=False
            )
            obs.to_csv(opath, index=False)
            rpath.write_text(R_LOOP)
            out = subprocess.run(
                ["Rscript", str(rpath), str(cpath), str(opath)],
                capture_output=True,
                text=True,
                check=True,
            )
            tmb = float(out.stdout.split()[-1])
    lines = [
        "# Random-intercept NB fit: speed",
        "",
        f"{args.cells} cells, 8 donors, `~ condition + x + (1 | donor)`; batchglm timed on "
        f"{args.genes} genes, glmmTMB on {args.tmb_genes}, both scaled to {TARGET_GENES}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| L (one NB log-likelihood pass, {args.genes} genes) | {one_l:.3f} s |",
        f"| batchglm fit, {args.genes} genes | {fit_s:.1f} s ({fit_s / one_l:.1f} L) |",
        *(
            [
                f"| batchglm fit, NumPy path, {args.genes} genes | {numpy_s:.1f} s "
                f"({numpy_s / one_l:.1f} L) |",
                f"| max abs difference of the two fits: loglik / coef_loc | {diff_ll:.1e} / "
                f"{diff_coef:.1e} |",
            ]
            if args.numpy_path
            else []
        ),
        *(
            [f"| batchglm REML fit, {args.genes} genes | {reml_s:.1f} s ({reml_s / one_l:.1f} L) |"]
            + (
                [
                    f"| batchglm REML fit, NumPy path, {args.genes} genes | {reml_np_s:.1f} s "
                    f"({reml_np_s / one_l:.1f} L) |"
                ]
                if args.numpy_path
                else []
            )
            + [f"| REML / ML fit time | {reml_s / fit_s:.2f} |"]
            + (
                [
                    f"| batchglm REML fit, differenced outer derivatives, {args.genes} genes | "
                    f"{reml_d_s:.1f} s ({reml_d_s / one_l:.1f} L; / ML {reml_d_s / fit_s:.2f}) |",
                    f"| REML analytic vs differenced, converged genes: max abs loglik / "
                    f"random_var difference | {diff_reml[0]:.1e} / {diff_reml[1]:.1e} |",
                ]
                if args.reml_differenced
                else []
            )
            if args.reml
            else []
        ),
        f"| batchglm, scaled to {TARGET_GENES} genes | {fit_s * scale:.0f} s |",
        f"| glmmTMB per gene | {tmb:.2f} s |",
        f"| glmmTMB, scaled to {TARGET_GENES} genes | {tmb * TARGET_GENES:.0f} s |",
        f"| glmmTMB / batchglm | {tmb * TARGET_GENES / (fit_s * scale):.1f} |",
        f"| status | {res.status.value_counts().to_dict()} |",
        f"| threads (n_jobs) | {args.threads or 'all cores'} |",
        f"| load average (1 min) during the run | {', '.join(f'{x:.1f}' for x in load)} |",
        "",
    ]
    out_path = Path(__file__).parent / "results" / args.out
    out_path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
