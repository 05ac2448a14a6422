"""Small-sample validation: calibration, agreement with DESeq2/edgeR/glmGamPoi, FDR, power.

Not part of ``make test``. For 3 vs 3 and 5 vs 5 samples it simulates two data sets of NB
counts (means log-uniform on 5..1000, dispersions ``(0.05 + 1 / mean)`` times log-normal
scatter with SD 0.3, size factors ``exp(N(0, 0.2^2))``): a null set (no effect) and a set
where 10% of the features change by a factor 2..4. Every tool gets the same counts and the
median-ratio size factors computed by batchglm.

* batchglm: ``wald`` with ``dispersion="mle"`` and ``"map"``, ``ql_f``;
* PyDESeq2 0.5 (in ``.bench-venv``, run as a subprocess of this script);
* R: DESeq2, edgeR (``glmQLFit``/``glmQLFTest``), glmGamPoi (``glm_gp``/``test_de``), via
  ``benchmarks/validate_r/*.R``.

Run from the repository root::

    .venv/bin/python benchmarks/validate_small_samples.py --out docs/validation.md

Tools that are missing are skipped (their rows say so).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
R_DIR = Path(__file__).resolve().parent / "validate_r"
BENCH_PY = ROOT / ".bench-venv" / "bin" / "python"


def simulate(n_per_group: int, n_features: int, de_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    mean = np.exp(rng.uniform(np.log(5.0), np.log(1000.0), n_features))
    alpha = (0.05 + 1.0 / mean) * np.exp(rng.normal(0.0, 0.3, n_features))
    lfc = np.zeros(n_features)
    n_de = int(round(de_fraction * n_features))
    lfc[:n_de] = rng.choice([-1.0, 1.0], n_de) * np.log(rng.uniform(2.0, 4.0, n_de))
    sf = np.exp(rng.normal(0.0, 0.2, n))
    cond = np.repeat([0.0, 1.0], n_per_group)
    m = sf[:, None] * mean[None, :] * np.exp(np.outer(cond, lfc))
    y = rng.negative_binomial(1.0 / alpha, 1.0 / (1.0 + alpha * m)).astype(np.int64)
    return y, cond, alpha, lfc != 0


def write_inputs(d: Path, y: np.ndarray, cond: np.ndarray, sf: np.ndarray) -> None:
    names = [f"s{i}" for i in range(y.shape[0])]
    pd.DataFrame(y.T, index=[f"g{j}" for j in range(y.shape[1])], columns=names).to_csv(
        d / "counts.csv"
    )
    pd.DataFrame({"sample": names, "condition": np.where(cond > 0, "B", "A"), "sf": sf}).to_csv(
        d / "samples.csv", index=False
    )


def pydeseq2_worker(d: Path) -> None:
    """Run inside .bench-venv: PyDESeq2 with the given size factors."""
    import warnings

    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    warnings.filterwarnings("ignore")
    counts = pd.read_csv(d / "counts.csv", index_col=0).T
    samples = pd.read_csv(d / "samples.csv", index_col=0)
    inference = DefaultInference(n_cpus=2)
    dds = DeseqDataSet(
        counts=counts,
        metadata=samples[["condition"]],
        design="~condition",
        refit_cooks=False,
        inference=inference,
        quiet=True,
    )
    sf = samples["sf"].to_numpy()
    dds.obs["size_factors"] = sf
    dds.layers["normed_counts"] = dds.X / sf[:, None]
    dds.var["_normed_means"] = dds.layers["normed_counts"].mean(axis=0)
    dds.fit_genewise_dispersions()
    dds.fit_dispersion_trend()
    dds.fit_dispersion_prior()
    dds.fit_MAP_dispersions()
    dds.fit_LFC()
    ds = DeseqStats(
        dds,
        contrast=["condition", "B", "A"],
        cooks_filter=False,
        independent_filter=False,
        inference=inference,
        quiet=True,
    )
    ds.summary()
    pd.DataFrame(
        {
            "pval": ds.results_df["pvalue"].to_numpy(),
            "dispersion": np.asarray(dds.var["dispersions"], dtype=float),
            "genewise": np.asarray(dds.var["genewise_dispersions"], dtype=float),
            "trend": np.asarray(dds.var["fitted_dispersions"], dtype=float),
        }
    ).to_csv(d / "pydeseq2.csv", index=False)


def run_peers(d: Path) -> dict[str, pd.DataFrame | str]:
    out: dict[str, pd.DataFrame | str] = {}
    jobs = {"pydeseq2": [str(BENCH_PY), __file__, "--pydeseq2-worker", str(d)]}
    rscript = shutil.which("Rscript")
    for tool in ("deseq2", "edger", "glmgampoi"):
        jobs[tool] = [rscript or "Rscript", str(R_DIR / f"{tool}.R"), str(d)]
    for tool, cmd in jobs.items():
        if (tool == "pydeseq2" and not BENCH_PY.exists()) or (tool != "pydeseq2" and not rscript):
            out[tool] = "not installed"
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[tool] = "failed: " + proc.stderr.strip().splitlines()[-1][:200]
            continue
        table = pd.read_csv(d / f"{tool}.csv")
        table.attrs["seconds"] = time.perf_counter() - t0
        out[tool] = table
    return out


def run_batchglm(y: np.ndarray, cond: np.ndarray, sf: np.ndarray) -> dict[str, pd.DataFrame]:
    import batchglm as bg

    x = np.column_stack([np.ones_like(cond), cond])
    yf = y.astype(float)
    res = bg.fit(yf, x, size_factors=sf)
    disp = bg.dispersion.estimate_dispersions(yf, res)
    out = {}
    mle = bg.de.wald(res, coef="p1")
    out["bg_mle"] = pd.DataFrame(
        {"pval": mle.pval, "dispersion": np.exp(-res.coef_scale.to_numpy().ravel())}
    )
    wmap = bg.de.wald(res, coef="p1", dispersion="map", data=yf)
    out["bg_map"] = pd.DataFrame(
        {"pval": wmap.pval, "dispersion": disp.map, "genewise": disp.genewise, "trend": disp.trend}
    )
    qlf = bg.de.ql_f(res, coef="p1", data=yf)
    out["bg_ql"] = pd.DataFrame(
        {
            "pval": qlf.pval,
            "dispersion": disp.trend,
            "genewise": disp.genewise,
            "ql_dispersion": qlf.ql_dispersion,
        }
    )
    return out


def bh(p: np.ndarray) -> np.ndarray:
    from scipy.stats import false_discovery_control

    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q[ok] = false_discovery_control(p[ok])
    return q


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic)


LABELS = {
    "bg_mle": "batchglm wald, dispersion='mle'",
    "bg_map": "batchglm wald, dispersion='map'",
    "bg_ql": "batchglm ql_f",
    "pydeseq2": "PyDESeq2 0.5.4 (Wald, MAP)",
    "deseq2": "DESeq2 (Wald, MAP)",
    "edger": "edgeR glmQLFit/glmQLFTest",
    "glmgampoi": "glmGamPoi glm_gp/test_de",
}
#: Which batchglm result each peer is compared with.
PARTNER = {"pydeseq2": "bg_map", "deseq2": "bg_map", "edger": "bg_ql", "glmgampoi": "bg_ql"}


def evaluate(n_per_group: int, n_features: int, seed: int, lines: list[str]) -> dict:
    import batchglm as bg

    summary: dict = {"n_per_group": n_per_group}
    for kind, frac in (("null", 0.0), ("de", 0.1)):
        y, cond, alpha, truth = simulate(n_per_group, n_features, frac, seed + (kind == "de"))
        sf = bg.size_factors(y.astype(float), "median_ratio")
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            write_inputs(d, y, cond, sf)
            t0 = time.perf_counter()
            results: dict[str, pd.DataFrame | str] = dict(run_batchglm(y, cond, sf))
            bg_seconds = time.perf_counter() - t0
            results.update(run_peers(d))
        summary[kind] = {
            "results": results,
            "truth": truth,
            "alpha": alpha,
            "bg_seconds": bg_seconds,
        }
    return summary


def report(summaries: list[dict], command: str) -> str:
    from scipy.stats import kstest

    out = [
        "# Small-sample validation",
        "",
        "Produced by",
        "",
        f"    {command}",
        "",
        "(`benchmarks/validate_small_samples.py`; R scripts in `benchmarks/validate_r/`).",
        "Data: two groups of n samples, NB counts with means log-uniform on 5..1000,",
        "dispersions `(0.05 + 1/mean) * exp(N(0, 0.3^2))`, size factors `exp(N(0, 0.2^2))`;",
        "every tool is given the same counts and batchglm's median-ratio size factors.",
        "batchglm's MAP and QL tests estimate Cox-Reid gene-wise dispersions, a parametric",
        "trend `a0 + a1/mean`, and shrink (log-normal prior, DESeq2) or moderate QL",
        "dispersions (scaled F prior with an abundance trend, edgeR). DESeq2 is run without",
        "Cook's filtering, outlier replacement or independent filtering.",
        "",
    ]
    for s in summaries:
        n = s["n_per_group"]
        null, de = s["null"], s["de"]
        out += [
            f"## {n} vs {n} samples",
            "",
            f"### Null calibration ({len(null['truth'])} null features)",
            "",
            "| method | rejected at p < 0.05 | KS p-value (uniform) | q < 0.05 |",
            "|---|---|---|---|",
        ]
        for tool, table in null["results"].items():
            if isinstance(table, str):
                out.append(f"| {LABELS[tool]} | {table} | | |")
                continue
            p = table["pval"].to_numpy()
            pf = p[np.isfinite(p)]
            out.append(
                f"| {LABELS[tool]} | {np.mean(pf < 0.05):.4f} | "
                f"{kstest(pf, 'uniform').pvalue:.3g} | {int(np.sum(bh(p) < 0.05))} |"
            )
        n_de = int(de["truth"].sum())
        out += [
            "",
            f"### FDR and power ({n_de} of {len(de['truth'])} features change 2- to "
            "4-fold), BH q < 0.05 and < 0.1",
            "",
            "| method | discoveries (0.05) | FDP (0.05) | power (0.05) | FDP (0.1) | power (0.1) |",
            "|---|---|---|---|---|---|",
        ]
        for tool, table in de["results"].items():
            if isinstance(table, str):
                out.append(f"| {LABELS[tool]} | {table} | | | | |")
                continue
            q = bh(table["pval"].to_numpy())
            row = f"| {LABELS[tool]} "
            for level in (0.05, 0.1):
                hits = q < level
                fdp = (hits & ~de["truth"]).sum() / max(hits.sum(), 1)
                power = hits[de["truth"]].mean()
                if level == 0.05:
                    row += f"| {int(hits.sum())} "
                row += f"| {fdp:.3f} | {power:.3f} "
            out.append(row + "|")
        out += [
            "",
            "### Agreement with the peers (Spearman rank correlation, DE data set)",
            "",
            "| peer | compared with | p-values | final dispersions | gene-wise dispersions |"
            " QL dispersions |",
            "|---|---|---|---|---|---|",
        ]
        for tool, partner in PARTNER.items():
            table = de["results"][tool]
            if isinstance(table, str):
                out.append(f"| {LABELS[tool]} | | {table} | | | |")
                continue
            mine = de["results"][partner]
            cells = [
                spearman(mine["pval"].to_numpy(), table["pval"].to_numpy()),
                spearman(mine["dispersion"].to_numpy(), table["dispersion"].to_numpy()),
                spearman(mine["genewise"].to_numpy(), table["genewise"].to_numpy()),
            ]
            ql = (
                spearman(mine["ql_dispersion"].to_numpy(), table["ql_dispersion"].to_numpy())
                if "ql_dispersion" in table and "ql_dispersion" in mine
                else np.nan
            )
            text = " | ".join(f"{c:.3f}" for c in [*cells, ql]).replace("nan", "-")
            out.append(f"| {LABELS[tool]} | {LABELS[partner]} | {text} |")
        out += [
            "",
            "Final dispersions: MAP for DESeq2/PyDESeq2 and batchglm `map`; the trend "
            "(NB dispersion of the QL fit) for edgeR, glmGamPoi and batchglm `ql_f`. "
            "Gene-wise: Cox-Reid MLE (edgeR: tagwise, itself shrunk).",
            "",
        ]
        errs = {
            t: np.median(np.abs(np.log(tab["dispersion"].to_numpy() / de["alpha"])))
            for t, tab in de["results"].items()
            if not isinstance(tab, str) and t in ("bg_mle", "bg_map", "pydeseq2", "deseq2")
        }
        out += [
            "Median |log(estimated / true dispersion)|: "
            + ", ".join(f"{LABELS[t]} {v:.3f}" for t, v in errs.items()),
            "",
        ]
    out += [
        "## Notes",
        "",
        "* Gene-wise dispersions of edgeR are its tagwise estimates (already shrunk by "
        "weighted likelihood), so that column compares different quantities; against "
        "glmGamPoi's and DESeq2's Cox-Reid estimates the agreement is close to 1 (below 1 "
        "for DESeq2 mainly through ties at the 1e-8 floor, which DESeq2 breaks differently).",
        "* Moderated QL dispersions are close to their prior when the prior df is large, so "
        "their ranks are decided by small differences between abundance trends (limma fits "
        "a natural spline, batchglm a polynomial of the same dimension); the F test p-values "
        "still agree at rank correlation 0.999-1.000.",
        "* glmGamPoi's NB dispersion trend is a local fit, batchglm's the parametric "
        "`a0 + a1/mean` (as DESeq2); hence the lower agreement of final dispersions.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pydeseq2-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n-per-group", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--n-features", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.pydeseq2_worker is not None:
        pydeseq2_worker(args.pydeseq2_worker)
        return 0
    summaries = [evaluate(n, args.n_features, args.seed + 10 * n, []) for n in args.n_per_group]
    command = ".venv/bin/python benchmarks/validate_small_samples.py " + " ".join(
        a for a in (sys.argv[1:] if argv is None else argv)
    )
    text = report(summaries, command.strip())
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    print(json.dumps({"bg_seconds": [s["de"]["bg_seconds"] for s in summaries]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
