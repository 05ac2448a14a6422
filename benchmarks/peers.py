"""batchglm against its peers on the same simulated NB data, plus a scaling curve.

Usage::

    .venv/bin/python benchmarks/peers.py                  # 10000 obs x 1000 features
    .venv/bin/python benchmarks/peers.py --quick          # 2000 obs x 200 features
    .venv/bin/python benchmarks/peers.py --peers glmgampoi,edger --skip-scaling

Peers (``--peers``, comma separated; default all): ``pydeseq2``, ``statsmodels``,
``glum``, ``glmgampoi``, ``glmgampoi-noshrink``, ``deseq2``, ``edger``.  The Python peers
run in the benchmark venv ``.bench-venv`` (created / completed with pip on first use),
the R peers with ``Rscript`` (Debian: ``apt-get install r-bioc-glmgampoi r-bioc-deseq2
r-bioc-edger``).  A peer that cannot run is reported as "not available" with the reason.

Data simulation, ``L`` (one dense NB log-likelihood evaluation with
``scipy.special.gammaln``) and the batchglm timing are those of ``benchmarks/run.py``.
Accuracy: the per-feature NB log-likelihood at each peer's coefficients (natural log,
mapped onto our design columns) and dispersions is computed here with one shared
function, :func:`nb_loglik_alpha`, for every method including batchglm.

Writes ``docs/benchmarks.md``, ``benchmarks/results/scaling.csv`` and
``docs/scaling.png`` (scaling curve of bg.fit); with ``--quick``
``benchmarks/results/peers-quick.md``, ``scaling-quick.csv`` and ``scaling-quick.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import betaln, gammaln

from run import (
    DEFAULT_BENCH_VENV,
    LL_TOL,
    ROOT,
    Data,
    _match_columns,
    _tail,
    ensure_bench_venv,
    fmt,
    loglik_at,
    machine_info,
    rmsd,
    run_batchglm,
    run_pydeseq2,
    simulate,
    time_loglik,
)

BENCH_DIR = Path(__file__).resolve().parent
R_DIR = BENCH_DIR / "peers_r"
PERGENE_SCRIPT = BENCH_DIR / "peer_pergene.py"
R_INSTALL = "sudo apt-get install r-bioc-glmgampoi r-bioc-deseq2 r-bioc-edger"
ALL_PEERS = [
    "pydeseq2",
    "statsmodels",
    "glum",
    "glmgampoi",
    "glmgampoi-noshrink",
    "deseq2",
    "edger",
]
#: R script, R package and extra script argument of the R peers.
R_PEERS = {
    "glmgampoi": ("glmgampoi.R", "glmGamPoi", ["default"]),
    "glmgampoi-noshrink": ("glmgampoi.R", "glmGamPoi", ["noshrink"]),
    "deseq2": ("deseq2.R", "DESeq2", []),
    "edger": ("edger.R", "edgeR", []),
}
#: Thread-count environment variables set for every peer subprocess.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------------------
# the shared log-likelihood
# --------------------------------------------------------------------------------------


def nb_loglik_alpha(y: np.ndarray, mu: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-feature NB log-likelihood with dispersion ``alpha`` (var = mu + alpha mu^2).

    Written with ``betaln`` and ``log1p`` so that it stays accurate for large
    ``r = 1 / alpha`` (``alpha`` is floored at ``1e-12``, the Poisson limit to double
    precision): ``gammaln(y+r) - gammaln(r) - gammaln(y+1) = -betaln(y+1, r) - log(y+r)``.
    Features with a non-finite ``alpha`` or ``mu`` get ``nan``.
    """
    alpha = np.asarray(alpha, dtype=float)
    bad = ~np.isfinite(alpha) | ~np.all(np.isfinite(mu), axis=0)
    r = 1.0 / np.maximum(np.where(np.isfinite(alpha), alpha, 1.0), 1e-12)
    r = np.broadcast_to(r[None, :], y.shape)
    mu = np.where(np.isfinite(mu), mu, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = -betaln(y + 1.0, r) - np.log(y + r)
        ll -= r * np.log1p(mu / r)
        ll += np.where(y > 0, y * (np.log(mu) - np.log(r + mu)), 0.0)
    out = ll.sum(axis=0)
    out[bad] = np.nan
    return out


def loglik_features(
    data: Data, coef: np.ndarray, alpha: np.ndarray, features: np.ndarray | None = None
) -> np.ndarray:
    """Shared per-feature log-likelihood at natural-log coefficients and dispersions."""
    idx = np.arange(data.shape[1]) if features is None else features
    with np.errstate(over="ignore", invalid="ignore"):
        mu = data.size_factors[:, None] * np.exp(data.design.to_numpy() @ coef.T)
    return nb_loglik_alpha(data.counts[:, idx], mu, alpha)


# --------------------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    """Timing and estimates of one method (batchglm or a peer)."""

    name: str
    available: bool
    reason: str = ""
    seconds: float = float("nan")  # wall time of the fit (extrapolated if subset)
    version: str = ""
    cores: str = ""
    note: str = ""
    coef: np.ndarray | None = None  # (n_fitted, p) natural log, our design columns
    alpha: np.ndarray | None = None  # (n_fitted,) final dispersion
    alpha_raw: np.ndarray | None = None  # gene-wise (unshrunk) dispersion, if any
    features: np.ndarray | None = None  # indices of the fitted features (None: all)
    extra: dict[str, object] = field(default_factory=dict)


def peer_env(n_threads: int) -> dict[str, str]:
    """Environment for peer subprocesses: no PYTHONPATH, thread counts limited."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for var in THREAD_VARS:
        env[var] = str(n_threads)
    return env


def write_data_dir(data: Data, d: Path) -> None:
    """Write the data in the formats the peer scripts read."""
    np.save(d / "counts.npy", data.counts.astype(np.int64))
    np.save(d / "design.npy", data.design.to_numpy())
    np.save(d / "size_factors.npy", data.size_factors)
    # R: int32 row-major (obs x features) = column-major features x obs
    data.counts.astype(np.int32).tofile(d / "counts.i32")
    n_obs, n_features = data.shape
    (d / "dims.tsv").write_text(f"{n_obs}\n{n_features}\n{data.design.shape[1]}\n")
    data.design.to_csv(d / "design.tsv", sep="\t", index=False)
    data.metadata.to_csv(d / "meta.tsv", sep="\t", index=False)
    np.savetxt(d / "sf.tsv", data.size_factors, fmt="%.17g")


def ensure_modules(venv: Path, modules: dict[str, str], log: list[str]) -> tuple[Path | None, str]:
    """Bench-venv python with ``modules`` (import name -> pip name), installing if missing."""
    py, reason = ensure_bench_venv(venv, log)  # creates the venv, installs pydeseq2
    if py is None:
        return None, reason
    code = "; ".join(f"import {m}" for m in modules)
    if subprocess.run([str(py), "-c", code], capture_output=True).returncode == 0:
        return py, ""
    print(f"[peers] installing {', '.join(modules.values())} into {venv} ...", flush=True)
    try:
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", *modules.values()],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except subprocess.CalledProcessError as exc:
        return None, f"`{shlex.join(exc.cmd)}` failed: {_tail(exc.stderr or exc.stdout or '')}"
    except subprocess.TimeoutExpired as exc:
        return None, f"pip install timed out after {exc.timeout:.0f} s"
    ok = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    if ok.returncode != 0:
        return None, f"not importable after install: {_tail(ok.stderr)}"
    log.append(f"installed {', '.join(modules.values())} into {venv}")
    return py, ""


def run_pergene(
    method: str, data: Data, d: Path, venv: Path, budget_s: float, log: list[str]
) -> Result:
    """statsmodels / glum per-gene loop in the bench venv (single process, 1 BLAS thread)."""
    py, reason = ensure_modules(venv, {method: method}, log)
    if py is None:
        return Result(method, False, reason)
    cmd = [str(py), str(PERGENE_SCRIPT), "--data-dir", str(d), "--method", method]
    cmd += ["--budget-s", str(budget_s)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=peer_env(1), timeout=7200)
    if proc.returncode != 0:
        return Result(method, False, f"run failed: {_tail(proc.stderr)}")
    info = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    n_fit, n_all = int(info["n_fitted"]), int(info["n_features"])
    coef = np.load(d / f"{method}_coef.npy")
    alpha = np.load(d / f"{method}_alpha.npy")
    if method == "statsmodels":
        note = "NegativeBinomial (NB2), offset log(sf), Newton, joint MLE of coefs and alpha"
        if info["n_fallback"]:
            note += f"; {info['n_fallback']} features refitted with BFGS"
    else:
        note = (
            "no dispersion estimation in glum: Poisson fit -> moment alpha -> NB fit at "
            "that fixed alpha (both timed)"
        )
    seconds = float(info["seconds_extrapolated"])
    if n_fit < n_all:
        note += (
            f"; timed on the first {n_fit} of {n_all} features ({info['seconds']:.1f} s), "
            "time extrapolated linearly, accuracy on those features"
        )
    return Result(
        method,
        True,
        seconds=seconds,
        version=str(info["version"]),
        cores="1 (serial per-gene loop, BLAS 1 thread)",
        note=note,
        coef=coef,
        alpha=alpha,
        features=np.arange(n_fit) if n_fit < n_all else None,
        extra=info,
    )


def r_package_version(pkg: str) -> str | None:
    """Installed version of an R package, or None (also when Rscript is missing)."""
    if shutil.which("Rscript") is None:
        return None
    expr = f'cat(as.character(packageVersion("{pkg}")))'
    proc = subprocess.run(["Rscript", "-e", expr], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def run_r_peer(name: str, data: Data, d: Path, n_cores: int, timeout: float) -> Result:
    """One R peer via Rscript; its fit is timed inside R with system.time()."""
    script, pkg, extra_args = R_PEERS[name]
    if shutil.which("Rscript") is None:
        return Result(name, False, f"Rscript not found; install R and the packages: {R_INSTALL}")
    if r_package_version(pkg) is None:
        return Result(name, False, f"R package {pkg} not installed: {R_INSTALL}")
    cmd = ["Rscript", str(R_DIR / script), str(d), str(n_cores), *extra_args]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=peer_env(n_cores), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return Result(name, False, f"timed out after {timeout:.0f} s")
    info_file = d / f"{name}_info.tsv"
    if proc.returncode != 0 or not info_file.exists():
        return Result(name, False, f"Rscript failed: {_tail(proc.stderr)}")
    info = dict(ln.split("\t", 1) for ln in info_file.read_text().splitlines() if "\t" in ln)
    n_obs, n_features = data.shape
    coef = np.fromfile(d / f"{name}_coef.f64").reshape(n_features, -1)
    design = np.fromfile(d / f"{name}_design.f64").reshape(n_obs, -1)
    alpha = np.fromfile(d / f"{name}_alpha.f64")
    raw_file = d / f"{name}_alpha_raw.f64"
    alpha_raw = np.fromfile(raw_file) if raw_file.exists() else None
    order = _match_columns(data.design, design)
    if order is None:
        return Result(name, False, "cannot match the R design columns to ours")
    notes = {
        "glmgampoi": "glm_gp(size_factors=sf, overdispersion=TRUE, on_disk=FALSE), default "
        "overdispersion_shrinkage=TRUE: Beta refitted at the trended dispersion, "
        "loglik at Beta and the returned gene-wise overdispersions; Cox-Reid adjusted",
        "glmgampoi-noshrink": "as glmgampoi with overdispersion_shrinkage=FALSE: Beta "
        "refitted at the gene-wise (Cox-Reid adjusted) overdispersions",
        "deseq2": "DESeq() default pipeline (parametric trend, MAP-shrunk dispersions), "
        "given sizeFactors, minReplicatesForReplace=Inf; log2 coefs mapped to natural log"
        + (f"; BiocParallel MulticoreParam({n_cores})" if n_cores > 1 else ""),
        "edger": "estimateDisp (Cox-Reid APL, empirical-Bayes tagwise) + glmFit at tagwise "
        "dispersions (unshrunk coefficients; offset log(sf) via lib.size)",
    }
    cores = {
        "glmgampoi": "1 (single-threaded)",
        "glmgampoi-noshrink": "1 (single-threaded)",
        "deseq2": f"{n_cores} (BiocParallel)" if n_cores > 1 else "1",
        "edger": "1 (single-threaded)",
    }[name]
    return Result(
        name,
        True,
        seconds=float(info["seconds"]),
        version=info.get("version", ""),
        cores=cores,
        note=notes[name],
        coef=coef[:, order],
        alpha=alpha,
        alpha_raw=alpha_raw,
        extra=info,
    )


def run_pydeseq2_peer(data: Data, venv: Path, n_cpus: int, log: list[str]) -> Result:
    """PyDESeq2 through ``run.py``'s runner (``peer_pydeseq2.py`` in the bench venv)."""
    peer = run_pydeseq2(data, venv, n_cpus, log)
    if not peer.available or peer.coef_loc is None or peer.log_r is None:
        return Result("pydeseq2", False, peer.reason)
    return Result(
        "pydeseq2",
        True,
        seconds=peer.seconds,
        version=str(peer.info.get("version", "")),
        cores=f"{n_cpus} (joblib processes)",
        note="given size factors, refit_cooks=False; LFCs at MAP-shrunk dispersions",
        coef=peer.coef_loc,
        alpha=np.exp(-peer.log_r),
        alpha_raw=np.exp(-peer.log_r_genewise) if peer.log_r_genewise is not None else None,
    )


def run_peer(name: str, data: Data, d: Path, args: argparse.Namespace, log: list[str]) -> Result:
    """Run one peer; never raises."""
    try:
        if name == "pydeseq2":
            return run_pydeseq2_peer(data, args.bench_venv, args.n_cores, log)
        if name in ("statsmodels", "glum"):
            return run_pergene(name, data, d, args.bench_venv, args.budget_s, log)
        return run_r_peer(name, data, d, args.n_cores, args.r_timeout)
    except Exception as exc:  # noqa: BLE001 - a peer failure must not end the benchmark
        return Result(name, False, f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# scaling curve
# --------------------------------------------------------------------------------------


def mem_available() -> int:
    """MemAvailable from /proc/meminfo in bytes (large number if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50


def time_loglik_chunked(data: Data, chunk: int = 1000, repeats: int = 3) -> float:
    """L for large data: the dense log-likelihood evaluated over feature chunks, summed."""
    n_features = data.shape[1]
    if n_features <= chunk:
        return time_loglik(data, repeats)[0]
    x = data.design.to_numpy()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, n_features, chunk):
            sl = slice(s, s + chunk)
            mu = data.size_factors[:, None] * np.exp(x @ data.coef_loc[sl].T)
            r = np.exp(data.log_r[sl])[None, :]
            y = data.counts[:, sl]
            rm = r + mu
            ll = gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
            ll += r * np.log(r / rm)
            ll += y * np.log(mu / rm)
            ll.sum(axis=0)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_scaling(
    n_obs_grid: list[int], n_features_grid: list[int], seed: int, out_csv: Path, log: list[str]
) -> pd.DataFrame:
    """bg.fit time and L over a grid of sizes; skips sizes that would not fit in memory."""
    rows = []
    for n_obs in n_obs_grid:
        for n_features in n_features_grid:
            dense = n_obs * n_features * 8
            if 8 * dense > mem_available():
                log.append(
                    f"scaling: skipped {n_obs} x {n_features} ({dense / 1e9:.1f} GB dense; "
                    "about 8x that needed while simulating / fitting)"
                )
                continue
            print(f"[peers] scaling {n_obs} x {n_features} ...", flush=True)
            data = simulate(n_obs, n_features, seed)
            repeats = 3 if dense < 1e9 else 1
            L = time_loglik_chunked(data, repeats=repeats)
            try:
                bg = run_batchglm(data, max_repeats=repeats, slow_s=10.0)
            except Exception as exc:  # noqa: BLE001
                log.append(f"scaling: bg.fit failed at {n_obs} x {n_features}: {exc}")
                continue
            rows.append(
                {
                    "n_obs": n_obs,
                    "n_features": n_features,
                    "dense_MB": dense / 1e6,
                    "zeros": float(np.mean(data.counts == 0)),
                    "mean_count": float(np.mean(data.counts)),
                    "L_s": L,
                    "fit_s": bg.seconds,
                    "fit_cpu_s": bg.cpu_seconds,
                    "fit_over_L": bg.seconds / L,
                    "fit_repeats": len(bg.times),
                    "n_converged": int(bg.status.get("converged", 0)),
                }
            )
            del data, bg
    df = pd.DataFrame(rows)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_csv, index=False, float_format="%.6g")
    return df


def plot_scaling(df: pd.DataFrame, png: Path) -> None:
    """Two panels: bg.fit seconds vs matrix size, and bg.fit / L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for n_features, g in df.groupby("n_features"):
        g = g.sort_values("n_obs")
        ax1.plot(g["n_obs"], g["fit_s"], "o-", label=f"{n_features} features")
        ax1.plot(g["n_obs"], g["L_s"], "x:", color=ax1.lines[-1].get_color(), alpha=0.6)
        ax2.plot(g["n_obs"], g["fit_over_L"], "o-", label=f"{n_features} features")
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="observations",
        ylabel="seconds",
        title="bg.fit wall time (o-) and L (x:)",
    )
    ax2.set(xscale="log", xlabel="observations", ylabel="bg.fit / L", title="bg.fit in units of L")
    ax2.axhline(3.0, color="grey", lw=0.8, ls="--", label="target: 3 L")
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------

LABELS = {
    "batchglm": "batchglm",
    "pydeseq2": "PyDESeq2",
    "statsmodels": "statsmodels",
    "glum": "glum",
    "glmgampoi": "glmGamPoi",
    "glmgampoi-noshrink": "glmGamPoi (no shrinkage)",
    "deseq2": "DESeq2",
    "edger": "edgeR",
}


ACCURACY_NOTES = [
    "What the peers estimate (why their log-likelihood can be lower than batchglm's):",
    "",
    "* batchglm and statsmodels both compute the joint maximum-likelihood estimate of the "
    "coefficients and the dispersion; they should agree to about 1e-6 per feature.",
    "* glmGamPoi: dispersion from the Cox-Reid adjusted profile likelihood (not the plain "
    "MLE), one round beta -> dispersion -> beta; with its default shrinkage the final Beta "
    "is fitted at the trended dispersion, not at the reported gene-wise one.",
    "* edgeR: Cox-Reid APL dispersions with empirical-Bayes shrinkage towards the trend "
    "(tagwise); the coefficients are the MLE at those dispersions.",
    "* DESeq2 / PyDESeq2: MAP dispersions (shrunk towards the parametric trend), and their "
    "GLM fit bounds mu below by `minmu = 0.5`, which pushes the intercept of genes with "
    "mean counts below about 0.5 upwards (with the default data the lowest-expressed genes, "
    "mean count about 0.2, get intercepts about 0.3 too high). This dominates their "
    "coefficient RMSD and their largest log-likelihood gaps.",
    "* glum: the dispersion is fixed at a moment estimate (glum has no NB dispersion "
    "estimation); the coefficients are the MLE at that dispersion.",
]


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


def accuracy_rows(data: Data, results: list[Result], bg: Result | None) -> list[list[str]]:
    """Per method: loglik against batchglm, RMSD to the truth."""
    ll_bg = loglik_features(data, bg.coef, bg.alpha) if bg and bg.coef is not None else None
    truth = Result(
        "truth", True, coef=data.coef_loc, alpha=np.exp(-data.log_r), version="", cores=""
    )
    rows = []
    for res in [*([bg] if bg else []), truth, *results]:
        if not res.available or res.coef is None or res.alpha is None:
            continue
        idx = res.features if res.features is not None else np.arange(data.shape[1])
        ll = loglik_features(data, res.coef, res.alpha, idx)
        finite = np.isfinite(ll)
        if ll_bg is not None and res.name != "batchglm":
            diff = ll_bg[idx][finite] - ll[finite]
            ge = f"{int(np.sum(diff >= -LL_TOL))} / {int(finite.sum())}"
            dsum, dmed = fmt(float(diff.sum())), fmt(float(np.median(diff)), 3)
            dmin = fmt(float(diff.min()), 3)
            dmax = fmt(float(diff.max()), 3)
        else:
            ge = dsum = dmed = dmin = dmax = "-"
        true_coef = data.coef_loc[idx]
        true_lr = data.log_r[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_r = -np.log(res.alpha)
        rows.append(
            [
                LABELS.get(res.name, res.name),
                f"{len(idx)}",
                f"{int(finite.sum())}",
                ge,
                dsum,
                dmed,
                dmin,
                dmax,
                fmt(rmsd(res.coef, true_coef), 4),
                fmt(rmsd(res.coef[:, 1], true_coef[:, 1]), 4),
                fmt(float(np.nanmedian(np.abs(log_r - true_lr))), 3),
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="batchglm vs peers on the same NB data.")
    parser.add_argument("--quick", action="store_true", help="2000 obs x 200 features")
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated list")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--n-obs", type=int, default=None)
    parser.add_argument("--n-features", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--repeats", type=int, default=3, help="bg.fit repeats (median)")
    parser.add_argument("--n-cores", type=int, default=2, help="cores for multi-core peers")
    parser.add_argument("--budget-s", type=float, default=60.0, help="per-gene loop budget")
    parser.add_argument("--r-timeout", type=float, default=3600.0)
    parser.add_argument("--bench-venv", type=Path, default=DEFAULT_BENCH_VENV)
    parser.add_argument("--scaling-obs", default=None, help="e.g. 1000,10000,50000")
    parser.add_argument("--scaling-features", default=None, help="e.g. 100,1000,5000")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {','.join(ALL_PEERS)}")
    n_obs = args.n_obs or (2000 if args.quick else 10000)
    n_features = args.n_features or (200 if args.quick else 1000)
    suffix = "-quick" if args.quick else ""
    # --quick writes next to the other quick results, not into docs/
    doc_dir = BENCH_DIR / "results" if args.quick else ROOT / "docs"
    output = args.output or doc_dir / ("peers-quick.md" if args.quick else "benchmarks.md")
    scaling_csv = BENCH_DIR / "results" / f"scaling{suffix}.csv"
    scaling_png = doc_dir / f"scaling{suffix}.png"
    default_obs = "1000,2000" if args.quick else "1000,10000,50000"
    default_features = "100,200" if args.quick else "100,1000,5000"
    s_obs = [int(v) for v in (args.scaling_obs or default_obs).split(",")]
    s_features = [int(v) for v in (args.scaling_features or default_features).split(",")]
    exe = Path(sys.executable)
    exe_str = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else exe.name
    command = shlex.join([exe_str, *sys.argv]) if argv is None else "peers.main(...)"
    started = dt.datetime.now(dt.UTC)
    log: list[str] = []
    load_start = os.getloadavg()[0]

    print(f"[peers] simulating {n_obs} x {n_features} (seed {args.seed}) ...", flush=True)
    data = simulate(n_obs, n_features, args.seed)
    zero_frac = float(np.mean(data.counts == 0))
    mean_count = float(np.mean(data.counts))
    print("[peers] timing L ...", flush=True)
    L, _ = time_loglik(data)

    print("[peers] timing bg.fit ...", flush=True)
    bg: Result | None = None
    try:
        run = run_batchglm(data, max_repeats=args.repeats)
        import batchglm

        bg = Result(
            "batchglm",
            True,
            seconds=run.seconds,
            version=str(getattr(batchglm, "__version__", "?")),
            cores=f"{machine_info()['nproc']} (threads over feature chunks, default n_jobs)",
            note=f"bg.fit(y, X, size_factors=sf), median of {len(run.times)} "
            f"({', '.join(f'{t:.2f}' for t in run.times)} s; CPU time {run.cpu_seconds:.2f} s); "
            "status " + ", ".join(f"{k}: {v}" for k, v in run.status.items()),
            coef=run.coef_loc,
            alpha=np.exp(-run.log_r),
        )
        ll_check = loglik_at(data, run.coef_loc, run.log_r)
        conv = run.status_per_feature == "converged"
        ll_shared = loglik_features(data, run.coef_loc, np.exp(-run.log_r))
        log.append(
            "batchglm res.loglik vs the shared log-likelihood function, max abs diff: "
            f"{np.nanmax(np.abs(run.loglik - ll_shared)):.2e} (all features), "
            f"vs run.py's gammaln formula on converged features: "
            f"{np.nanmax(np.abs(run.loglik - ll_check)[conv], initial=0.0):.2e}"
        )
    except Exception as exc:  # noqa: BLE001
        bg = Result("batchglm", False, f"{type(exc).__name__}: {exc}")
        print(f"[peers] bg.fit failed: {bg.reason}", flush=True)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="batchglm-peers-") as tmp:
        d = Path(tmp)
        write_data_dir(data, d)
        for name in peers:
            print(f"[peers] running {name} ...", flush=True)
            res = run_peer(name, data, d, args, log)
            if res.available:
                print(f"[peers]   {name}: {res.seconds:.2f} s", flush=True)
            else:
                print(f"[peers]   {name}: not available: {res.reason}", flush=True)
            results.append(res)
    load_end = os.getloadavg()[0]

    # ---- speed ------------------------------------------------------------------------
    speed_rows = []
    method_notes = []
    bg_ok = bg is not None and bg.available
    for res in [bg, *results]:
        if res is None:
            continue
        label = LABELS.get(res.name, res.name)
        if not res.available:
            speed_rows.append([label, "-", "-", "not available", "-", "-"])
            method_notes.append(f"**{label}**: not available: {res.reason}")
            continue
        ratio = res.seconds / bg.seconds if bg is not None and bg_ok else float("nan")
        speed_rows.append(
            [
                label,
                res.version,
                res.cores,
                f"{res.seconds:.2f}",
                fmt(ratio, 3),
                f"{res.seconds / L:.1f}",
            ]
        )
        method_notes.append(f"**{label}**: {res.note}")
    speed_header = ["method", "version", "cores", "wall s", "peer / batchglm", "L units"]
    summary = []
    ok = [r for r in results if r.available]
    if bg_ok and ok:
        assert bg is not None
        summary.append(f"batchglm: {bg.seconds / L:.2f} L (target: at most 3 L).")
        fastest = min(ok, key=lambda r: r.seconds)
        summary.append(
            f"Fastest peer: {LABELS[fastest.name]}, {fastest.seconds:.2f} s = "
            f"{fastest.seconds / bg.seconds:.1f} x batchglm (target: at least 10 x, aim 20 x)."
        )
        joint = [r for r in ok if r.name != "glum"]
        if joint and fastest.name == "glum":
            fj = min(joint, key=lambda r: r.seconds)
            summary.append(
                f"Fastest peer that estimates the dispersion: {LABELS[fj.name]}, "
                f"{fj.seconds:.2f} s = {fj.seconds / bg.seconds:.1f} x batchglm."
            )
    acc_header = [
        "method",
        "features",
        "finite ll",
        "bg ll >= ll - 1e-6",
        "sum(ll_bg - ll)",
        "median",
        "min",
        "max",
        "RMSD coefs",
        "RMSD condition",
        "median abs log r err",
    ]
    acc_rows = accuracy_rows(data, results, bg if bg is not None and bg.available else None)
    speed_md = table(speed_header, speed_rows)
    acc_md = table(acc_header, acc_rows) if acc_rows else "(no estimates)"
    print()
    print(speed_md)
    print()
    print("\n".join(summary))
    print()
    print(acc_md)
    print()

    # ---- scaling ----------------------------------------------------------------------
    scaling_md = ""
    if not args.skip_scaling:
        df = run_scaling(s_obs, s_features, args.seed, scaling_csv, log)
        if len(df):
            try:
                plot_scaling(df, scaling_png)
            except ImportError as exc:
                log.append(f"scaling plot not drawn ({exc}); `pip install matplotlib`")
            cols = ["n_obs", "n_features", "zeros", "L_s", "fit_s", "fit_over_L", "n_converged"]
            srows = [
                [
                    str(int(r.n_obs)),
                    str(int(r.n_features)),
                    f"{100 * r.zeros:.1f} %",
                    f"{r.L_s:.4f}",
                    f"{r.fit_s:.3f}",
                    f"{r.fit_over_L:.1f}",
                    f"{int(r.n_converged)} / {int(r.n_features)}",
                ]
                for r in df.itertuples()
            ]
            scaling_md = table(cols, srows)
            print(scaling_md)

    # ---- document ---------------------------------------------------------------------
    info = machine_info()
    r_versions = {p: r_package_version(p) for p in ("glmGamPoi", "DESeq2", "edgeR")}
    r_ver = ", ".join(f"{k} {v or 'not installed'}" for k, v in r_versions.items())
    rel = os.path.relpath
    lines = [
        "# Benchmarks: batchglm against its peers",
        "",
        f"* date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"* machine: {info['cpu']}, nproc = {info['nproc']} ({info['platform']}); "
        f"load average (1 min) at start / end: {load_start:.2f} / {load_end:.2f}",
        f"* software: python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
        f"batchglm {info['batchglm']}; R peers: {r_ver}",
        f"* command: `{command}`",
        f"* data: {n_obs} obs x {n_features} features, {100 * zero_frac:.1f} % zeros, mean "
        f"count {mean_count:.2f}; seed {args.seed}; simulated by `benchmarks/run.py`'s "
        "`simulate`: design intercept + condition (2 levels) + batch (4 levels, 3 dummies, "
        "crossed with condition), intercept-only dispersion, NB size r integer 1..10, "
        "known lognormal size factors (given to every method).",
        f"* L = {L:.4f} s: one dense NB log-likelihood evaluation at the true parameters "
        "(`scipy.special.gammaln`), median of 3, same run.",
        "* Timings on a shared machine are noisy: all ratios come from this one run. Peer "
        "fits are timed inside the peer (Python: `time.perf_counter` around the fit; R: "
        "`system.time` around the fit); data loading / conversion is not timed.",
        f"* Cores: the machine has {info['nproc']}; multi-core peers get "
        f"{args.n_cores} (PyDESeq2 `n_cpus`, DESeq2 `BiocParallel`), every peer subprocess "
        f"runs with `OMP/OPENBLAS/MKL_NUM_THREADS` = its core count. statsmodels, glum, "
        "glmGamPoi and edgeR have no multi-core mode (serial loops / single-threaded C++).",
        "",
        "## Speed",
        "",
        speed_md,
        "",
        *summary,
        "",
        *[f"* {n}" for n in method_notes],
        "",
        "## Accuracy",
        "",
        "Per-feature NB log-likelihood `ll` at each method's own coefficients (natural log, "
        "mapped onto our design columns) and final dispersions, computed with one shared "
        "function (`peers.nb_loglik_alpha`, `betaln`/`log1p` form) on the same data, design "
        "and size factors. `bg ll >= ll - 1e-6` counts the features where batchglm's "
        "log-likelihood is at least the method's; `sum`, `median`, `min`, `max` summarise "
        "`ll_batchglm - ll_method` over those features. RMSD to the true location "
        "coefficients (all 5, and the condition coefficient); last column: median "
        "abs(log r_hat - log r_true). The `truth` row uses the simulation parameters.",
        "",
        acc_md,
        "",
        *ACCURACY_NOTES,
        "",
    ]
    if not args.skip_scaling and scaling_md:
        lines += [
            "## Scaling (batchglm only)",
            "",
            f"`bg.fit` on data simulated as above, sizes {s_obs} obs x {s_features} features "
            "(median of 3 fits below 1 GB dense, one fit above); L measured on the same data "
            "(over chunks of 1000 features for wider matrices). CSV: "
            f"`{rel(scaling_csv, ROOT)}`.",
            "",
            scaling_md,
            "",
            f"![scaling]({rel(scaling_png, output.parent)})" if scaling_png.exists() else "",
            "",
        ]
    if log:
        lines += ["## Notes", "", *[f"* {ln}" for ln in dict.fromkeys(log)], ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))
    print(f"[peers] wrote {rel(output, ROOT)}")
    return 0 if bg is not None and bg.available else 1


if __name__ == "__main__":
    sys.exit(main())
