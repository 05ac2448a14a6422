"""Input of benchmarks/lfc_shrink_covariate_deseq2.R: 5 v 5 counts with a raw covariate.

The covariate (age in years) is partly confounded with the condition, as in a user's
design ``~ age + condition``. Run from the repository root:
python benchmarks/lfc_shrink_covariate_input.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd

rng = np.random.default_rng(515)
n, g = 10, 300
condition = np.repeat(["A", "B"], n // 2)
age = np.round(rng.uniform(20, 80, n) + 12 * (condition == "B"))
sf = np.exp(rng.normal(0, 0.25, n))
base = np.exp(rng.uniform(np.log(3), np.log(3000), g))
lfc = np.where(rng.random(g) < 0.3, rng.normal(0, 1.2, g), 0.0)
slope = rng.normal(0, 0.015, g)  # per year
mu = sf[:, None] * base * np.exp((condition == "B")[:, None] * lfc + np.outer(age - 50, slope))
alpha = 0.05 + 1 / base
y = rng.negative_binomial(1 / alpha, 1 / (1 + alpha * mu))
samples = [f"s{i}" for i in range(n)]
genes = pd.Index([f"g{j:03d}" for j in range(g)], name="gene")
pd.DataFrame(y.T, index=genes, columns=samples).to_csv("tests/data/lfc_covariate_counts.csv")
pd.DataFrame(
    {"condition": condition, "age": age, "sizeFactor": sf}, index=pd.Index(samples, name="sample")
).to_csv("tests/data/lfc_covariate_coldata.csv", float_format="%.17g")
