"""Where ``bg.de.test(method="ql")`` and edgeR's ``glmQLFit``/``glmQLFTest`` differ, on real counts.

Not part of ``make test``. Uses the stored edgeR 3.40 references of
``benchmarks/ql_reference.R`` (``tests/data/edger_*_ql.csv.gz``: edgeR defaults, and edgeR's
QL step at *our* trended NB dispersions) on the Marioni (5 vs 5) and Sultan (2 vs 2) tables,
and runs our QL test four ways:

* ``bg.de.test(method="ql", size_factors="tmm")``, the pipeline (Cook's, filtering);
* ``bg.de.ql_f`` at our trend (DESeq2's ``a0 + a1 / mean``, ``dispersion/trend.py``);
* ``bg.de.ql_f(trend="local")`` (a local fit through the same gene-wise MLEs);
* ``bg.de.ql_f`` with the NB dispersions held at edgeR's ``trended.dispersion``
  (``estimateDisp``'s weighted-likelihood locfit trend), our QL step unchanged.

With edgeR's QL step at both trends this gives a 2 x 2 table (NB trend x QL step) and
separates the trend's share of the difference from the QL step's. Prints markdown
(``docs/validation.md``, "The QL test against edgeR and glmGamPoi"). Run from the
repository root: ``.venv/bin/python benchmarks/ql_trend_edger.py``.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.stats import false_discovery_control

import batchglm as bg
from batchglm.de.separation import separated_in_direction
from batchglm.dispersion.estimate import estimate_dispersions

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"marioni": ("tissue", "Kidney", "Liver"), "sultan": ("cell", "HEK293T", "Ramos")}


def _load(name: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    counts = pd.read_csv(DATA / f"deseq2_{name}_counts.csv.gz", index_col=0).T
    coldata = pd.read_csv(DATA / f"deseq2_{name}_coldata.csv", index_col=0)
    factor, ref_level, level = SETS[name]
    coldata[factor] = pd.Categorical(coldata[factor], categories=[ref_level, level])
    base_mean = pd.read_csv(DATA / f"deseq2_{name}_results.csv.gz", index_col=0)["baseMean"]
    return counts, coldata, base_mean.to_numpy()


def _compare(p_a, p_b, lfc_a, lfc_b, base_mean, keep, genes) -> dict[str, float]:
    ok = np.isfinite(p_a) & np.isfinite(p_b)
    k = ok & keep
    rho = float(stats.spearmanr(p_a[k], p_b[k]).statistic)
    finite = (np.abs(lfc_a) < 15) & (np.abs(lfc_b) < 15) & (base_mean >= 10)
    diff = np.abs(lfc_a - lfc_b)[finite]
    pa = false_discovery_control(np.where(ok, p_a, 1.0))
    pb = false_discovery_control(np.where(ok, p_b, 1.0))
    sa, sb = set(genes[(pa < 0.05) & k]), set(genes[(pb < 0.05) & k])
    return {
        "spearman": rho,
        "lfc_median": float(np.median(diff)),
        "lfc_max": float(diff.max()),
        "lfc_le_1e-2": float(np.mean(diff <= 1e-2)),
        "jaccard": len(sa & sb) / max(len(sa | sb), 1),
    }


def run(name: str) -> list[tuple[str, dict[str, float]]]:
    counts, coldata, base_mean = _load(name)
    factor, _, level = SETS[name]
    coef = f"{factor}[T.{level}]"
    edger = pd.read_csv(DATA / f"edger_{name}_ql.csv.gz", index_col=0)
    genes = counts.columns
    ln2 = np.log(2)
    res = bg.fit(counts, f"~ {factor}", obs=coldata, size_factors="tmm")
    ours = bg.de.ql_f(res, coef=coef)
    keep = ~separated_in_direction(res, np.array([[0.0, 1.0]]))
    pipe = bg.de.test(
        counts, f"~ {factor}", obs=coldata, coef=coef, method="ql", size_factors="tmm"
    )
    # Our QL step at edgeR's trended NB dispersions: the estimates cached on the fit with
    # their trend replaced (shrunken_fit reuses them).
    res2 = bg.fit(counts, f"~ {factor}", obs=coldata, size_factors="tmm")
    disp = estimate_dispersions(res2.data, res2, shrink=False)
    at_edger = dataclasses.replace(disp, trend=edger["trendedDispersion"].to_numpy())
    res2.derived[("dispersions", "parametric")] = at_edger
    ours_et = bg.de.ql_f(res2, coef=coef)
    local = bg.de.ql_f(res, coef=coef, trend="local")
    o_loc = (local.pval, local.coef_mle / ln2)
    e_def = (edger["PValue"].to_numpy(), edger["logFCUnshrunk"].to_numpy())
    e_our = (edger["PValue_atOurTrend"].to_numpy(), edger["logFCUnshrunk_atOurTrend"].to_numpy())
    o_our = (ours.pval, ours.coef_mle / ln2)
    o_et = (ours_et.pval, ours_et.coef_mle / ln2)
    o_pipe = (np.asarray(pipe.pval), np.asarray(pipe.coef_mle) / ln2)
    rows = [
        ("pipeline `bg.de.test(method='ql')` vs edgeR defaults", _cmp(o_pipe, e_def)),
        ("`ql_f` at our trend vs edgeR defaults", _cmp(o_our, e_def)),
        ("QL step only: both at our NB trend", _cmp(o_our, e_our)),
        ("QL step only: both at edgeR's NB trend", _cmp(o_et, e_def)),
        ("NB trend only, our QL step: ours vs edgeR's trend", _cmp(o_our, o_et)),
        ("NB trend only, edgeR's QL step", _cmp(e_our, e_def)),
        ("`ql_f(trend='local')` vs edgeR defaults", _cmp(o_loc, e_def)),
    ]
    out = []
    for label, (a, b) in rows:
        out.append((label, _compare(a[0], b[0], a[1], b[1], base_mean, keep, genes)))
    ratio = disp.trend / edger["trendedDispersion"].to_numpy()
    print(f"{name}: NB trend ours / edgeR median {np.median(ratio):.3g}; ")
    print(
        f"  var_post ours@edgeR trend / edgeR median "
        f"{np.nanmedian(ours_et.ql_dispersion / edger['varPost'].to_numpy()):.3g}; "
        f"df_prior edgeR {edger['dfPrior'].median():.3g}"
    )
    return out


def _cmp(a, b):
    return a, b


def main() -> None:
    warnings.simplefilter("ignore")
    for name in sorted(SETS):
        rows = run(name)
        print(f"\n{name}\n")
        print(
            "| comparison | Spearman p (not sep.) | abs log2FC diff median; max; <= 1e-2 "
            "| Jaccard |"
        )
        print("|---|---:|---|---:|")
        for label, m in rows:
            print(
                f"| {label} | {m['spearman']:.4f} | {m['lfc_median']:.1e}; {m['lfc_max']:.1e}; "
                f"{100 * m['lfc_le_1e-2']:.1f} % | {m['jaccard']:.3f} |"
            )


if __name__ == "__main__":
    main()
