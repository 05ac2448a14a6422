"""Independent filtering equals DESeq2's on the same p-values and baseMeans.

Reference: ``DESeq2:::pvalueAdjustment`` (DESeq2 1.38.3, R 4.2) on
``tests/data/independent_filtering_input.csv`` (``benchmarks/independent_filtering_input.py``),
computed by ``benchmarks/independent_filtering_deseq2.R``. Where a user's DE pipeline
picks another threshold than DESeq2 on the same counts, the p-values differ, not the rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchglm.de.independent_filtering import independent_filtering

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_threshold_and_padj_equal_deseq2(alpha: float) -> None:
    inp = pd.read_csv(DATA / "independent_filtering_input.csv")
    ref = pd.read_csv(DATA / "independent_filtering_deseq2.csv")
    ref = ref[ref.alpha == alpha].set_index("feature").loc[inp.feature]
    meta = pd.read_csv(DATA / "independent_filtering_deseq2_meta.csv").set_index("alpha")
    res = independent_filtering(inp.pvalue.to_numpy(), inp.baseMean.to_numpy(), alpha)
    assert res.theta == pytest.approx(meta.loc[alpha, "filterTheta"], rel=1e-12)
    assert res.threshold == pytest.approx(meta.loc[alpha, "filterThreshold"], rel=1e-12)
    # The lowess rule chose a filter beyond the first grid point (the zeros' fraction).
    assert res.theta > np.mean(inp.baseMean == 0)
    want = ref.padj.to_numpy()
    np.testing.assert_array_equal(np.isnan(res.padj), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(res.padj[ok], want[ok], rtol=1e-10, atol=0)
