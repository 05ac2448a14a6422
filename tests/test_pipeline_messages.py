"""What ``bg.de.test`` and ``batchglm test`` say about a user's awkward bulk inputs.

Each message must name the real cause: the Cook's check turned off (not "skipped for lack
of replicates"), an annotation column in the count table (not a missing obs row), a
sample without a single count (not "every feature has a zero"), and a repeated feature
name warned about once per call.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.align import DuplicateNamesWarning
from cli_runner import run_cli


def _table(seed: int = 1, n_genes: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    samples = [f"S{i:02d}" for i in range(6)]
    counts = pd.DataFrame(
        rng.negative_binomial(5, 0.1, (6, n_genes)),
        index=samples,
        columns=[f"g{j:03d}" for j in range(n_genes)],
    )
    obs = pd.DataFrame({"condition": ["ctrl"] * 3 + ["trt"] * 3}, index=samples)
    return counts, obs


def test_summary_line_says_cooks_check_was_turned_off() -> None:
    counts, obs = _table()
    off = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]", cooks_cutoff=None)
    assert "Cook's check off: cooks_cutoff=None" in off.summary_line()
    assert "skipped" not in off.summary_line()
    on = bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]")
    assert "Cook's outliers" in on.summary_line()


def test_empty_sample_is_named_as_the_cause() -> None:
    counts, obs = _table()
    counts.iloc[2, :] = 0
    for method in ("median_ratio", "poscounts"):
        with pytest.raises(ValueError, match=r"1 observation\(s\) have no counts at all"):
            bg.size_factors(counts, method)
    with pytest.raises(ValueError, match=r"no counts at all \(observation 2 first\)"):
        bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]")


def test_repeated_feature_name_warns_once_per_call() -> None:
    counts, obs = _table()
    counts.columns = [*counts.columns[:-1], counts.columns[0]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]")
    assert sum(issubclass(w.category, DuplicateNamesWarning) for w in caught) == 1


@pytest.mark.parametrize("column", ["symbol", "Length"])
def test_annotation_column_in_count_table_is_named(tmp_path: Path, capsys, column) -> None:
    counts, obs = _table()
    table = counts.T  # genes x samples, as featureCounts writes it
    table.insert(0, column, ["x"] * len(table) if column == "symbol" else 1000)
    table.to_csv(tmp_path / "counts.tsv", sep="\t")
    obs.to_csv(tmp_path / "obs.csv")
    args = ["test", "counts.tsv", "--obs", "obs.csv", "--design-loc", "~ condition"]
    code, _, err = run_cli(
        tmp_path, [*args, "--coef", "condition[T.trt]", "--out", "o.csv"], capsys
    )
    assert code == 1
    assert f"has 1 columns that are not in the obs table: ['{column}']" in err
    assert "annotation columns (gene symbols" in err and err.count("\n") == 1


def test_lrt_with_formula_strings_as_full_and_reduced_points_to_full_loc() -> None:
    counts, obs = _table()
    with pytest.raises(ValueError, match=r"`full` was given the formula '~ condition'.*full_loc="):
        bg.de.lrt(counts, full="~ condition", reduced="~ 1", obs=obs)
