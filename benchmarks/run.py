"""Core-engine benchmark: batchglm ``fit`` against one log-likelihood evaluation and PyDESeq2.

Usage::

    .venv/bin/python benchmarks/run.py              # 10000 obs x 1000 features
    .venv/bin/python benchmarks/run.py --quick      # 2000 obs x 200 features
    .venv/bin/python benchmarks/run.py --no-peers   # skip PyDESeq2

What is measured (see ``benchmarks/README.md``):

* ``L``: one evaluation of the full negative-binomial log-likelihood (``mu`` from the
  linear predictor, then ``gammaln`` terms, summed per feature) over the dense
  matrix, median of 3 repeats.
* ``bg.fit`` wall time (median of 5 repeats; 1 repeat when a fit takes over 60 s),
  reported in seconds and in units of ``L``.
* PyDESeq2 (peer, own virtual environment ``.bench-venv``, run as a subprocess with
  ``n_cpus=2``) on the same counts, design and size factors; only its fit is timed.
* Accuracy: per-feature log-likelihood of batchglm against the log-likelihood of
  PyDESeq2's fitted parameters on the same data, and coefficient RMSD to the truth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_BENCH_VENV = ROOT / ".bench-venv"
PEER_SCRIPT = BENCH_DIR / "peer_pydeseq2.py"

#: Features at which batchglm's log-likelihood may lie below the peer's without counting
#: as worse.
LL_TOL = 1e-6


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


@dataclass
class Data:
    """A simulated NB data set with its true parameters."""

    counts: np.ndarray  # (n_obs, n_features) float64 integer counts
    design: pd.DataFrame  # (n_obs, 5) location design
    metadata: pd.DataFrame  # condition / batch labels
    size_factors: np.ndarray  # (n_obs,)
    coef_loc: np.ndarray  # (n_features, 5) true location coefficients
    log_r: np.ndarray  # (n_features,) true log size (scale intercept)

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape  # type: ignore[return-value]


def simulate(n_obs: int, n_features: int, seed: int) -> Data:
    """Simulate low-count NB data with a crossed condition x batch design.

    Location design: intercept + condition (2 levels) + batch (4 levels, 3 treatment
    dummies); every observation ``i`` has condition ``i % 2`` and batch ``(i // 2) % 4``,
    so all 8 condition x batch cells are equally filled (crossed, not confounded).
    Intercept log-means are uniform in ``[log 0.2, log 16]``, condition and batch
    effects uniform in ``[-0.3, 0.3]``; NB size ``r`` is an integer in 1..10 (intercept-
    only scale); size factors are lognormal (sd 0.3) with geometric mean 1.  This gives
    about 30 % zeros and a mean count of about 4.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(n_obs)
    cond = idx % 2
    batch = (idx // 2) % 4
    design = pd.DataFrame(
        {
            "Intercept": 1.0,
            "condition[T.B]": (cond == 1).astype(float),
            "batch[T.b1]": (batch == 1).astype(float),
            "batch[T.b2]": (batch == 2).astype(float),
            "batch[T.b3]": (batch == 3).astype(float),
        },
        index=pd.Index([f"obs{i}" for i in idx]),
    )
    metadata = pd.DataFrame(
        {"condition": np.where(cond == 1, "B", "A"), "batch": [f"b{b}" for b in batch]},
        index=design.index,
    )
    coef = np.column_stack(
        [
            rng.uniform(np.log(0.2), np.log(16.0), n_features),
            rng.uniform(-0.3, 0.3, (n_features, 4)),
        ]
    )
    r = rng.integers(1, 11, n_features).astype(float)
    sf = np.exp(rng.normal(0.0, 0.3, n_obs))
    sf /= np.exp(np.mean(np.log(sf)))
    mu = sf[:, None] * np.exp(design.to_numpy() @ coef.T)
    counts = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    return Data(counts, design, metadata, sf, coef, np.log(r))


# --------------------------------------------------------------------------------------
# log-likelihood
# --------------------------------------------------------------------------------------


def nb_loglik(y: np.ndarray, mu: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Full NB log-likelihood summed per feature (column).

    ``gammaln(y+r) - gammaln(r) - gammaln(y+1) + r log(r/(r+mu)) + y log(mu/(r+mu))``.
    """
    r = np.broadcast_to(r, y.shape)
    rm = r + mu
    ll = gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
    ll += r * np.log(r / rm)
    ll += y * np.log(mu / rm)
    return ll.sum(axis=0)


def loglik_at(data: Data, coef_loc: np.ndarray, log_r: np.ndarray) -> np.ndarray:
    """Per-feature NB log-likelihood at location coefficients and log sizes."""
    eta = data.design.to_numpy() @ coef_loc.T
    mu = data.size_factors[:, None] * np.exp(eta)
    return nb_loglik(data.counts, mu, np.exp(log_r)[None, :])


def time_loglik(data: Data, repeats: int = 3) -> tuple[float, float]:
    """Median wall and CPU time of one full log-likelihood evaluation at the truth."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        loglik_at(data, data.coef_loc, data.log_r)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


# --------------------------------------------------------------------------------------
# batchglm
# --------------------------------------------------------------------------------------


@dataclass
class BgRun:
    """Timing and estimates of ``bg.fit``."""

    seconds: float
    times: list[float]
    cpu_seconds: float
    coef_loc: np.ndarray
    log_r: np.ndarray
    loglik: np.ndarray
    status: dict[str, int]
    status_per_feature: np.ndarray
    n_warnings: int


def run_batchglm(data: Data, max_repeats: int = 5, slow_s: float = 60.0) -> BgRun:
    """Time ``bg.fit`` (median of up to ``max_repeats``; one repeat when slow)."""
    import batchglm as bg

    times: list[float] = []
    cpu: list[float] = []
    res = None
    n_warn = 0
    for i in range(max_repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0, c0 = time.perf_counter(), time.process_time()
            fit = bg.fit(data.counts, data.design, size_factors=data.size_factors, progress=False)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        if res is None:
            res, n_warn = fit, len(caught)
        if i == 0 and times[0] > slow_s:
            break
    assert res is not None
    names = list(data.design.columns)
    coef = res.coef_loc[names].to_numpy(dtype=float)
    log_r = res.coef_scale.to_numpy(dtype=float)[:, 0]
    status = {str(k): int(v) for k, v in res.status.value_counts().items()}
    return BgRun(
        seconds=float(np.median(times)),
        times=times,
        cpu_seconds=float(np.median(cpu)),
        coef_loc=coef,
        log_r=log_r,
        loglik=res.loglik.to_numpy(dtype=float),
        status=status,
        status_per_feature=res.status.to_numpy(dtype=str),
        n_warnings=n_warn,
    )


# --------------------------------------------------------------------------------------
# PyDESeq2 peer
# --------------------------------------------------------------------------------------


@dataclass
class PeerRun:
    """Outcome of the PyDESeq2 peer run."""

    available: bool
    reason: str = ""
    seconds: float = float("nan")
    info: dict[str, Any] = field(default_factory=dict)
    coef_loc: np.ndarray | None = None
    log_r: np.ndarray | None = None
    log_r_genewise: np.ndarray | None = None


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def ensure_bench_venv(venv: Path, log: list[str]) -> tuple[Path | None, str]:
    """Return the bench-venv python with PyDESeq2, creating the venv when missing.

    Returns ``(python, "")`` on success and ``(None, reason)`` on failure.
    """
    py = _venv_python(venv)
    check = [str(py), "-c", "import pydeseq2; print(pydeseq2.__version__)"]
    if py.exists():
        ok = subprocess.run(check, capture_output=True, text=True)
        if ok.returncode == 0:
            log.append(f"PyDESeq2 {ok.stdout.strip()} found in {venv}")
            return py, ""
    try:
        if not py.exists():
            print(f"[bench] creating {venv} ...", flush=True)
            subprocess.run(
                ["python3", "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
            )
        print("[bench] installing pydeseq2 into the bench venv ...", flush=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", "pydeseq2"],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except FileNotFoundError as exc:
        return None, f"cannot create venv: {exc}"
    except subprocess.CalledProcessError as exc:
        return None, f"`{shlex.join(exc.cmd)}` failed: {_tail(exc.stderr or exc.stdout or '')}"
    except subprocess.TimeoutExpired as exc:
        return None, f"`{shlex.join(exc.cmd)}` timed out after {exc.timeout:.0f} s"
    ok = subprocess.run(check, capture_output=True, text=True)
    if ok.returncode != 0:
        return None, f"pydeseq2 not importable after install: {_tail(ok.stderr)}"
    log.append(f"PyDESeq2 {ok.stdout.strip()} installed into {venv}")
    return py, ""


def _match_columns(ours: pd.DataFrame, theirs: np.ndarray) -> list[int] | None:
    """Index of PyDESeq2's design column equal to each of our design columns."""
    order = []
    x = ours.to_numpy()
    for j in range(x.shape[1]):
        hits = [k for k in range(theirs.shape[1]) if np.array_equal(theirs[:, k], x[:, j])]
        if len(hits) != 1:
            return None
        order.append(hits[0])
    return order


def run_pydeseq2(
    data: Data, venv: Path, n_cpus: int, log: list[str], timeout: float = 3600.0
) -> PeerRun:
    """Run ``peer_pydeseq2.py`` in the bench venv on ``data``; never raises."""
    try:
        py, reason = ensure_bench_venv(venv, log)
        if py is None:
            return PeerRun(False, reason)
        with tempfile.TemporaryDirectory(prefix="batchglm-bench-") as tmp:
            d = Path(tmp)
            np.save(d / "counts.npy", data.counts.astype(np.int64))
            np.save(d / "size_factors.npy", data.size_factors)
            data.metadata.to_csv(d / "metadata.csv", index=False)
            cmd = [str(py), str(PEER_SCRIPT), "--data-dir", str(d), "--n-cpus", str(n_cpus)]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                return PeerRun(False, f"PyDESeq2 run timed out after {timeout:.0f} s")
            if proc.returncode != 0:
                return PeerRun(False, f"PyDESeq2 run failed: {_tail(proc.stderr)}")
            json_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if not json_lines:
                return PeerRun(False, f"no JSON from PyDESeq2 run: {_tail(proc.stdout)}")
            info = json.loads(json_lines[-1])
            lfc = np.load(d / "pydeseq2_lfc.npy")
            disp = np.load(d / "pydeseq2_dispersions.npy")
            gw = np.load(d / "pydeseq2_genewise_dispersions.npy")
            design = np.load(d / "pydeseq2_design.npy")
            sf_used = np.load(d / "pydeseq2_size_factors.npy")
        order = _match_columns(data.design, design)
        if order is None:
            return PeerRun(
                False, f"cannot match PyDESeq2 design columns {info.get('design_columns')}"
            )
        if not np.allclose(sf_used, data.size_factors, rtol=1e-12, atol=0):
            log.append("warning: PyDESeq2 used other size factors than ours")
        with np.errstate(divide="ignore", invalid="ignore"):
            return PeerRun(
                True,
                seconds=float(info["seconds"]),
                info=info,
                coef_loc=lfc[:, order],  # natural log scale
                log_r=-np.log(disp),  # alpha = 1 / r
                log_r_genewise=-np.log(gw),
            )
    except Exception as exc:  # noqa: BLE001 - a peer failure must not end the benchmark
        return PeerRun(False, f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference over the finite entries."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d**2))) if d.size else float("nan")


def machine_info() -> dict[str, str]:
    """A few facts about the machine and software."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    import scipy

    try:
        import batchglm

        bg_version = getattr(batchglm, "__version__", "?")
    except Exception:  # noqa: BLE001
        bg_version = "not importable"
    return {
        "cpu": cpu,
        "nproc": str(nproc),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "batchglm": bg_version,
        "platform": platform.platform(),
    }


def fmt(x: float | None, digits: int = 4) -> str:
    """Format a number for the table (``n/a`` when missing or not finite)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if abs(x) >= 10**digits:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


def md_table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    """A two-column markdown table."""
    w0 = max(len(header[0]), *(len(r[0]) for r in rows))
    w1 = max(len(header[1]), *(len(r[1]) for r in rows))
    out = [f"| {header[0]:<{w0}} | {header[1]:<{w1}} |", f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|"]
    out += [f"| {a:<{w0}} | {b:<{w1}} |" for a, b in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="batchglm core-engine benchmark (speed vs one log-likelihood; PyDESeq2)."
    )
    parser.add_argument("--quick", action="store_true", help="2000 obs x 200 features")
    parser.add_argument("--no-peers", action="store_true", help="skip PyDESeq2")
    parser.add_argument("--n-obs", type=int, default=None)
    parser.add_argument("--n-features", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--repeats", type=int, default=5, help="bg.fit repeats (median)")
    parser.add_argument("--n-cpus", type=int, default=2, help="PyDESeq2 processes")
    parser.add_argument("--bench-venv", type=Path, default=DEFAULT_BENCH_VENV)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="markdown output (default benchmarks/results/core.md, core-quick.md with --quick)",
    )
    args = parser.parse_args(argv)

    n_obs = args.n_obs or (2000 if args.quick else 10000)
    n_features = args.n_features or (200 if args.quick else 1000)
    output = args.output or BENCH_DIR / "results" / ("core-quick.md" if args.quick else "core.md")
    exe = Path(sys.executable)
    exe_str = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else exe.name
    command = shlex.join([exe_str, *sys.argv]) if argv is None else ""
    started = dt.datetime.now(dt.UTC)
    log: list[str] = []

    print(f"[bench] simulating {n_obs} x {n_features} NB data (seed {args.seed}) ...", flush=True)
    data = simulate(n_obs, n_features, args.seed)
    zero_frac = float(np.mean(data.counts == 0))
    mean_count = float(np.mean(data.counts))

    print("[bench] timing one log-likelihood evaluation (L) ...", flush=True)
    load_start = os.getloadavg()[0]
    L, L_cpu = time_loglik(data)
    ll_truth = loglik_at(data, data.coef_loc, data.log_r)

    bg_run: BgRun | None = None
    bg_error = ""
    print("[bench] timing bg.fit ...", flush=True)
    try:
        bg_run = run_batchglm(data, max_repeats=args.repeats)
    except Exception as exc:  # noqa: BLE001 - report instead of crashing
        bg_error = f"{type(exc).__name__}: {exc}"
        print(f"[bench] bg.fit failed: {bg_error}", flush=True)

    peer = PeerRun(False, "skipped (--no-peers)")
    if not args.no_peers:
        print(f"[bench] running PyDESeq2 (n_cpus={args.n_cpus}) ...", flush=True)
        peer = run_pydeseq2(data, args.bench_venv, args.n_cpus, log)
        if not peer.available:
            print(f"[bench] PyDESeq2 not available: {peer.reason}", flush=True)

    load_end = os.getloadavg()[0]

    # ---- speed table ------------------------------------------------------------------
    speed: list[tuple[str, str]] = [
        ("data", f"{n_obs} obs x {n_features} features, NB"),
        ("zeros / mean count", f"{100 * zero_frac:.1f} % / {mean_count:.2f}"),
        ("load average (1 min) at start / end", f"{load_start:.2f} / {load_end:.2f}"),
        ("L: one NB log-likelihood (median of 3)", f"{L:.4f} s (CPU {L_cpu:.4f} s)"),
    ]
    if bg_run is not None:
        reps = ", ".join(f"{t:.2f}" for t in bg_run.times)
        speed += [
            (
                f"bg.fit (median of {len(bg_run.times)}: {reps} s)",
                f"{bg_run.seconds:.3f} s (CPU {bg_run.cpu_seconds:.3f} s)",
            ),
            (
                "bg.fit / L",
                f"{bg_run.seconds / L:.1f} (CPU time: {bg_run.cpu_seconds / L_cpu:.1f})",
            ),
        ]
    else:
        speed.append(("bg.fit", f"failed: {bg_error}"))
    if peer.available:
        speed += [
            (
                f"PyDESeq2 {peer.info.get('version', '')} fit (n_cpus={args.n_cpus})",
                f"{peer.seconds:.3f} s",
            ),
            ("PyDESeq2 / L", f"{peer.seconds / L:.1f}"),
        ]
        if bg_run is not None:
            speed.append(("PyDESeq2 / batchglm", f"{peer.seconds / bg_run.seconds:.2f}"))
    else:
        speed.append(("PyDESeq2", f"not available: {peer.reason}"))

    # ---- accuracy table ---------------------------------------------------------------
    acc: list[tuple[str, str]] = []
    if bg_run is not None:
        ll_bg_check = loglik_at(data, bg_run.coef_loc, bg_run.log_r)
        # At r = 1e8 (status scale_at_bound) the gammaln formula above cancels badly
        # (gammaln(1e8) ~ 1.7e9), so the self-check is restricted to converged features.
        conv = bg_run.status_per_feature == "converged"
        acc += [
            ("batchglm status", ", ".join(f"{k}: {v}" for k, v in bg_run.status.items())),
            ("batchglm warnings", str(bg_run.n_warnings)),
            (
                "max abs(res.loglik - loglik recomputed here), converged",
                fmt(float(np.nanmax(np.abs(bg_run.loglik - ll_bg_check)[conv], initial=0.0))),
            ),
            ("sum loglik: batchglm - truth", fmt(float(np.sum(bg_run.loglik - ll_truth)))),
            (
                "features batchglm loglik >= truth - 1e-6",
                f"{int(np.sum(bg_run.loglik >= ll_truth - LL_TOL))} / {n_features}",
            ),
            ("RMSD loc coefs to truth: batchglm", fmt(rmsd(bg_run.coef_loc, data.coef_loc), 4)),
            (
                "RMSD condition coef to truth: batchglm",
                fmt(rmsd(bg_run.coef_loc[:, 1], data.coef_loc[:, 1]), 4),
            ),
            (
                "RMSD dispersion 1/r to truth: batchglm",
                fmt(rmsd(np.exp(-bg_run.log_r), np.exp(-data.log_r)), 4),
            ),
            (
                "median abs(log r - truth): batchglm",
                fmt(float(np.median(np.abs(bg_run.log_r - data.log_r))), 4),
            ),
        ]
    if peer.available and peer.coef_loc is not None and peer.log_r is not None:
        with np.errstate(all="ignore"):
            ll_pd = loglik_at(data, peer.coef_loc, peer.log_r)
        finite = np.isfinite(ll_pd)
        acc += [
            ("RMSD loc coefs to truth: PyDESeq2", fmt(rmsd(peer.coef_loc, data.coef_loc), 4)),
            (
                "RMSD condition coef to truth: PyDESeq2",
                fmt(rmsd(peer.coef_loc[:, 1], data.coef_loc[:, 1]), 4),
            ),
            (
                "RMSD dispersion 1/r to truth: PyDESeq2 (MAP)",
                fmt(rmsd(np.exp(-peer.log_r), np.exp(-data.log_r)), 4),
            ),
            (
                "median abs(log r - truth): PyDESeq2 (MAP)",
                fmt(float(np.nanmedian(np.abs(peer.log_r - data.log_r))), 4),
            ),
        ]
        if peer.log_r_genewise is not None:
            acc += [
                (
                    "RMSD dispersion 1/r to truth: PyDESeq2 (gene-wise)",
                    fmt(rmsd(np.exp(-peer.log_r_genewise), np.exp(-data.log_r)), 4),
                ),
                (
                    "median abs(log r - truth): PyDESeq2 (gene-wise)",
                    fmt(float(np.nanmedian(np.abs(peer.log_r_genewise - data.log_r))), 4),
                ),
            ]
        acc.append(("PyDESeq2 features with finite loglik", f"{int(finite.sum())} / {n_features}"))
        if bg_run is not None:
            diff = bg_run.loglik - ll_pd
            fd = diff[finite]
            acc += [
                (
                    "features batchglm loglik >= PyDESeq2 - 1e-6",
                    f"{int(np.sum(fd >= -LL_TOL))} / {int(finite.sum())}",
                ),
                ("loglik batchglm - PyDESeq2: sum", fmt(float(fd.sum()))),
                ("loglik batchglm - PyDESeq2: median", fmt(float(np.median(fd)), 4)),
                (
                    "loglik batchglm - PyDESeq2: min / max",
                    f"{fmt(float(fd.min()), 4)} / {fmt(float(fd.max()), 4)}",
                ),
            ]

    # ---- output -----------------------------------------------------------------------
    info = machine_info()
    print()
    print(md_table(speed, ("speed", "value")))
    print()
    if acc:
        print(md_table(acc, ("accuracy", "value")))
        print()
    for line in log:
        print(f"[bench] {line}")

    lines = [
        "# batchglm core benchmark",
        "",
        f"* date: {started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"* machine: {info['cpu']}, nproc = {info['nproc']} ({info['platform']})",
        f"* software: python {info['python']}, numpy {info['numpy']}, scipy {info['scipy']}, "
        f"batchglm {info['batchglm']}"
        + (f", pydeseq2 {peer.info.get('version')}" if peer.available else ""),
        f"* command: `{command or 'run.main(...)'}`",
        f"* data: seed {args.seed}; location design intercept + condition (2 levels) + batch "
        "(4 levels, 3 dummies, crossed with condition); intercept-only scale; lognormal "
        "size factors (sd 0.3, geometric mean 1); intercept log-means uniform in "
        "[log 0.2, log 16], effects uniform in [-0.3, 0.3], NB size r integer 1..10.",
        "* L: one evaluation of the full NB log-likelihood (mu from the linear predictor, "
        "`gammaln` terms, summed per feature) over the dense matrix at the true parameters, "
        "median of 3.",
        "* bg.fit: `bg.fit(counts, design, size_factors=sf, progress=False)`, wall time, "
        f"median of up to {args.repeats} repeats.",
    ]
    if not args.no_peers:
        lines.append(
            f"* PyDESeq2: separate venv, subprocess, `DefaultInference(n_cpus={args.n_cpus})`, "
            "design `~condition + batch`, our size factors installed in place of its "
            "size-factor step, `refit_cooks=False`; timed: gene-wise dispersions, trend, "
            "prior, MAP dispersions, LFCs, Cook's distances. Its log-likelihood is that of "
            "its LFCs (natural log) with its final (MAP) dispersions, computed here."
        )
    lines += ["", "## Speed", "", md_table(speed, ("speed", "value")), ""]
    if acc:
        lines += ["## Accuracy", "", md_table(acc, ("accuracy", "value")), ""]
    if log:
        lines += ["## Notes", "", *[f"* {ln}" for ln in log], ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))
    print(f"[bench] wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0 if bg_run is not None else 1


if __name__ == "__main__":
    sys.exit(main())
