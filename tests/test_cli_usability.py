"""CLI and design usability: a closed stdout pipe, and missing covariate values."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.cli import main


class _ClosedPipe(io.StringIO):
    """Stdout whose reader went away after the first line (``| head -1``)."""

    def write(self, text: str) -> int:
        if self.tell() > 0:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def _tables(d: Path) -> None:
    rng = np.random.default_rng(5)
    samples = [f"s{i}" for i in range(6)]
    y = rng.negative_binomial(6, 6 / (6 + rng.uniform(10, 300, 40)), (6, 40))
    genes = pd.Index([f"g{j}" for j in range(40)], name="gene")
    pd.DataFrame(y.T, index=genes, columns=samples).to_csv(d / "counts.csv")
    obs = pd.DataFrame(
        {"condition": np.repeat(["a", "b"], 3), "RIN": [7.0, np.nan, 8.1, 6.5, 7.7, 9.0]},
        index=pd.Index(samples, name="sample"),
    )
    obs.to_csv(d / "obs.csv")


def test_out_to_a_closed_pipe_exits_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tables(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdout", _ClosedPipe())
    args = ["test", "counts.csv", "--obs", "obs.csv", "--design-loc", "~ condition"]
    code = main([*args, "--contrast", "condition", "b", "a", "--out", "-"])
    assert code == 141  # as a process ended by SIGPIPE
    assert "error" not in capsys.readouterr().err


def test_missing_covariate_values_are_named() -> None:
    rng = np.random.default_rng(6)
    obs = pd.DataFrame(
        {"condition": np.repeat(["a", "b"], 4), "RIN": [7.0, np.nan, 8, 6, 7, np.nan, 9, 8]},
        index=[f"s{i}" for i in range(8)],
    )
    y = pd.DataFrame(rng.poisson(20, (8, 5)), index=obs.index)
    with pytest.raises(ValueError, match=r"'RIN': 2 of 8 \(s1, s5\).*drop those observations"):
        bg.fit(y, "~ RIN + condition", obs=obs)
    with pytest.raises(ValueError, match=r"'RIN': 2 of 8 .*or impute the values"):
        bg.de.test(y, "~ RIN + condition", obs=obs, coef="condition[T.b]")
    # Columns the formula does not use may have missing values.
    assert bg.fit(y, "~ condition", obs=obs).converged.all()


def test_cli_reports_missing_covariate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tables(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["test", "counts.csv", "--obs", "obs.csv", "--design-loc", "~ RIN + condition"]
    assert main([*args, "--contrast", "condition", "b", "a", "--out", "de.csv"]) == 1
    err = capsys.readouterr().err
    assert "'RIN': 1 of 6 (s1)" in err and "impute" in err
