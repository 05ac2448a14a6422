"""``make demo``: the seed tutorial's example 1 end to end.

2000 cells from 4 biological replicates, 2 per condition, so replicate and condition are
perfectly confounded. Two sum-to-zero constraints on the replicate coefficients make the
model identifiable without picking a reference replicate. Run ``python -m batchglm.demo``.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import batchglm as bg


def design(n_obs: int = 2000) -> tuple[pd.DataFrame, np.ndarray]:
    """Design of example 1 and its seed-style constraint rows.

    Parameters
    ----------
    n_obs : int
        Number of cells, split evenly over the four replicates.

    Returns
    -------
    design : pandas.DataFrame
        Intercept, four replicate indicators and the condition indicator.
    constraints : ndarray
        Two rows: replicates 3 and 4 sum to zero, and all four replicates sum to zero.
    """
    rep = np.repeat(np.arange(4), n_obs // 4)
    frame = pd.DataFrame(
        {"Intercept": np.ones(rep.size)}
        | {f"rep{k + 1}": (rep == k).astype(float) for k in range(4)}
        | {"treated": (rep >= 2).astype(float)}
    )
    constraints = np.array(
        [
            [0, 0, 0, -1, 1, 0],  # rep3 + rep4 = 0 (rep3 depends)
            [0, -1, 1, 1, 1, 0],  # rep1 + rep2 + rep3 + rep4 = 0 (rep1 depends)
        ],
        dtype=float,
    )
    return frame, constraints


def main() -> None:
    """Simulate, fit and print the result table."""
    dmat, cons = design()
    sim = bg.simulate(
        dmat, dmat, n_features=100, constraints_loc=cons, constraints_scale=cons, seed=0
    )
    start = time.perf_counter()
    res = bg.fit(sim.data, dmat, dmat, constraints_loc=cons, constraints_scale=cons)
    seconds = time.perf_counter() - start

    table = pd.DataFrame(
        {
            "true_treated": sim.coef_loc["treated"],
            "est_treated": res.coef_loc["treated"],
            "se_treated": res.se_loc["treated"],
            "true_log_r": sim.coef_scale["Intercept"],
            "est_log_r": res.coef_scale["Intercept"],
            "loglik": res.loglik,
            "n_iter": res.n_iter,
            "status": res.status,
        }
    )
    rows = np.abs(cons)
    resid = max(
        np.abs(rows @ res.coef_loc.to_numpy().T).max(),
        np.abs(rows @ res.coef_scale.to_numpy().T).max(),
    )
    z = (res.coef_loc["treated"] - sim.coef_loc["treated"]) / res.se_loc["treated"]
    with pd.option_context("display.width", 120, "display.precision", 4):
        print("batchglm demo: seed example 1 (4 replicates confounded with 2 conditions)")
        print(
            f"{sim.data.shape[0]} observations x {sim.data.shape[1]} features, "
            f"fitted in {seconds:.2f} s\n"
        )
        print(table.head(12).to_string())
        print("...\n")
        print(f"constraint residual (max |sum| of each zero-sum set): {resid:.1e}")
        rmse = np.sqrt(((table.true_treated - table.est_treated) ** 2).mean())
        print(
            f"treated effect: RMSE to truth {rmse:.4f}, "
            f"share of |z| < 1.96: {(np.abs(z) < 1.96).mean():.2f}"
        )
        print("status counts:", res.status.value_counts().to_dict())


if __name__ == "__main__":
    main()
