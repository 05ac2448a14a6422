"""Messages and warnings that name the user's call and what to do instead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import batchglm as bg
from batchglm.de.degrees_of_freedom import SmallSampleWarning
from batchglm.solvers.status import Status


def _bulk(seed: int = 2, n_per: int = 4, f: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(
        {"condition": np.repeat(["ctrl", "trt"], n_per)},
        index=[f"sample{i}" for i in range(2 * n_per)],
    )
    mu = np.tile(rng.uniform(20.0, 200.0, f), (2 * n_per, 1))
    mu[obs.condition.to_numpy() == "trt", :4] *= 4.0
    y = rng.negative_binomial(8, 8 / (8 + mu))
    y[obs.condition.to_numpy() == "ctrl", 0] = 0  # separated: all zero in ctrl
    counts = pd.DataFrame(y, index=obs.index, columns=[f"gene{j}" for j in range(f)])
    return counts, obs


def test_ql_f_refusals_name_ql_f_and_what_works():
    counts, obs = _bulk()
    pois = bg.fit(counts, "~ condition", obs=obs, family="poisson")
    with pytest.raises(
        ValueError,
        match=r"bg.de.ql_f needs a negative binomial fit.*'poisson'.*"
        r"bg.de.wald or bg.de.lrt",
    ):
        bg.de.ql_f(pois, coef="condition[T.trt]")
    weighted = bg.fit(counts, "~ condition", obs=obs, weights=np.linspace(0.5, 1.5, len(obs)))
    with pytest.raises(
        NotImplementedError,
        match=r"bg.de.ql_f does not support fits with "
        r"`weights` or `offset`.*bg.de.wald or\s+bg.de.lrt",
    ):
        bg.de.ql_f(weighted, coef="condition[T.trt]")


def test_small_sample_warning_points_at_the_callers_line():
    counts, obs = _bulk()
    res = bg.fit(counts, "~ condition", obs=obs)
    with pytest.warns(SmallSampleWarning, match="anti-conservative") as w:
        bg.de.wald(res, coef="condition[T.trt]")
    assert {r.filename for r in w if r.category is SmallSampleWarning} == {__file__}
    with pytest.warns(SmallSampleWarning, match="anti-conservative") as w:
        bg.de.test(counts, "~ condition", obs=obs, coef="condition[T.trt]", dispersion="mle")
    assert {r.filename for r in w if r.category is SmallSampleWarning} == {__file__}


def test_transposed_counts_error_suggests_transposing():
    counts, obs = _bulk()
    with pytest.raises(
        ValueError, match=r"counts look transposed \(40 rows x 8 columns\).*data\.T"
    ):
        bg.fit(counts.T, "~ condition", obs=obs)
    bg.fit(counts, "~ condition", obs=obs.iloc[::-1])  # reordered obs still aligns by name


def test_shrunken_fold_change_of_separated_feature_is_capped_like_the_mle():
    counts, obs = _bulk()
    res = bg.fit(counts, "~ condition", obs=obs)
    with pytest.warns(SmallSampleWarning):
        sh = bg.de.lfc_shrink(res, coef="condition[T.trt]", data=counts, dispersion="mle")
    table = sh.summary()
    sep = res.status_codes == Status.SEPARATED
    assert sep[0]
    raw = sh.coef_map / np.log(2.0)
    cap = sh.de.max_lfc
    # The closed form of the cap: clip the raw posterior mode of separated features only.
    expected = np.where(sep, np.clip(raw, -cap, cap), raw)
    np.testing.assert_array_equal(table["log2FoldChange"].to_numpy(), expected)
    assert (table["log2FoldChange"].abs()[sep] <= cap).all()
    assert np.abs(raw[0]) > cap  # the raw mode stays available and is beyond the cap
    assert table["log2FoldChange_MLE"].iloc[0] == pytest.approx(cap * np.sign(raw[0]))


def test_duplicate_names_warning_points_at_the_callers_line():
    from batchglm.align import DuplicateNamesWarning

    counts, obs = _bulk()
    counts.columns = ["dup"] * 2 + list(counts.columns[2:])
    with pytest.warns(DuplicateNamesWarning, match=r"sharing 1 name\(s\), e.g. \['dup'\]") as w:
        bg.fit(counts, "~ condition", obs=obs)
    assert {r.filename for r in w if r.category is DuplicateNamesWarning} == {__file__}
