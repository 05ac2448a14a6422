"""Input of benchmarks/independent_filtering_deseq2.R: p-values and baseMeans (new data).

Power grows with baseMean, 6 % of the baseMeans are 0, some p-values are NaN (untested).
Run from the repository root: python benchmarks/independent_filtering_input.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

rng = np.random.default_rng(1107)
n = 1200
base = np.exp(rng.normal(2.0, 2.2, n))
base[rng.random(n) < 0.06] = 0.0
de = rng.random(n) < 0.25
z = rng.normal(0, 1, n) + de * 0.9 * np.log1p(base)
p = 2 * stats.norm.sf(np.abs(z))
p[base == 0] = np.nan
p[rng.random(n) < 0.01] = np.nan
features = [f"f{i:04d}" for i in range(n)]
pd.DataFrame({"feature": features, "baseMean": base, "pvalue": p}).to_csv(
    "tests/data/independent_filtering_input.csv", index=False, float_format="%.17g"
)
