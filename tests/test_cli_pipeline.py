"""``batchglm test`` runs bg.de.test: every pipeline flag, and one-line errors for bad values."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from cli_runner import run_cli
from table_columns import RESULTS_COLUMNS

# The CLI prints each warning as a `batchglm: warning:` line, as users see it (e.g. the
# small-sample warning of `--dispersion mle`); warnings keep their default action here.
pytestmark = pytest.mark.filterwarnings("always::UserWarning")

N_GENES = 120
SAMPLES = [f"s{i}" for i in range(8)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_pipeline")
    rng = np.random.default_rng(21)
    lib = np.array([1, 1, 4, 4, 1, 1, 4, 4.0])  # library sizes differ 4-fold
    lfc = np.where(np.arange(N_GENES) < 25, 2.0, 0.0)
    group = np.repeat([0, 1], 4)
    mu = lib[:, None] * np.exp(rng.uniform(1, 6, N_GENES))[None, :] * np.exp(np.outer(group, lfc))
    y = rng.negative_binomial(8, 8 / (8 + mu))
    y[1, 30] = 40 * y[:, 30].max() + 100  # one outlier count
    genes = [f"gene{j}" for j in range(N_GENES)]
    pd.DataFrame(y.T, index=pd.Index(genes, name="gene"), columns=SAMPLES).to_csv(d / "counts.csv")
    coldata = pd.DataFrame(
        {"condition": np.repeat(["ctrl", "trt"], 4), "depth": lib},
        index=pd.Index(SAMPLES, name="sample"),
    )
    coldata.to_csv(d / "coldata.csv")
    return d


def _counts(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = pd.read_csv(workdir / "counts.csv", index_col=0).T
    obs = pd.read_csv(workdir / "coldata.csv", index_col=0)
    return counts, obs


BASE = ["test", "counts.csv", "--obs", "coldata.csv", "--design-loc", "~ condition"]
COEF = ["--coef", "condition[T.trt]"]


def _table(workdir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(workdir / name, index_col=0)


def test_default_is_the_pipeline_with_median_ratio(workdir, capsys):
    code, out, err = run_cli(workdir, [*BASE, *COEF, "--out", "de.csv"], capsys)
    assert code == 0, err
    table = _table(workdir, "de.csv")
    counts, obs = _counts(workdir)
    ref = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]").summary()
    np.testing.assert_allclose(table["baseMean"], ref["baseMean"], rtol=1e-12)
    np.testing.assert_allclose(table["pvalue"], ref["pvalue"], rtol=1e-10)
    assert table.loc["gene30", "status"] == "outlier"
    assert list(table.columns[:10]) == [
        *RESULTS_COLUMNS,
        "maxCooks",
        "replaced",
        "filtered",
    ]
    # Deprecated names of old scripts, at the end.
    assert list(table.columns[-3:]) == ["pval", "qval", "log2fc"]
    np.testing.assert_allclose(table["qval"], table["padj"], equal_nan=True)
    # One summary line on stdout.
    assert re.fullmatch(
        r"batchglm: 120 features, 119 tested, \d+ with padj < 0\.1 \(1 Cook's "
        r"outliers, .*\)\n",
        out,
    ), out
    sig = int(re.search(r"(\d+) with padj", out).group(1))
    assert sig == int((ref["padj"] < 0.1).sum()) and sig >= 20


@pytest.mark.parametrize(
    ("flag", "kwargs"),
    [
        (["--size-factors", "tmm"], {"size_factors": "tmm"}),
        (["--size-factors", "poscounts"], {"size_factors": "poscounts"}),
        (["--size-factors", "none"], {"size_factors": None}),
        (["--test", "lrt", "--reduced", "~ 1"], {"method": "lrt", "reduced": "~ 1"}),
        (["--test", "ql"], {"method": "ql"}),
        (["--dispersion", "mle"], {"dispersion": "mle"}),
        (["--cooks-cutoff", "none"], {"cooks_cutoff": None}),
        (["--cooks-cutoff", "2.5"], {"cooks_cutoff": 2.5}),
        (["--no-independent-filtering"], {"independent_filtering": False}),
        (["--alpha", "0.05"], {"alpha": 0.05}),
        (["--lfc-threshold", "1"], {"lfc_threshold": 1.0}),
        (["--lfc-threshold", "0.5", "--test", "ql"], {"lfc_threshold": 0.5, "method": "ql"}),
        (
            ["--lfc-threshold", "0.5", "--alt-hypothesis", "lessAbs"],
            {"lfc_threshold": 0.5, "alt_hypothesis": "lessAbs"},
        ),
        (["--alt-hypothesis", "greater"], {"alt_hypothesis": "greater"}),
        (["--alt-hypothesis", "less"], {"alt_hypothesis": "less"}),
        (
            ["--weights", "depth", "--dispersion", "mle", "--cooks-cutoff", "none"],
            {"weights": "depth", "dispersion": "mle", "cooks_cutoff": None},
        ),
    ],
)
def test_flags_match_the_python_call(workdir, capsys, flag, kwargs):
    code, out, err = run_cli(workdir, [*BASE, *COEF, *flag, "--out", "f.csv"], capsys)
    assert code == 0, err
    table = _table(workdir, "f.csv")
    counts, obs = _counts(workdir)
    with warnings.catch_warnings():
        # The CLI printed these (e.g. SmallSampleWarning for --dispersion mle, separated
        # genes under a threshold); the reference call repeats them.
        warnings.simplefilter("ignore", UserWarning)
        ref = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]", **kwargs)
    np.testing.assert_allclose(table["pvalue"], ref.summary()["pvalue"], rtol=1e-10)
    np.testing.assert_allclose(table["padj"], ref.summary()["padj"], rtol=1e-10)
    np.testing.assert_array_equal(table["status"], ref.summary()["status"])
    assert f"padj < {kwargs.get('alpha', 0.1):g}" in out


def test_size_factor_column_and_sorting_and_stdout(workdir, capsys):
    code, out, err = run_cli(
        workdir,
        [*BASE, *COEF, "--size-factors", "depth", "--sort-by", "pvalue", "--out", "-"],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out), index_col=0)
    assert len(table) == N_GENES and table["pvalue"].dropna().is_monotonic_increasing
    assert err.startswith("batchglm: 120 features")  # the summary moves to stderr
    counts, obs = _counts(workdir)
    ref = bg.de.test(
        counts,
        "~ condition",
        obs=obs,
        coef="condition[T.trt]",
        size_factors=obs["depth"].to_numpy(),
    )
    np.testing.assert_allclose(
        table["baseMean"].sort_index(), ref.summary()["baseMean"].sort_index(), rtol=1e-12
    )


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--test", "anova"], r"--test must be wald, lrt or ql, but 'anova'"),
        (["--dispersion", "robust"], r"--dispersion must be mle, map or ql, but 'robust'"),
        (["--test", "lrt"], r"--test lrt needs exactly one of --reduced"),
        (["--reduced", "~ 1"], r"--reduced is only used by --test lrt, not --test wald"),
        (
            ["--cooks-cutoff", "big"],
            r"--cooks-cutoff must be a positive number, 'default' or "
            r"'none', but 'big'",
        ),
        (["--cooks-cutoff", "-1"], r"--cooks-cutoff must be a positive number"),
        (["--alpha", "2"], r"--alpha must lie in \(0, 1\), but 2 was given"),
        (["--alpha", "x"], r"--alpha must be a number, but 'x' was given"),
        (["--lfc-threshold", "-1"], r"--lfc-threshold must be a finite number >= 0, but -1"),
        (
            ["--alt-hypothesis", "twoSided"],
            r"--alt-hypothesis must be one of greaterAbs, lessAbs, greater, less, but "
            r"'twoSided' was given",
        ),
        (["--alt-hypothesis", "lessAbs"], r"--alt-hypothesis lessAbs needs --lfc-threshold > 0"),
        (
            ["--test", "ql", "--lfc-threshold", "1", "--alt-hypothesis", "greater"],
            r"--test ql tests --lfc-threshold by edgeR's TREAT",
        ),
        (
            ["--test", "lrt", "--reduced", "~ 1", "--lfc-threshold", "1"],
            r"--lfc-threshold and --alt-hypothesis need --test wald or ql",
        ),
        (["--sort-by", "nope"], r"--sort-by 'nope' is not a column of the table"),
        (["--size-factors", "rle"], r"--size-factors 'rle' is not a column of obs nor a method"),
        (["--out", "de.xlsx"], r"--out 'de.xlsx' must end in one of .csv, .tsv, .txt"),
        # --weights: refused in CLI terms before anything is read or fitted (one line, no
        # warning printed first).
        (
            ["--weights", "depth"],
            r"--weights needs --dispersion mle and --cooks-cutoff none \(.*\), but no "
            r"--dispersion \(default map\) was given",
        ),
        (["--weights", "depth", "--dispersion", "map"], r"but --dispersion map was given"),
        (
            ["--weights", "depth", "--dispersion", "mle"],
            r"--weights needs .*--cooks-cutoff none .*but --cooks-cutoff default was given",
        ),
        (
            ["--weights", "depth", "--test", "ql"],
            r"--weights needs --dispersion mle and --cooks-cutoff none .* and --test wald or "
            r"lrt, but --test ql was given",
        ),
        (
            ["--weights", "condition", "--dispersion", "mle", "--cooks-cutoff", "none"],
            r"`weights` must be numeric, but the obs column 'condition' could not be read as "
            r"numbers \(e.g. 'ctrl'\)",
        ),
        (
            ["--lfc-shrink", "--weights", "depth", "--dispersion", "mle", "--cooks-cutoff", "none"],
            r"--lfc-shrink cannot be combined with --weights",
        ),
        (
            ["--weights", "nope", "--dispersion", "mle", "--cooks-cutoff", "none"],
            r"`weights` names the obs column 'nope'",
        ),
    ],
)
def test_bad_values_are_one_line_errors(workdir, capsys, flags, match):
    code, _, err = run_cli(workdir, [*BASE, *COEF, "--out", "x.csv", *flags], capsys)
    assert code == 1
    assert err.startswith("batchglm: error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err


def test_lrt_rejects_a_contrast_with_reduced(workdir, capsys):
    code, _, err = run_cli(
        workdir,
        [
            *BASE,
            "--contrast",
            "condition",
            "trt",
            "ctrl",
            "--test",
            "lrt",
            "--reduced",
            "~ 1",
            "--out",
            "x.csv",
        ],
        capsys,
    )
    assert code == 1 and "exactly one of --reduced" in err and "both were given" in err


def test_fit_accepts_size_factor_methods(workdir, capsys):
    code, _, err = run_cli(
        workdir,
        [
            "fit",
            "counts.csv",
            "--obs",
            "coldata.csv",
            "--design-loc",
            "~ condition",
            "--size-factors",
            "tmm",
            "--out",
            "fit.csv",
        ],
        capsys,
    )
    assert code == 0, err
    counts, obs = _counts(workdir)
    ref = bg.fit(counts, "~ condition", obs=obs, size_factors="tmm")
    np.testing.assert_allclose(_table(workdir, "fit.csv")["loglik"], ref.loglik, rtol=1e-12)


def test_a_method_name_that_is_also_a_column_is_an_error(workdir, capsys):
    obs = pd.read_csv(workdir / "coldata.csv", index_col=0)
    obs["tmm"] = 1.0
    obs.to_csv(workdir / "coldata_tmm.csv")
    code, _, err = run_cli(
        workdir,
        [
            "test",
            "counts.csv",
            "--obs",
            "coldata_tmm.csv",
            "--design-loc",
            "~ condition",
            *COEF,
            "--size-factors",
            "tmm",
            "--out",
            "x.csv",
        ],
        capsys,
    )
    assert code == 1 and err.count("\n") == 1
    assert "--size-factors 'tmm' is both a method and a column of obs" in err


def test_numeric_names_orientation_by_exact_match(tmp_path, capsys):
    rng = np.random.default_rng(8)
    y = rng.negative_binomial(5, 0.1, size=(8, 30))
    samples = [str(i) for i in range(1, 9)]
    # Entrez-like numeric gene IDs 1..30 contain the sample names 1..8.
    pd.DataFrame(y.T, index=[str(j) for j in range(1, 31)], columns=samples).to_csv(
        tmp_path / "genes_x_samples.csv"
    )
    obs = pd.DataFrame({"condition": np.repeat(["a", "b"], 4)}, index=samples)
    obs.to_csv(tmp_path / "obs.csv")
    args = ["--obs", "obs.csv", "--design-loc", "~ condition", "--coef", "condition[T.b]"]
    code, _, err = run_cli(
        tmp_path, ["test", "genes_x_samples.csv", *args, "--out", "a.csv"], capsys
    )
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "a.csv", index_col=0)) == 30  # genes are the features
    square = pd.DataFrame(
        rng.negative_binomial(5, 0.1, size=(8, 8)), index=samples, columns=samples
    )
    square.to_csv(tmp_path / "square.csv")
    code, _, err = run_cli(tmp_path, ["test", "square.csv", *args, "--out", "b.csv"], capsys)
    assert code == 1
    assert re.search(
        r"batchglm: error: the obs table's names match both the row and the "
        r"column names of the count table",
        err,
    )


@pytest.mark.parametrize("kind", [None, "normal"])
def test_lfc_shrink_flag_reports_shrunken_fold_changes(workdir, capsys, kind):
    flag = ["--lfc-shrink"] if kind is None else ["--lfc-shrink", kind]
    code, _, err = run_cli(workdir, [*BASE, *COEF, *flag, "--out", "shrunk.csv"], capsys)
    assert code == 0, err
    table = _table(workdir, "shrunk.csv")
    counts, obs = _counts(workdir)
    de = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]")
    ref = bg.de.lfc_shrink(
        de, coef="condition[T.trt]", data=counts, type=kind or "apeglm"
    ).summary()
    for col in ("log2FoldChange", "lfcSE", "log2FoldChange_MLE", "lfsr", "pvalue", "padj"):
        np.testing.assert_allclose(table[col], ref[col], rtol=1e-8, equal_nan=True)
    assert "stat" not in table.columns


def test_lfc_shrink_flag_needs_a_wald_test(workdir, capsys):
    code, _, err = run_cli(
        workdir, [*BASE, *COEF, "--test", "ql", "--lfc-shrink", "--out", "x.csv"], capsys
    )
    assert code == 1
    assert re.fullmatch(r"batchglm: error: --lfc-shrink shrinks .* use --test wald\.\n", err), err
