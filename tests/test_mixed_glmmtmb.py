"""Random-intercept NB fits agree with glmmTMB gene by gene (stored reference, no R needed).

The reference: ``benchmarks/mixed_simulate_reference.py`` simulated the counts,
``benchmarks/mixed_glmmtmb_reference.R`` fitted ``glmmTMB(y ~ ... + (1 | donor),
family = nbinom2)`` (Laplace approximation) to each of 200 genes per design. Genes where
glmmTMB reports no convergence are left out: there its size ``r`` runs to about 1e14, where
its log-likelihood is no longer accurate (for one gene it reports a value 84 above the
Laplace likelihood at its own estimates).

The same genes were also fitted with ``REML = TRUE`` (``mixed_{design}_glmmtmb_reml.csv``,
``Rscript benchmarks/mixed_glmmtmb_reference.R reml intercept condition``) and are compared
with ``bg.fit(..., reml=True)`` (:mod:`batchglm.mixed.reml`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batchglm as bg

DATA = Path(__file__).parent / "data"
#: glmmTMB's coefficient names for ours.
NAMES = {"Intercept": "(Intercept)", "condition[T.stim]": "conditionstim", "x": "x"}


def _fit(
    design: str, formula: str, factors: list[str], reml: bool = False
) -> tuple[bg.FitResult, pd.DataFrame]:
    counts = pd.read_csv(DATA / f"mixed_{design}_counts.csv", index_col=0)
    obs = pd.read_csv(DATA / f"mixed_{design}_obs.csv", index_col=0)
    name = f"mixed_{design}_glmmtmb{'_reml' if reml else ''}.csv"
    ref = pd.read_csv(DATA / name).set_index("gene")
    res = bg.fit(counts, formula, obs=obs, random_effects=factors, reml=reml)
    return res, ref[ref.converged]


@pytest.mark.parametrize(
    ("design", "formula", "factors", "reml"),
    [
        ("intercept", "~ 1", ["donor"], False),
        ("condition", "~ condition + x", ["donor"], False),
        # Donors nested in batches (100 genes): the joint inner solve of mixed/joint.py.
        ("nested", "~ condition", ["donor", "batch"], False),
        # glmmTMB REML = TRUE: fixed effects integrated out with the random intercepts.
        ("intercept", "~ 1", ["donor"], True),
        ("condition", "~ condition + x", ["donor"], True),
    ],
)
def test_agrees_with_glmmtmb(design: str, formula: str, factors: list[str], reml: bool) -> None:
    res, ref = _fit(design, formula, factors, reml)
    genes = ref.index
    assert len(genes) >= 0.9 * (100 if design == "nested" else 200)
    assert res.converged[genes].all()
    # The same Laplace objective: ours is at least as high, to 1e-3.
    assert (res.loglik[genes] - ref.loglik).min() >= -1e-3
    interior = res.status[genes] == "converged"
    for f in factors:
        interior &= ref[f"{f}_var"] > 1e-2
    assert interior.sum() >= 0.3 * len(genes)
    for ours, theirs in NAMES.items():
        if ours not in res.coef_loc.columns:
            continue
        se = ref[f"se_{theirs}"]
        diff = (res.coef_loc.loc[genes, ours] - ref[f"coef_{theirs}"]).abs() / se
        assert diff.max() < 0.01, (ours, diff.idxmax())
        rel_se = (res.se_loc.loc[genes[interior], ours] / se[interior] - 1).abs()
        assert rel_se.max() < 0.01, (ours, rel_se.idxmax())
    for f in factors:
        var = res.random_var.loc[genes[interior], f]
        rel_var = (var / ref[f"{f}_var"][interior] - 1).abs()
        assert rel_var.max() < 0.02, (f, rel_var.idxmax())
        # Variances glmmTMB puts at (numerically) zero are on the boundary here too.
        zero = ref[f"{f}_var"] < 1e-6
        assert (res.random_var.loc[genes[zero], f] < 1e-6).all()
    r = np.exp(res.coef_scale.loc[genes[interior]].iloc[:, 0])
    assert ((r / ref["size"][interior] - 1).abs() < 0.02).all()
