"""The ``batchglm`` console script: fit, test, simulate, and one-line errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import batchglm as bg
from batchglm.cli import main
from cli_runner import run_cli
from table_columns import RESULTS_COLUMNS

from conftest import seed_example_1

N_OBS, N_FEAT = 40, 5


def _script() -> list[str]:
    # The installed console script (pip install -e .); `python -m` only if it is missing.
    found = shutil.which("batchglm", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "batchglm.cli"]


def _obs() -> pd.DataFrame:
    q = N_OBS // 4
    return pd.DataFrame(
        {
            "condition": np.repeat(["control", "treated"], 2 * q),
            "replicate": np.repeat(["r1", "r2", "r3", "r4"], q),
            "sf": np.linspace(0.5, 1.5, N_OBS),
        },
        index=pd.Index([f"cell{i}" for i in range(N_OBS)], name="cell"),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    dmat, cons = seed_example_1(N_OBS)
    sim = bg.simulate(dmat, n_features=N_FEAT, constraints_loc=cons, seed=4)
    obs = _obs()
    adata = ad.AnnData(
        X=np.zeros((N_OBS, N_FEAT)),
        obs=obs,
        var=pd.DataFrame(index=[f"gene{j}" for j in range(N_FEAT)]),
    )
    adata.layers["counts"] = sp.csr_matrix(sim.data)
    adata.write_h5ad(d / "data.h5ad")
    obs.to_csv(d / "obs.csv")
    # Count table with features in rows, as many pipelines write them.
    pd.DataFrame(sim.data.T, index=adata.var_names, columns=obs.index).to_csv(
        d / "counts.tsv", sep="\t"
    )
    return d


RUNS = {
    "fit": [
        "fit",
        "data.h5ad",
        "--layer",
        "counts",
        "--design-loc",
        "~ 1 + condition + replicate",
        "--constraints-loc",
        '{"replicate": "condition"}',
        "--out",
        "fit.h5ad",
    ],
    "test": [
        "test",
        "data.h5ad",
        "--design-loc",
        "~ 1 + condition",
        "--coef",
        "condition[T.treated]",
        "--layer",
        "counts",
        "--out",
        "de.csv",
    ],
    "simulate": [
        "simulate",
        "--obs",
        "obs.csv",
        "--design-loc",
        "~ 1 + condition",
        "--n-features",
        "7",
        "--seed",
        "0",
        "--layer",
        "counts",
        "--out",
        "sim.h5ad",
    ],
    "missing_file": ["fit", "nope.h5ad", "--design-loc", "~ 1", "--out", "x.h5ad"],
    "unknown_variable": [
        "fit",
        "data.h5ad",
        "--layer",
        "counts",
        "--design-loc",
        "~ 1 + donor",
        "--out",
        "x.h5ad",
    ],
    "bad_layer": [
        "test",
        "data.h5ad",
        "--layer",
        "raw",
        "--design-loc",
        "~ 1 + condition",
        "--coef",
        "condition[T.treated]",
        "--out",
        "x.csv",
    ],
}


@pytest.fixture(scope="module")
def runs(workdir) -> dict[str, subprocess.CompletedProcess]:
    # All runs start at once: each process spends most of its time importing.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {
        name: subprocess.Popen(
            [*_script(), *args],
            cwd=workdir,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, args in RUNS.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_fit_writes_the_h5ad(runs, workdir):
    assert runs["fit"].returncode == 0, runs["fit"].stderr
    adata = ad.read_h5ad(workdir / "fit.h5ad")
    assert list(adata.varm["batchglm_coef_loc"].columns) == [
        "Intercept",
        "condition[T.treated]",
        "replicate[r1]",
        "replicate[r2]",
        "replicate[r3]",
        "replicate[r4]",
    ]
    assert adata.var["batchglm_converged"].all()
    assert adata.uns["batchglm"]["loc"]["constraint_spec"] == {"replicate": "condition"}
    assert "counts" in adata.layers


def test_test_writes_one_row_per_feature(runs, workdir):
    assert runs["test"].returncode == 0, runs["test"].stderr
    de = pd.read_csv(workdir / "de.csv", index_col=0)
    assert list(de.index) == [f"gene{j}" for j in range(N_FEAT)]
    assert de.index.name == "feature"
    assert list(de.columns[:7]) == list(RESULTS_COLUMNS)
    assert de["pvalue"].between(0, 1).all()


def test_simulate_writes_counts_and_truth(runs, workdir):
    assert runs["simulate"].returncode == 0, runs["simulate"].stderr
    sim = ad.read_h5ad(workdir / "sim.h5ad")
    assert sim.shape == (N_OBS, 7)
    np.testing.assert_array_equal(np.asarray(sim.layers["counts"]), np.asarray(sim.X))
    assert list(sim.varm["true_coef_loc"].columns) == ["Intercept", "condition[T.treated]"]
    assert list(sim.obs_names) == list(_obs().index)


def test_count_table_with_obs_table(workdir, capsys):
    code, _, err = run_cli(
        workdir,
        [
            "fit",
            "counts.tsv",
            "--obs",
            "obs.csv",
            "--design-loc",
            "~ 1 + condition",
            "--size-factors",
            "sf",
            "--out",
            "fit.tsv",
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(workdir / "fit.tsv", sep="\t", index_col=0)
    assert list(table.index) == [f"gene{j}" for j in range(N_FEAT)]
    assert {
        "coef_loc:condition[T.treated]",
        "se_loc:Intercept",
        "loglik",
        "converged",
        "status",
    } <= set(table.columns)
    adata = ad.read_h5ad(workdir / "data.h5ad")
    ref = bg.fit(adata, "~ 1 + condition", layer="counts", size_factors=adata.obs["sf"])
    np.testing.assert_allclose(table["loglik"], ref.loglik, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("missing_file", r"input file 'nope.h5ad' does not exist"),
        ("unknown_variable", r"not columns of `obs`: \['donor'\]"),
        ("bad_layer", r"`layer` 'raw' is not a layer of the AnnData"),
    ],
)
def test_errors_are_one_line(runs, name, match):
    run = runs[name]
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("batchglm: error: ")
    assert re.search(match, lines[0])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (
            [
                "fit",
                "data.h5ad",
                "--design-loc",
                "~ 1",
                "--constraints-loc",
                "{bad",
                "--out",
                "x.h5ad",
            ],
            r"--constraints-loc '\{bad' is not valid JSON",
        ),
        (
            ["fit", "data.h5ad", "--design-loc", "~ 1", "--out", "x.xlsx"],
            r"--out 'x.xlsx' must end in one of .h5ad, .csv",
        ),
        (
            ["fit", "data.h5ad", "--design-loc", "~ 1", "--out", "no/dir/x.csv"],
            r"the directory of --out 'no/dir/x.csv' does not exist",
        ),
        (
            [
                "fit",
                "data.h5ad",
                "--layer",
                "counts",
                "--design-loc",
                "~ 1",
                "--size-factors",
                "depth",
                "--out",
                "x.csv",
            ],
            r"--size-factors 'depth' is not a column of obs",
        ),
        (
            ["fit", "counts.tsv", "--obs", "data.h5ad", "--design-loc", "~ 1", "--out", "x.csv"],
            r"obs file 'data.h5ad' must be a .csv, .tsv or .txt table",
        ),
        (
            ["fit", "obs.csv", "--design-loc", "~ 1", "--out", "x.csv"],
            r"the count table 'obs.csv' must hold numbers only",
        ),
        (
            [
                "fit",
                "counts.tsv",
                "--obs",
                "other_obs.csv",
                "--design-loc",
                "~ 1",
                "--out",
                "x.csv",
            ],
            r"neither the row names nor the column names",
        ),
        (
            ["fit", "data.h5ad", "--obs", "other_obs.csv", "--design-loc", "~ 1", "--out", "x.csv"],
            r"the obs table lacks 40 observations",
        ),
        (
            [
                "fit",
                "data.h5ad",
                "--layer",
                "counts",
                "--design-loc",
                "~ 1 + condition",
                "--constraints-loc",
                "a = 0",
                "--constraints-loc",
                '["b = 0"]',
                "--out",
                "x.csv",
            ],
            r"give --constraints-loc either once as JSON",
        ),
        (
            ["test", "data.h5ad", "--layer", "counts", "--design-loc", "~ 1", "--out", "x.csv"],
            r"give exactly one of --coef and --contrast",
        ),
        (
            [
                "test",
                "data.h5ad",
                "--layer",
                "counts",
                "--design-loc",
                "~ 1 + condition",
                "--coef",
                "treated",
                "--out",
                "x.csv",
            ],
            r"coefficient 'treated' is not in",
        ),
        (
            [
                "fit",
                "data.h5ad",
                "--layer",
                "counts",
                "--design-loc",
                "~ 1",
                "--family",
                "gamma",
                "--out",
                "x.csv",
            ],
            r"gamma",
        ),
        (
            ["fit", "obs.csv", "--obs", "obs.csv", "--design-loc", "~ 1", "--out", "x.h5ad"],
            r"neither the row names nor the column names|must hold numbers only",
        ),
        (
            ["fit", "broken.h5ad", "--design-loc", "~ 1", "--out", "x.csv"],
            r"could not read 'broken.h5ad' as an .h5ad file",
        ),
        (
            ["fit", "empty.csv", "--design-loc", "~ 1", "--out", "x.csv"],
            r"could not read input file 'empty.csv'",
        ),
        (
            ["fit", "counts.tsv", "--obs", "dup_obs.csv", "--design-loc", "~ 1", "--out", "x.csv"],
            r"the obs table has duplicate observation names",
        ),
        (
            ["fit", "adir", "--design-loc", "~ 1", "--out", "x.csv"],
            r"input 'adir' is a directory, not a file",
        ),
    ],
)
def test_error_messages(workdir, capsys, args, match):
    pd.DataFrame({"x": [1.0]}, index=["other"]).to_csv(workdir / "other_obs.csv")
    pd.DataFrame({"x": [1.0, 2.0]}, index=["a", "a"]).to_csv(workdir / "dup_obs.csv")
    (workdir / "broken.h5ad").write_text("not hdf5")
    (workdir / "empty.csv").write_text("")
    (workdir / "adir").mkdir(exist_ok=True)
    code, _, err = run_cli(workdir, args, capsys)
    assert code == 1
    assert err.startswith("batchglm: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err


def test_in_process_outputs(workdir, capsys):
    code, _, err = run_cli(
        workdir,
        [
            "test",
            "data.h5ad",
            "--layer",
            "counts",
            "--design-loc",
            "~ 1 + condition",
            "--contrast",
            "condition",
            "treated",
            "control",
            "--out",
            "c.tsv",
        ],
        capsys,
    )
    assert code == 0, err
    de = pd.read_csv(workdir / "c.tsv", sep="\t", index_col=0)
    assert de.shape[0] == N_FEAT
    code, _, err = run_cli(
        workdir,
        [
            "fit",
            "data.h5ad",
            "--layer",
            "counts",
            "--design-loc",
            "~ 1 + condition",
            "--out",
            "f.csv",
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = run_cli(
        workdir,
        [
            "simulate",
            "--obs",
            "obs.csv",
            "--design-loc",
            "~ 1",
            "--n-features",
            "3",
            "--out",
            "s.csv",
        ],
        capsys,
    )
    assert code == 0, err
    assert pd.read_csv(workdir / "s.csv", index_col=0).shape == (N_OBS, 3)


def test_usage_errors_exit_1_with_one_line(capsys):
    # argparse's default was exit status 2 and a usage block; the README promises one line
    # and status 1 for every error.
    with pytest.raises(SystemExit) as info:
        main(["fit"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"batchglm fit: error: the following arguments are required: .*--design-loc.*"
        r" \(see batchglm fit --help\)\n",
        err,
    ), err
    with pytest.raises(SystemExit) as info:
        main(["tset"])
    assert info.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1
