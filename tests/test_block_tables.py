"""Count tables kept across the fits of one analysis (``batchglm.solvers.block_cache``).

Inside ``reuse_block_tables`` a second fit of the same counts takes the first fit's count
tables instead of building them again; the fits must not change, a fit of other counts
(e.g. with outliers replaced) must get tables of its own, and the rough start computed in
the feature blocks' threads must still follow DESeq2's formulas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import batchglm as bg
from batchglm import blocks
from batchglm.dispersion.nb_fit import fitted_means
from batchglm.dispersion.refit import refit_location
from batchglm.dispersion.rough import rough_start
from batchglm.families import get_family
from batchglm.solvers import block_cache, count_table


def _counts(seed: int, n_obs: int = 24, n_feat: int = 300) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"g": np.repeat(["a", "b", "c"], n_obs // 3)})
    base = rng.gamma(2.0, 20.0, n_feat)
    effect = np.where(rng.random(n_feat) < 0.2, rng.normal(0.0, 1.0, n_feat), 0.0)
    mu = base * np.exp(np.outer((obs["g"] == "b").to_numpy(), effect))
    y = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float64)
    y[:, :3] = 0.0  # all-zero features stay out of the table
    return y, obs


def _fits(y: np.ndarray, obs: pd.DataFrame) -> tuple[bg.FitResult, bg.FitResult, bg.FitResult]:
    res = bg.fit(y, "~ g", obs=obs, size_factors="median_ratio", progress=False)
    alpha = np.full(y.shape[1], 0.15)
    full = refit_location(res.data, res, alpha)
    reduced = refit_location(res.data, full, alpha, constraints_loc=np.eye(3)[:, [0, 2]])
    return res, full, reduced


def test_refits_reuse_the_tables_and_give_the_same_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    y, obs = _counts(3)
    built: list[int] = []
    init = count_table.CountTable.__init__

    def counting(self: count_table.CountTable, *args: object, **kwargs: object) -> None:
        built.append(1)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(count_table.CountTable, "__init__", counting)
    plain = _fits(y, obs)
    n_plain = len(built)
    with block_cache.reuse_block_tables():
        kept = _fits(y, obs)
    n_blocks = len(blocks.feature_blocks(y.shape[1], blocks.block_size(y.shape[0])))
    # The two refits take the first fit's table of each block instead of building their own.
    assert len(built) - n_plain == n_plain - 2 * n_blocks
    for a, b in zip(plain, kept, strict=True):
        np.testing.assert_array_equal(a.theta_free, b.theta_free)
        np.testing.assert_array_equal(a.loglik.to_numpy(), b.loglik.to_numpy())
    # Independent check of the reused tables: the refit's log-likelihood is the NB
    # log-likelihood (scipy) of the counts at its fitted means and the held dispersion.
    full = kept[1]
    mu = fitted_means(full, slice(0, y.shape[1]))
    r = 1.0 / 0.15
    ll = stats.nbinom.logpmf(y, r, r / (r + mu)).sum(axis=0)
    np.testing.assert_allclose(full.loglik.to_numpy()[3:], ll[3:], rtol=1e-10)


def test_other_counts_get_their_own_tables() -> None:
    y, obs = _counts(5)
    changed = y.copy()
    changed[0, 3:] += 50.0  # an outlier-like change in every non-zero feature
    with block_cache.reuse_block_tables():
        bg.fit(y, "~ g", obs=obs, size_factors="median_ratio", progress=False)
        inside = bg.fit(changed, "~ g", obs=obs, size_factors="median_ratio", progress=False)
    outside = bg.fit(changed, "~ g", obs=obs, size_factors="median_ratio", progress=False)
    np.testing.assert_array_equal(inside.loglik.to_numpy(), outside.loglik.to_numpy())
    np.testing.assert_array_equal(inside.theta_free, outside.theta_free)


def test_tables_are_dropped_outside_the_context() -> None:
    values = np.zeros((3, 2))
    assert block_cache.tables_for(values) is None
    with block_cache.reuse_block_tables():
        first = block_cache.tables_for(values)
        with block_cache.reuse_block_tables():
            assert block_cache.tables_for(values) is first
        assert block_cache.tables_for(values.copy()) is not first
    assert block_cache.tables_for(values) is None


@pytest.mark.parametrize(("n_obs", "n_feat", "jobs"), [(85, 10_000, 2), (6, 50, 4), (10**6, 3, 2)])
def test_balanced_blocks_cover_the_features_in_order(n_obs: int, n_feat: int, jobs: int) -> None:
    parts = blocks.balanced_blocks(n_obs, n_feat, jobs)
    assert parts[0].start == 0 and parts[-1].stop == n_feat
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) <= blocks.block_size(n_obs)
    if n_feat >= 2 * jobs * blocks.MIN_BALANCED and blocks.block_size(n_obs) >= n_feat:
        assert len(parts) >= 2 * jobs
    if (n_obs, n_feat, jobs) == (85, 10_000, 2):
        # The common size made two blocks of 6,168 and 3,832 features.
        assert sizes == [2500] * 4


def test_rough_start_in_threads_follows_deseq2s_formulas() -> None:
    y, obs = _counts(9, n_obs=12, n_feat=200)
    start = rough_start(
        y, "~ g", obs=obs, layer=None, size_factors="median_ratio", constraints_loc=None
    )
    assert start is not None
    sf = start.size_factors / np.exp(np.mean(np.log(start.size_factors)))
    x = np.column_stack([np.ones(12), obs["g"] == "b", obs["g"] == "c"]).astype(float)
    expected = []
    for j in range(3, y.shape[1]):
        k = y[:, j] / sf
        m = np.maximum(x @ np.linalg.lstsq(x, k, rcond=None)[0], 1.0)
        rough = max((((k - m) ** 2 - m) / m**2).sum() / (12 - 3), 0.0)
        moments = (k.var(ddof=1) - np.mean(1.0 / sf) * k.mean()) / k.mean() ** 2
        expected.append(min(max(min(rough, moments), 1e-8), 12.0))
    np.testing.assert_allclose(np.exp(-start.log_r[3:, 0]), expected, rtol=1e-10)


def test_subset_tables_keep_the_last_sums_of_their_features() -> None:
    rng = np.random.default_rng(11)
    y = rng.poisson(4.0, (20, 9)).astype(np.float64)
    fam = get_family("nb")
    table = count_table.CountTable(y, np.zeros(20, dtype=np.intp), 1)
    eta = rng.normal(1.0, 0.3, (1, 9))
    table.group_sums(fam, eta, 0)
    keep = np.array([True, False, True, True, False, False, True, True, False])
    sub = table.subset(keep)
    again = sub.group_sums(fam, eta[:, keep], 0)
    assert again is not None
    r = np.exp(eta[0, keep])
    want = (special.gammaln(y[:, keep] + r) - special.gammaln(r)).sum(axis=0)
    np.testing.assert_allclose(again[0][0], want, rtol=1e-12)
    # The same numbers as a table built for those features alone.
    fresh = count_table.CountTable(np.ascontiguousarray(y[:, keep]), np.zeros(20, np.intp), 1)
    direct = fresh.group_sums(fam, eta[:, keep], 0)
    assert direct is not None
    np.testing.assert_allclose(again[0], direct[0], rtol=1e-14)


def test_decorated_calls_keep_tables_only_while_they_run() -> None:
    seen: list[object] = []

    @block_cache.reusing_block_tables
    def call(values: np.ndarray) -> None:
        seen.append(block_cache.tables_for(values))

    values = np.ones((2, 2))
    call(values)
    assert isinstance(seen[0], dict)
    assert block_cache.tables_for(values) is None
