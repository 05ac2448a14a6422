"""``batchglm test --treat-null`` and ``--test lrt --contrast``: flags reach bg.de.test."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from cli_runner import run_cli

SAMPLES = [f"s{i}" for i in range(9)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_treat_lrt")
    rng = np.random.default_rng(8)
    n_genes = 40
    group = np.repeat([0, 1, 2], 3)
    lfc_b = np.linspace(-2.0, 2.0, n_genes)
    lfc_c = np.where(np.arange(n_genes) % 3 == 0, 1.5, 0.0)
    eta = rng.uniform(2, 5, n_genes)[None, :] + np.outer(group == 1, lfc_b)
    mu = np.exp(eta + np.outer(group == 2, lfc_c))
    y = rng.negative_binomial(10, 10 / (10 + mu))
    genes = [f"gene{j}" for j in range(n_genes)]
    pd.DataFrame(y.T, index=pd.Index(genes, name="gene"), columns=SAMPLES).to_csv(d / "counts.csv")
    coldata = pd.DataFrame(
        {"condition": np.repeat(["a", "b", "c"], 3)}, index=pd.Index(SAMPLES, name="sample")
    )
    coldata.to_csv(d / "coldata.csv")
    return d


BASE = ["test", "counts.csv", "--obs", "coldata.csv", "--design-loc", "~ condition"]


def _inputs(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_csv(workdir / "counts.csv", index_col=0).T,
        pd.read_csv(workdir / "coldata.csv", index_col=0),
    )


@pytest.mark.parametrize("null", ["interval", "worst.case"])
def test_treat_null_flag(workdir, capsys, null):
    flags = ["--coef", "condition[T.b]", "--test", "ql", "--lfc-threshold", "0.5"]
    code, _, err = run_cli(
        workdir, [*BASE, *flags, "--treat-null", null, "--out", f"treat_{null}.csv"], capsys
    )
    assert code == 0, err
    table = pd.read_csv(workdir / f"treat_{null}.csv", index_col=0)
    counts, obs = _inputs(workdir)
    ref = bg.de.test(
        counts,
        "~ condition",
        obs=obs,
        coef="condition[T.b]",
        method="ql",
        lfc_threshold=0.5,
        treat_null=null,
    ).summary()
    np.testing.assert_allclose(table["pvalue"], ref["pvalue"], rtol=1e-10)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--treat-null", "both"], r"--treat-null must be interval or worst\.case, but 'both'"),
        (
            ["--treat-null", "worst.case"],
            r"--treat-null .* needs --test ql and --lfc-threshold > 0, but --test wald",
        ),
    ],
)
def test_treat_null_errors(workdir, capsys, flags, match):
    code, _, err = run_cli(
        workdir, [*BASE, "--coef", "condition[T.b]", *flags, "--out", "x.csv"], capsys
    )
    assert code == 1
    assert err.startswith("batchglm: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err


def test_lrt_of_a_contrast(workdir, capsys):
    flags = ["--test", "lrt", "--contrast", "condition", "c", "b", "--dispersion", "map"]
    code, _, err = run_cli(workdir, [*BASE, *flags, "--out", "lrt_contrast.csv"], capsys)
    assert code == 0, err
    table = pd.read_csv(workdir / "lrt_contrast.csv", index_col=0)
    counts, obs = _inputs(workdir)
    ref = bg.de.test(
        counts, "~ condition", obs=obs, method="lrt", contrast=("condition", "c", "b")
    ).summary()
    np.testing.assert_allclose(table["pvalue"], ref["pvalue"], rtol=1e-10)
    np.testing.assert_allclose(table["log2FoldChange"], ref["log2FoldChange"], rtol=1e-10)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--test", "lrt"], r"--test lrt needs exactly one of --reduced .* neither was given"),
        (
            ["--test", "lrt", "--contrast", "condition", "c", "b", "--coef", "condition[T.b]"],
            r"--test lrt --contrast reports the contrast as the effect; drop --coef",
        ),
    ],
)
def test_lrt_contrast_errors(workdir, capsys, flags, match):
    code, _, err = run_cli(workdir, [*BASE, *flags, "--out", "x.csv"], capsys)
    assert code == 1
    assert err.startswith("batchglm: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
