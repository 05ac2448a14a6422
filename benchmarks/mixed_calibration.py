"""Calibration and power of cell-level tests with donors nested in the condition.

4 vs 4 donors, 50-200 cells per donor, donor variance 0.05-0.3 (natural-log scale), NB
counts; ``--null`` null genes and ``--de`` genes with a condition effect of
``log(--fold)``. Compared on the same data:

* mixed Wald: ``bg.fit(..., random_effects="donor")`` + ``bg.de.wald``, moderated (the
  default: empirical-Bayes group-level variance, :mod:`batchglm.mixed.moderation`) and
  with ``moderate=False`` (t reference with between-within df and the ML-to-REML factor),
* mixed Wald, REML: ``bg.fit(..., random_effects="donor", reml=True)`` + ``bg.de.wald``
  with ``moderate=False`` (t reference with between-within df; the variance is already
  REML),
* mixed LRT: two mixed fits + ``bg.de.lrt`` (Bartlett-type F reference), and the same LR
  statistics with the moderated reference (``moderated_sf(..., statistic="lrt")``),
* fixed donors: ``constraints_loc={"donor": "condition"}`` + ``bg.de.wald``
  (pseudoreplication; it warns),
* pseudobulk: ``bg.pseudobulk`` by donor + ``bg.de.ql_f``.

Reports the rejection rate of null genes at 0.05, the KS p-value of their p-values against
the uniform, and power (share of DE genes with BH q < 0.05) with the observed FDR.
``--cells`` also takes ``"unequal3"``: 3 vs 3 donors with 500/100/20 cells per condition.

Run: ``PYTHONPATH=src python benchmarks/mixed_calibration.py``; writes
``benchmarks/results/mixed_calibration.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

# benchmarks/sparse.py would shadow the `sparse` package that anndata's dask support imports.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

import batchglm as bg  # noqa: E402
from batchglm.mixed.moderation import moderated_sf, variance_prior  # noqa: E402


def donor_sizes(rng: np.random.Generator, per_group: int, cells: str) -> np.ndarray:
    """Cells per donor: ``"lo-hi"`` draws uniformly; ``"unequal"`` gives each condition one
    donor with 600 cells and the others 20 (the layout of the known boundary problem)."""
    if cells == "unequal":
        return np.tile(np.r_[600, np.full(per_group - 1, 20)], 2)
    if cells == "unequal3":
        return np.tile(np.geomspace(500, 20, per_group).round().astype(int), 2)
    lo, hi = (int(c) for c in cells.split("-"))
    return rng.integers(lo, hi + 1, 2 * per_group)


def simulate(
    n_null: int,
    n_de: int,
    fold: float,
    seed: int,
    per_group: int = 4,
    cells: str = "50-200",
    var: tuple[float, float] = (0.05, 0.3),
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cell-level counts and obs; the last ``n_de`` genes have the condition effect."""
    rng = np.random.default_rng(seed)
    n_donors = 2 * per_group
    sizes = donor_sizes(rng, per_group, cells)
    gid = np.repeat(np.arange(n_donors), sizes)
    stim = gid >= per_group
    obs = pd.DataFrame(
        {"donor": [f"d{g}" for g in gid], "condition": np.where(stim, "stim", "ctrl")},
        index=[f"c{i}" for i in range(gid.size)],
    )
    n = n_null + n_de
    u = rng.normal(size=(n_donors, n)) * np.sqrt(rng.uniform(var[0], var[1], n))
    effect = np.r_[np.zeros(n_null), np.full(n_de, np.log(fold))]
    mu = np.exp(rng.uniform(-1.0, 1.5, n) + u[gid] + stim[:, None] * effect)
    size = rng.uniform(2.0, 10.0, n)
    return rng.negative_binomial(size, size / (size + mu)).astype(np.float64), obs


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values, NaN left out."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    n = ok.sum()
    order = np.argsort(p[ok])
    ranked = p[ok][order] * n / np.arange(1, n + 1)
    qs = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(qs, 1.0)
    q[ok] = out
    return q


def _row(name: str, pval: np.ndarray, qval: np.ndarray, n_null: int, seconds: float) -> str:
    null, de = pval[:n_null], qval[n_null:]
    null = null[np.isfinite(null)]
    hits = np.nan_to_num(qval, nan=1.0) < 0.05
    fdr = hits[:n_null].sum() / max(hits.sum(), 1)
    power_p = (np.nan_to_num(pval[n_null:], nan=1.0) < 0.05).mean()
    return (
        f"| {name} | {(null < 0.05).mean():.3f} | {stats.kstest(null, 'uniform').pvalue:.3g}"
        f" | {power_p:.3f} | {(np.nan_to_num(de, nan=1.0) < 0.05).mean():.3f} | {fdr:.3f}"
        f" | {seconds:.0f} |"
    )


