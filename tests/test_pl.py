"""Volcano and MA plots return Axes, draw every testable feature and never show."""

from __future__ import annotations

import os
from dataclasses import replace

os.environ.setdefault("MPLBACKEND", "agg")

import matplotlib  # noqa: E402

matplotlib.use("agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

import batchglm as bg  # noqa: E402

# These tests use few replicates on purpose (small designs for plots); the
# small-sample warning itself is tested in test_residual_df.py and test_edge_cases.py.
pytestmark = pytest.mark.filterwarnings("ignore::batchglm.de.degrees_of_freedom.SmallSampleWarning")


@pytest.fixture(scope="module")
def de():
    rng = np.random.default_rng(4)
    n, f = 100, 50
    cond = np.tile([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), cond])
    lfc = np.where(np.arange(f) < 10, 1.5, 0.0)
    mu = np.exp(rng.uniform(1, 5, f)[None, :] + np.outer(cond, lfc))
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + mu)).astype(float)
    y[:, -1] = 0.0  # all zero: no p-value, not drawn
    return bg.de.wald(bg.fit(y, x), coef="p1")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _n_points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections)


@pytest.mark.parametrize("plot", [bg.pl.volcano, bg.pl.ma])
def test_plot_returns_axes(de, plot, tmp_path):
    ax = plot(de)
    assert isinstance(ax, Axes)
    assert _n_points(ax) == 49
    assert "log2 fold change" in (ax.get_xlabel() + ax.get_ylabel())
    ax.figure.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000


@pytest.mark.parametrize("plot", [bg.pl.volcano, bg.pl.ma])
def test_plot_draws_on_given_axes(de, plot):
    fig, axes = plt.subplots(1, 2)
    out = plot(de, ax=axes[1], alpha=0.1)
    assert out is axes[1]
    assert _n_points(axes[0]) == 0
    labels = [t.get_text() for t in out.get_legend().get_texts()]
    assert any(label.startswith("q < 0.1") for label in labels)


def test_volcano_highlights_significant(de):
    ax = bg.pl.volcano(de)
    n_sig = int(np.sum(de.qval < 0.05))
    assert n_sig >= 8
    assert len(ax.collections[1].get_offsets()) == n_sig


@pytest.mark.parametrize("plot", [bg.pl.volcano, bg.pl.ma])
def test_plot_errors(de, plot):
    with pytest.raises(ValueError, match=r"`de` must be a DEResult .* DETable was given"):
        plot(de.summary())
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(0, 1\)"):
        plot(de, alpha=0.0)
    joint = bg.de.wald(de.fit, coef=["p0", "p1"])
    with pytest.raises(ValueError, match=r"plot needs a log2 fold change.* 2 degrees of freedom"):
        plot(joint)


@pytest.fixture(scope="module")
def separated_de():
    """Three features with one all-zero group; their raw log2 fold changes exceed 20."""
    rng = np.random.default_rng(6)
    n, f = 12, 30
    cond = np.repeat([0.0, 1.0], n // 2)
    x = np.column_stack([np.ones(n), cond])
    y = rng.negative_binomial(4.0, 4.0 / (4.0 + 30.0), size=(n, f)).astype(float)
    y[: n // 2, :2] = 0.0
    y[n // 2 :, 2] = 0.0
    de = bg.de.wald(bg.fit(y, x), coef="p1", data=y)
    assert (np.abs(de.coef_mle[:3]) / np.log(2) > 20).all()
    return de


def _marker_sets(ax):
    return {
        t.get_text().split(" (")[0]: c
        for t, c in zip(ax.get_legend().get_texts(), ax.collections, strict=True)
    }


def test_volcano_clips_capped_fold_changes_to_the_edge(separated_de):
    ax = bg.pl.volcano(separated_de)
    sets = _marker_sets(ax)
    right = sets["log2FC capped at +10"].get_offsets()
    left = sets["log2FC capped at -10"].get_offsets()
    assert len(right) == 2 and len(left) == 1
    np.testing.assert_array_equal(right[:, 0], [10.0, 10.0])
    np.testing.assert_array_equal(left[:, 0], [-10.0])
    lo, hi = ax.get_xlim()
    assert -10.7 < lo < -10 and 10 < hi < 10.7
    assert _n_points(ax) == 30


def test_volcano_draws_zero_p_values_at_the_top(separated_de):
    pval = separated_de.pval.copy()
    pval[5] = 0.0
    de = replace(separated_de, pval=pval)
    ax = bg.pl.volcano(de)
    top = _marker_sets(ax)["p = 0"].get_offsets()
    assert len(top) == 1
    finite = -np.log10(pval[np.isfinite(pval) & (pval > 0)])
    assert top[0, 1] == pytest.approx(1.05 * finite.max())


def test_ma_clips_capped_fold_changes_to_the_edge(separated_de):
    ax = bg.pl.ma(separated_de)
    sets = _marker_sets(ax)
    np.testing.assert_array_equal(sets["log2FC capped at +10"].get_offsets()[:, 1], [10.0, 10.0])
    np.testing.assert_array_equal(sets["log2FC capped at -10"].get_offsets()[:, 1], [-10.0])
    lo, hi = ax.get_ylim()
    assert -10.7 < lo < -10 and 10 < hi < 10.7


@pytest.mark.parametrize("plot", [bg.pl.volcano, bg.pl.ma])
def test_legend_counts_significant_features_drawn_at_the_edge(separated_de, plot):
    n_sig = int((separated_de.summary()["padj"] < 0.05).sum())
    assert n_sig >= 3  # the three separated features are clearly DE (LRT p-values)
    labels = [t.get_text() for t in plot(separated_de).get_legend().get_texts()]
    assert f"q < 0.05 ({n_sig} in all)" in labels
