"""Null calibration of tests on separated low-count genes, with and without the NB floor.

Not part of ``make test``. Simulates null NB tables (3000 genes, means log-uniform on
0.2..1000, dispersions ``(0.05 + 1 / mean) exp(N(0, 0.3^2))``, size factors
``exp(N(0, sd^2))``) for 2 vs 2 to 10 vs 10 samples, and reports the share of p < 0.05 among
null genes with true mean < 2 and one group all zero ("separated"), among all genes with
mean < 2, and among all genes, for

* ``bg.de.ql_f`` without and with the zero-side floor (``de/zero_side.py``);
* ``bg.de.wald(dispersion="map")`` with the Poisson floor (the NB floor's limit, used
  before) and with the NB floor;
* edgeR ``glmQLFTest``, glmGamPoi ``test_de`` and edgeR ``exactTest`` when ``Rscript`` with
  those packages is on the path (``benchmarks/separated_floor_refs.R``).

Run from the repository root::

    .venv/bin/python benchmarks/separated_floor_calibration.py

Prints markdown tables (``docs/validation.md``, "Separated genes").
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import batchglm as bg
import batchglm.de.ql as ql_module
import batchglm.de.separation as separation_module

LAYOUTS = [(21, 2, 0.2), (22, 3, 0.2), (25, 3, 0.5), (23, 5, 0.2), (26, 5, 0.5), (24, 10, 0.2)]
LAYOUTS += [(27, 10, 0.5)]
N_GENES = 3000


def simulate(folder: Path) -> list[str]:
    """Write the null tables (counts, size factors and groups, truth) to ``folder``."""
    tags = []
    for seed, nrep, sf_sd in LAYOUTS:
        rng = np.random.default_rng(seed)
        n = 2 * nrep
        mean = np.exp(rng.uniform(np.log(0.2), np.log(1000), N_GENES))
        alpha = (0.05 + 1 / mean) * np.exp(rng.normal(0, 0.3, N_GENES))
        sf = np.exp(rng.normal(0, sf_sd, n))
        sf /= np.exp(np.mean(np.log(sf)))
        r = 1 / alpha[None, :]
        y = rng.negative_binomial(r, r / (r + sf[:, None] * mean[None, :]))
        tag = f"{nrep}v{nrep}_sf{sf_sd}_s{seed}"
        cols = [f"s{i}" for i in range(n)]
        pd.DataFrame(y.T, columns=cols).to_csv(folder / f"{tag}_counts.csv", index=False)
        groups = ["A"] * nrep + ["B"] * nrep
        pd.DataFrame({"sf": sf, "group": groups}).to_csv(folder / f"{tag}_coldata.csv", index=False)
        pd.DataFrame({"mean": mean}).to_csv(folder / f"{tag}_truth.csv", index=False)
        tags.append(tag)
    return tags


def ours(y: np.ndarray, coldata: pd.DataFrame) -> dict[str, np.ndarray]:
    """Our p-values with and without the floor (the floor swapped out for the comparison)."""
    obs = pd.DataFrame({"c": coldata["group"].to_numpy()}, index=[f"s{i}" for i in range(len(y))])
    res = bg.fit(y, "~ c", obs=obs, size_factors=coldata["sf"].to_numpy())
    out = {}
    kept_floor, kept_disp = ql_module.ql_floor, separation_module.null_dispersion
    try:
        ql_module.ql_floor = lambda *a, **k: np.zeros(y.shape[1])  # type: ignore[assignment]
        out["ql_f, no floor"] = bg.de.ql_f(res, coef="c[T.B]", data=y).pval
        ql_module.ql_floor = kept_floor
        out["ql_f, NB floor"] = bg.de.ql_f(res, coef="c[T.B]", data=y).pval
        separation_module.null_dispersion = (  # type: ignore[assignment]
            lambda fit, pos, mu, phi=None: 0.0 * kept_disp(fit, pos, mu, None)
        )
        out["wald map, Poisson floor"] = bg.de.wald(
            res, coef="c[T.B]", dispersion="map", data=y
        ).pval
        separation_module.null_dispersion = kept_disp
        out["wald map, NB floor"] = bg.de.wald(res, coef="c[T.B]", dispersion="map", data=y).pval
    finally:
        ql_module.ql_floor, separation_module.null_dispersion = kept_floor, kept_disp
    return out


def main() -> None:
    """Simulate, test, print the tables."""
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tags = simulate(folder)
        script = Path(__file__).with_name("separated_floor_refs.R")
        if shutil.which("Rscript"):
            subprocess.run(["Rscript", str(script), str(folder)], check=True)
        rows = []
        for tag in tags:
            y = pd.read_csv(folder / f"{tag}_counts.csv").to_numpy().T.astype(float)
            coldata = pd.read_csv(folder / f"{tag}_coldata.csv")
            mean = pd.read_csv(folder / f"{tag}_truth.csv")["mean"].to_numpy()
            pvals = ours(y, coldata)
            refs = folder / f"{tag}_refs.csv"
            if refs.exists():
                ref = pd.read_csv(refs)
                pvals["edgeR glmQLFTest"] = ref["edger"].to_numpy()
                pvals["glmGamPoi test_de"] = ref["gampoi"].to_numpy()
                pvals["edgeR exactTest"] = ref["exact"].to_numpy()
            b = (coldata["group"] == "B").to_numpy()
            sep = ((y[b].sum(0) == 0) | (y[~b].sum(0) == 0)) & (y.sum(0) > 0)
            low = mean < 2
            for method, p in pvals.items():
                ok = np.isfinite(p)
                rows.append(
                    {
                        "layout": tag.rsplit("_", 1)[0].replace("_sf", ", sf sd "),
                        "n": int((sep & low & ok).sum()),
                        "method": method,
                        "separated, mean < 2": np.mean(p[sep & low & ok] < 0.05),
                        "mean < 2": np.mean(p[low & ok] < 0.05),
                        "all": np.mean(p[ok] < 0.05),
                    }
                )
        power = [on_off_power(folder, tag) for tag in tags]
    table = pd.DataFrame(rows)
    for col in ("separated, mean < 2", "mean < 2", "all"):
        wide = table.pivot(index=["layout", "n"], columns="method", values=col)
        wide = wide.reindex(index=table[["layout", "n"]].drop_duplicates().apply(tuple, axis=1))
        methods = list(dict.fromkeys(table["method"]))
        print(f"\nShare of p < 0.05, {col}:\n")
        print("| layout | n separated | " + " | ".join(methods) + " |")
        print("|---" * (len(methods) + 2) + "|")
        for (layout, n), row in wide[methods].iterrows():
            print(f"| {layout} | {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |")

    print("\nOn/off genes (60 per layout, NB mean 10-200 in group A, 0 in B, added to the")
    print("null table): share of p < 0.05 and largest p:\n")
    methods = list(power[0][1])
    print("| layout | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for layout, res in power:
        cells = [f"{np.mean(p < 0.05):.2f}; {np.max(p):.1e}" for p in res.values()]
        print(f"| {layout} | " + " | ".join(cells) + " |")


def on_off_power(folder: Path, tag: str) -> tuple[str, dict[str, np.ndarray]]:
    """p-values of 60 on/off genes added to a null table (their floor must not bind)."""
    y = pd.read_csv(folder / f"{tag}_counts.csv").to_numpy().T.astype(float)
    coldata = pd.read_csv(folder / f"{tag}_coldata.csv")
    rng = np.random.default_rng(int(tag.rsplit("_s", 1)[1]) + 1000)
    on = np.exp(rng.uniform(np.log(10), np.log(200), 60))
    mu = coldata["sf"].to_numpy()[:, None] * on[None, :]
    mu[(coldata["group"] == "B").to_numpy()] = 0.0
    r = 1 / (0.05 + 1 / on)[None, :]
    y_on = rng.negative_binomial(r, r / (r + mu)).astype(float)
    pvals = ours(np.hstack([y, y_on]), coldata)
    layout = tag.rsplit("_", 1)[0].replace("_sf", ", sf sd ")
    return layout, {k: v[-60:] for k, v in pvals.items()}


if __name__ == "__main__":
    main()
