"""``batchglm test --pseudobulk`` / ``--random-effects``: the replicate-aware routes of the CLI.

Each route must give what the Python API gives on the same cells (bg.pseudobulk +
bg.de.test; bg.fit(random_effects=) + bg.de.wald / bg.de.lrt), and every option that
does not fit a route is refused in one line before anything is fitted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from cli_runner import run_cli

pytestmark = pytest.mark.filterwarnings("always::UserWarning")

N_GENES = 12
COEF = ["--coef", "condition[T.stim]"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """8 donors (4 per condition), 40 cells each, donor effects on the log scale."""
    d = tmp_path_factory.mktemp("cli_replicates")
    rng = np.random.default_rng(5)
    donor = np.repeat(np.arange(8), 40)
    condition = np.where(donor < 4, "ctrl", "stim")
    lfc = np.where(np.arange(N_GENES) < 3, 1.0, 0.0)
    u = rng.normal(0.0, 0.4, (8, N_GENES))
    mu = np.exp(1.0 + u[donor] + np.outer(condition == "stim", lfc))
    y = rng.negative_binomial(4, 4 / (4 + mu))
    y[3, 7] = 500  # one outlier count: Cook's replacement refits (and warns again)
    names = [f"c{i}" for i in range(donor.size)]
    genes = [f"g{j}" for j in range(N_GENES)]
    pd.DataFrame(y, index=pd.Index(names, name="cell"), columns=genes).to_csv(d / "cells.csv")
    obs = pd.DataFrame(
        {"donor": [f"d{k}" for k in donor], "condition": condition},
        index=pd.Index(names, name="cell"),
    )
    # Shuffled rows: the CLI matches them by name.
    obs.iloc[rng.permutation(len(obs))].to_csv(d / "obs.csv")
    return d


def _data(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = pd.read_csv(workdir / "cells.csv", index_col=0)
    obs = pd.read_csv(workdir / "obs.csv", index_col=0).loc[counts.index]
    return counts, obs


BASE = ["test", "cells.csv", "--obs", "obs.csv", "--design-loc", "~ condition"]


def test_random_effects_route_matches_the_api(cells: Path, capsys) -> None:
    args = [*BASE, "--random-effects", "donor", *COEF, "--out", "re.csv"]
    code, out, err = run_cli(cells, args, capsys)
    assert code == 0, err
    # g7's planted count of 500 is a count outlier of the mixed fit (mixed/count_outliers.py):
    # status outlier, p NaN, so 11 of 12 features are tested.
    assert "random intercepts for donor" in out and "12 features, 11 tested" in out
    table = pd.read_csv(cells / "re.csv", index_col=0)
    counts, obs = _data(cells)
    sf = bg.size_factors(counts.to_numpy(), "poscounts")
    fit = bg.fit(counts, "~ condition", obs=obs, size_factors=sf, random_effects="donor")
    with pytest.warns(UserWarning, match=r"1 feature\(s\) \(g7\) of this mixed fit"):
        ref = bg.de.wald(fit, "condition[T.stim]").summary()
    assert ref.loc["g7", "status"] == "outlier" and np.isnan(table.loc["g7", "pvalue"])
    np.testing.assert_allclose(table["pvalue"], ref["pvalue"].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(table["log2FoldChange"], ref["log2FoldChange"].to_numpy(), rtol=1e-8)
    # The mixed model's SE carries the donor variance: wider than the cells-as-replicates SE.
    naive = bg.de.wald(bg.fit(counts, "~ condition", obs=obs, size_factors=sf), "condition[T.stim]")
    assert np.all(table["lfcSE"].to_numpy() > naive.summary()["lfcSE"].to_numpy())


def test_random_effects_lrt_route(cells: Path, capsys) -> None:
    args = [*BASE, "--random-effects", "donor", "--test", "lrt", "--reduced", "~ 1"]
    code, out, err = run_cli(cells, [*args, "--out", "lrt.csv"], capsys)
    assert code == 0, err
    table = pd.read_csv(cells / "lrt.csv", index_col=0)
    counts, obs = _data(cells)
    sf = bg.size_factors(counts.to_numpy(), "poscounts")
    with pytest.warns(UserWarning, match=r"1 feature\(s\) \(g7\) of this mixed fit"):
        ref = bg.de.lrt(
            counts, "~ condition", "~ 1", obs=obs, size_factors=sf, random_effects="donor"
        )
    np.testing.assert_allclose(table["pvalue"], np.asarray(ref.pval), rtol=1e-8)


def test_pseudobulk_route_matches_the_api(cells: Path, capsys) -> None:
    args = [*BASE, "--pseudobulk", "donor", "--min-cells", "10", *COEF, "--out", "pb.csv"]
    code, out, err = run_cli(cells, args, capsys)
    assert code == 0, err
    table = pd.read_csv(cells / "pb.csv", index_col=0)
    counts, obs = _data(cells)
    import anndata

    pb = bg.pseudobulk(anndata.AnnData(counts.to_numpy(np.float64), obs=obs), "donor")
    ref = bg.de.test(pb, "~ condition", coef="condition[T.stim]").summary()
    assert pb.n_obs == 8
    np.testing.assert_allclose(table["pvalue"], ref["pvalue"].to_numpy(), rtol=1e-8)
    # An independent check of the sums: donor d0's total of gene g0.
    assert pb.X[list(pb.obs_names).index("d0"), 0] == counts.loc[obs["donor"] == "d0", "g0"].sum()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--random-effects", "donor", "--pseudobulk", "donor"], "not both"),
        (["--min-cells", "5"], "--min-cells applies to --pseudobulk"),
        (["--pseudobulk", "donor", "--min-cells", "0"], "--min-cells must be >= 1, but 0"),
        (["--random-effects", "donor", "--test", "ql"], "it has no --test ql"),
        (["--random-effects", "donor", "--lfc-shrink"], "it has no --lfc-shrink"),
        (["--random-effects", "donor", "--dispersion", "map"], "it has no --dispersion map"),
        (["--random-effects", "patient"], "--random-effects 'patient' is not a column of obs"),
        (["--pseudobulk", "patient"], "--pseudobulk 'patient' is not a column of obs"),
        (["--lfc-threshold", "inf"], "must be a finite number >= 0, but inf"),
    ],
)
def test_bad_replicate_options_fail_in_one_line(cells: Path, capsys, extra, match) -> None:
    code, _, err = run_cli(cells, [*BASE, *COEF, *extra, "--out", "bad.csv"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("batchglm: error:")
    assert match in err


def test_each_warning_prints_once_and_names_the_cli_remedy(cells: Path, capsys) -> None:
    # Donors as fixed effects nested in the condition: pseudoreplicated; the outlier count
    # is replaced and the gene refit, whose test warns again.
    args = [
        *BASE[:4],
        "--design-loc",
        "~ condition + donor",
        "--constraints-loc",
        '{"donor": "condition"}',
        "--size-factors",
        "poscounts",
        *COEF,
        "--out",
        "pr.csv",
    ]
    code, _, err = run_cli(cells, args, capsys)
    assert code == 0
    lines = [line for line in err.splitlines() if "pseudoreplication" in line]
    assert len(lines) == 1, err
    assert "--random-effects COLUMN" in lines[0]


def test_python_dash_m_batchglm_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "batchglm", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("batchglm ")