def main() -> None:
    """Run every method on one data set and write the markdown table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--null", type=int, default=1500)
    ap.add_argument("--de", type=int, default=300)
    ap.add_argument("--fold", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--donors", type=int, default=4, help="donors per condition")
    ap.add_argument("--cells", default="50-200", help='"lo-hi" cells per donor, or "unequal"')
    ap.add_argument("--var", default="0.05-0.3", help="range of the donor variance")
    ap.add_argument("--out", default="mixed_calibration.md")
    args = ap.parse_args()
    var = tuple(float(v) for v in args.var.split("-"))
    y, obs = simulate(
        args.null, args.de, args.fold, args.seed, args.donors, args.cells, (var[0], var[1])
    )
    coef = "condition[T.stim]"
    rows = []
    t0 = time.perf_counter()
    full = bg.fit(y, "~ condition", obs=obs, random_effects="donor")
    t_full = time.perf_counter() - t0
    wm = w = bg.de.wald(full, coef=coef).summary()
    prior = variance_prior(full)
    rows.append(
        _row(
            f"mixed, Wald, moderated (default; prior df {prior.df_prior:.1f})",
            w["pvalue"].to_numpy(),
            w["padj"].to_numpy(),
            args.null,
            t_full,
        )
    )
    w = bg.de.wald(full, coef=coef, moderate=False).summary()
    rows.append(
        _row(
            "mixed, Wald, `moderate=False` (t, between-within df)",
            w["pvalue"].to_numpy(),
            w["padj"].to_numpy(),
            args.null,
            t_full,
        )
    )
    # The same fit with the cell-level test also where the variance is 0 (before the
    # boundary-aware reference of batchglm.mixed.small_sample.donor_level_sf).
    assert full.small_sample is not None
    plain = dataclasses.replace(
        full,
        small_sample=dataclasses.replace(full.small_sample, donor_resid=None, moderate=False),
    )
    wp = bg.de.wald(plain, coef=coef).summary()
    rows.append(
        _row(
            "mixed, Wald, cell-level test at variance 0",
            wp["pvalue"].to_numpy(),
            wp["padj"].to_numpy(),
            args.null,
            t_full,
        )
    )
    at_zero = (full.status == "random_var_at_bound").to_numpy()[: args.null]
    t0 = time.perf_counter()
    full_reml = bg.fit(y, "~ condition", obs=obs, random_effects="donor", reml=True)
    t_reml = time.perf_counter() - t0
    wr = bg.de.wald(full_reml, coef=coef, moderate=False).summary()
    rows.append(
        _row(
            "mixed, REML, Wald (t, between-within df)",
            wr["pvalue"].to_numpy(),
            wr["padj"].to_numpy(),
            args.null,
            t_reml,
        )
    )
    both = ((full.status == "converged") & (full_reml.status == "converged")).to_numpy()
    ratio = full_reml.random_var.to_numpy()[both, 0] / full.random_var.to_numpy()[both, 0]
    reml_note = (
        f"REML / ML donor variance (genes converged in both): median {np.median(ratio):.2f}; "
        f"REML status: {full_reml.status.value_counts().to_dict()}."
    )

    def rate(p: np.ndarray, zero: bool = True) -> str:
        pick = at_zero if zero else ~at_zero & np.isfinite(p[: args.null])
        return f"{(p[: args.null][pick] < 0.05).mean():.3f}" if pick.any() else "-"

    zero_note = (
        f"Null genes with variance at 0: {at_zero.sum()}; their rejection at 0.05: "
        f"{rate(wm['pvalue'].to_numpy())} moderated, {rate(w['pvalue'].to_numpy())} with "
        f"`moderate=False`, {rate(wp['pvalue'].to_numpy())} with the cell-level test; "
        f"rejection of the other null genes: {rate(wm['pvalue'].to_numpy(), False)} "
        f"moderated, {rate(w['pvalue'].to_numpy(), False)} with `moderate=False`."
    )
    t0 = time.perf_counter()
    reduced = bg.fit(y, "~ 1", obs=obs, random_effects="donor")
    t_red = time.perf_counter() - t0
    lr_de = bg.de.lrt(full=full, reduced=reduced)
    lr = lr_de.summary()
    rows.append(
        _row(
            "mixed, LRT (Bartlett-type F)",
            lr["pvalue"].to_numpy(),
            lr["padj"].to_numpy(),
            args.null,
            t_full + t_red,
        )
    )
    lmat = np.zeros((1, 2))
    lmat[0, 1] = 1.0
    lr_mod = moderated_sf(full, lmat, 1, statistic="lrt")(np.nan_to_num(lr_de.stat))
    lr_mod = np.where(np.isfinite(lr["pvalue"].to_numpy()), lr_mod, np.nan)
    rows.append(
        _row(
            "mixed, LRT, moderated",
            lr_mod,
            _bh(lr_mod),
            args.null,
            t_full + t_red,
        )
    )
    t0 = time.perf_counter()
    fixed = bg.fit(y, "~ condition + donor", obs=obs, constraints_loc={"donor": "condition"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fw = bg.de.wald(fixed, coef=coef).summary()
    rows.append(
        _row(
            "fixed donors (constraints), Wald",
            fw["pvalue"].to_numpy(),
            fw["padj"].to_numpy(),
            args.null,
            time.perf_counter() - t0,
        )
    )
    t0 = time.perf_counter()
    adata = ad.AnnData(X=y, obs=obs)
    pb = bg.pseudobulk(adata, sample="donor")
    pres = bg.fit(pb, "~ condition", size_factors="median_ratio")
    q = bg.de.ql_f(pres, coef=coef, data=pb).summary()
    rows.append(
        _row(
            "pseudobulk, ql_f",
            q["pvalue"].to_numpy(),
            q["padj"].to_numpy(),
            args.null,
            time.perf_counter() - t0,
        )
    )
    lines = [
        "# Cell-level tests with donors nested in condition: calibration and power",
        "",
        f"{args.donors} vs {args.donors} donors, {args.cells} cells each ({y.shape[0]} cells), "
        f"donor variance {args.var}, "
        f"{args.null} null genes, {args.de} genes with fold change {args.fold} (seed "
        f"{args.seed}). Mixed status: {full.status.value_counts().to_dict()}.",
        "",
        "| method | null rejection at 0.05 | KS p (null) | power (p < 0.05) | power (q < 0.05)"
        " | FDR (q < 0.05) | s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        zero_note,
        "",
        reml_note,
        "",
    ]
    out = Path(__file__).parent / "results" / args.out
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
