"""Scanpy-style tools: marker genes over many groups, and tests per cell type.

::

    import batchglm as bg
    bg.tl.rank_genes_groups(adata, "leiden", layer="counts")   # writes adata.uns[...]
    sc.get.rank_genes_groups_df(adata, group="0")              # scanpy reads it unchanged
    table = bg.tl.test_per_group(adata, "cell_type", "~ condition",
                                 coef="condition[T.treated]", pseudobulk_by="donor")
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from batchglm.de.multiple_testing import bh_qvalues
from batchglm.fit import fit
from batchglm.warning_site import user_stacklevel

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.result import FitResult

logger = logging.getLogger("batchglm")

Array = NDArray[np.float64]

_LN2 = float(np.log(2.0))


def _levels(adata: AnnData, groupby: str) -> tuple[pd.Series, list[Any]]:
    if groupby not in adata.obs.columns:
        raise ValueError(
            f"`groupby` {groupby!r} is not a column of `adata.obs`; its columns are "
            f"{list(adata.obs.columns)}."
        )
    col = adata.obs[groupby]
    if col.isna().any():
        raise ValueError(
            f"`adata.obs[{groupby!r}]` has {int(col.isna().sum())} missing values; every "
            "observation needs a group."
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = set(col.unique())
        levels = [c for c in col.cat.categories if c in present]
    else:
        levels = sorted(col.unique(), key=str)
    if len(levels) < 2:
        raise ValueError(
            f"`adata.obs[{groupby!r}]` must have at least two groups to compare, but it has "
            f"{len(levels)}."
        )
    return col, levels


#: Groups with fewer cells than this get a :class:`SmallSampleWarning` (one cell: an error).
MIN_GROUP_CELLS = 3


def _check_group_sizes(col: pd.Series, levels: list[Any], groupby: str) -> None:
    from batchglm.de.degrees_of_freedom import SmallSampleWarning

    sizes = col.value_counts()
    single = [str(lv) for lv in levels if sizes[lv] == 1]
    if single:
        raise ValueError(
            f"every group of `adata.obs[{groupby!r}]` needs at least 2 cells to be tested "
            f"(as scanpy requires), but group(s) {single} have 1 cell; drop or merge them."
        )
    small = {str(lv): int(sizes[lv]) for lv in levels if sizes[lv] < MIN_GROUP_CELLS}
    if small:
        warnings.warn(
            f"group(s) of `adata.obs[{groupby!r}]` with fewer than {MIN_GROUP_CELLS} cells "
            f"(group: cells) {small}: their p-values rest on very few observations; treat "
            "them with caution, or merge the groups.",
            SmallSampleWarning,
            stacklevel=user_stacklevel(),
        )


def _group_design(col: pd.Series, levels: list[Any], groupby: str) -> pd.DataFrame:
    names = [f"{groupby}[{lv}]" for lv in levels]
    values = np.column_stack([(col == lv).to_numpy() for lv in levels]).astype(np.float64)
    return pd.DataFrame(values, index=col.index, columns=names)


def _zero_groups(adata: AnnData, layer: str | None, x: Array) -> NDArray[np.bool_]:
    """``(n_groups, n_features)``: whether a group's counts of a feature are all zero."""
    from scipy import sparse

    from batchglm.inputs import as_data

    values = as_data(adata, layer=layer).values
    indicator = sparse.csr_array(x.T)
    sums = indicator @ values
    sums = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    return np.asarray(sums == 0)


def _ranked(
    names: pd.Index, score: Array, lfc: Array, pval: Array, n_genes: int | None
) -> dict[str, NDArray[Any]]:
    # Descending score, features without a test (NaN) last.
    order = np.lexsort((-np.where(np.isnan(score), -np.inf, score), np.isnan(score)))
    order = order[:n_genes] if n_genes is not None else order
    return {
        "names": np.asarray(names[order], dtype=object),
        "scores": score[order].astype(np.float32),
        "logfoldchanges": lfc[order].astype(np.float32),
        "pvals": pval[order],
        "pvals_adj": bh_qvalues(pval)[order],
    }


def _merged_design(x: Array, g: int, into: list[int], weight: float) -> Array:
    """Reduced design with ``a_g = weight * sum(a_h for h in into)`` imposed."""
    keep = [j for j in range(x.shape[1]) if j != g]
    out = x[:, keep].copy()
    for h in into:
        out[:, keep.index(h)] += weight * x[:, g]
    return out


@contextlib.contextmanager
def _one_crossed_warning() -> Iterator[None]:
    """Merge the per-group ``CrossedGroupingWarning`` of a marker run into one.

    Every group's test of a fit with a donor random effect varies within donors and would
    warn once per group; the first message is kept and the count of the others added. Other
    warnings pass through unchanged (the caller's filters apply when they are re-emitted).
    """
    from batchglm.de.pseudoreplication import CrossedGroupingWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    crossed = [w for w in caught if issubclass(w.category, CrossedGroupingWarning)]
    for w in caught:
        if not issubclass(w.category, CrossedGroupingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if crossed:
        more = len(crossed) - 1
        note = f" (The same holds for the tests of {more} other groups.)" if more else ""
        warnings.warn(
            str(crossed[0].message) + note, CrossedGroupingWarning, stacklevel=user_stacklevel()
        )


def rank_genes_groups(
    adata: AnnData,
    groupby: str,
    *,
    reference: str | int = "rest",
    layer: str | None = None,
    method: str = "wald",
    size_factors: ArrayLike | str = "poscounts",
    key_added: str = "rank_genes_groups",
    n_genes: int | None = None,
    **fit_kwargs: Any,
) -> None:
    """Rank features for each group against the rest or a reference group (scanpy's layout).

    Negative binomial fits with one dispersion per feature and size factors as offsets:

    * against a reference level: one fit of ``~ 0 + groupby`` (one log mean per group)
      answers every group, by the contrast ``a_group - a_reference``;
    * ``reference="rest"``: one fit per group of ``~ 1 + is_group``, testing the group's
      mean against the mean of all other cells pooled, as scanpy does. The rest is then
      one NB population with one dispersion shared with the group. When the rest's
      groups differ, this mixture usually inflates the shared dispersion and makes the
      test conservative, but not always: a group more variable than the pooled rest
      (e.g. a cluster that mixes two cell states) is judged by too small a dispersion,
      and the test is then anti-conservative. (Testing against the geometric mean of the
      other groups' means, from the one group fit, would be cheaper but makes every
      feature absent from any one other group an infinite marker.)

    ``method="wald"`` tests the coefficient or contrast (:func:`batchglm.de.wald`);
    ``method="lrt"`` compares with a reduced fit (:func:`batchglm.de.lrt`): per group
    against a reference (the two groups merged), one intercept-only fit for the rest.

    A group whose counts of a feature are all zero has a log mean of minus infinity (the
    fit stops near ``log(1e-9)``, status ``separated``). Its fold change is then infinite:
    ``logfoldchanges`` is ``+inf`` or ``-inf`` (``NaN`` when both sides are all zero),
    never the solver's arbitrary stopping value. The Wald statistic of an estimate running
    off to infinity tends to zero (Hauck-Donner effect), so a perfect marker would rank
    last; those features get the likelihood-ratio test in both methods (its statistic is
    finite, bounded by where the fit stopped).

    Cells are the replicates here, as in scanpy's tests: this ranks markers of clusters.
    To compare conditions across donors use :func:`test_per_group`, which pseudobulks by
    donor. Group labels are always factor levels, also when coded as integers.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x features with raw counts in ``.X`` or ``layer``.
    groupby : str
        Column of ``adata.obs`` with the groups (e.g. ``"leiden"``).
    reference : str or int
        ``"rest"`` or a level of ``groupby`` (that group is then not ranked itself).
    layer : str, optional
        Layer with the counts; ``None`` uses ``.X``.
    method : {"wald", "lrt"}
        The test.
    size_factors : array_like or str
        As in :func:`batchglm.fit`, computed once from all cells. The default
        ``"poscounts"`` (DESeq2's median of ratios over positive counts, for sparse data;
        as in :func:`test_per_group`) is robust to strong markers. Library size
        (``"normed_sum"``) is not: a cluster whose markers take a large share of its
        counts gets a larger library size, which shrinks every other feature's normalised
        mean there, so null features come out as down-regulated (compositional bias; in
        a simulation with 20-fold markers in one cluster, 16 of 29 null features were
        called at 5% FDR in another; 3 with ``"poscounts"``). The median of ratios is
        robust only while markers are a small share of the features: with 5 of 60
        features 25-fold up in one cluster, 24 of 55 null features were still called
        down in that cluster itself (55 with library size), so filter to informative
        features or pass size factors from a larger feature set.
    key_added : str
        Key of ``adata.uns`` to write.
    n_genes : int, optional
        Features kept per group (the top by score); ``None`` keeps all.
    **fit_kwargs
        Further arguments of :func:`batchglm.fit`. ``random_effects="donor"`` (an
        ``adata.obs`` column) fits a random donor intercept in every comparison (a mixed
        model, ``docs/mixed_model.md``): cells are then not treated as independent
        replicates, and p-values use the mixed fit's small-sample reference. Use it when
        the groups are conditions compared across donors; ``scores`` stay ``estimate /
        SE`` of the mixed fit. It is recorded in ``params["random_effects"]``.

    Raises
    ------
    ValueError
        For an unknown ``method`` or ``reference``, a ``groupby`` column that is missing,
        has missing values or fewer than two groups, a group with a single cell (as
        scanpy refuses: it has no variability to test against), or a bad ``n_genes``.

    Warns
    -----
    SmallSampleWarning
        Naming the groups with fewer than ``MIN_GROUP_CELLS`` (3) cells: their p-values
        rest on two observations.

    Notes
    -----
    ``adata.uns[key_added]`` is written in place in scanpy's layout: ``params``
    (``groupby``, ``reference``, ``method``, ``use_raw``, ``layer``, ``corr_method``, and
    ``random_effects`` when given, as a list of ``obs`` columns) and
    record arrays ``names``, ``scores``, ``logfoldchanges``, ``pvals``, ``pvals_adj`` with
    one field per ranked group, sorted by score descending. ``scores`` are signed z-scores
    (the Wald statistic ``estimate / SE``, or ``sign(estimate) sqrt(LR statistic)``);
    ``logfoldchanges`` are log2 (normalised scale, size factor 1); ``pvals_adj`` are
    Benjamini-Hochberg per group over all features. Features without a test (NaN p-value:
    all zero in both compared sets, or a fit that did not converge) have NaN scores and
    come last, with every method.
    """
    from batchglm.size_factors import size_factors as named_size_factors

    if method not in ("wald", "lrt"):
        raise ValueError(f"`method` must be 'wald' or 'lrt', but {method!r} was given.")
    if n_genes is not None and n_genes < 1:
        raise ValueError(f"`n_genes` must be at least 1 or None, but {n_genes} was given.")
    col, levels = _levels(adata, groupby)
    labels = [str(lv) for lv in levels]
    reference = str(reference)  # integer-coded groups: 3 and "3" name the same level
    if reference != "rest" and reference not in labels:
        raise ValueError(
            f"`reference` must be 'rest' or a group of `adata.obs[{groupby!r}]` {labels}, but "
            f"{reference!r} was given."
        )
    _check_group_sizes(col, levels, groupby)
    design = _group_design(col, levels, groupby)
    x = design.to_numpy()
    sf = (
        named_size_factors(adata, size_factors, layer=layer)
        if isinstance(size_factors, str)
        else size_factors
    )
    zero = _zero_groups(adata, layer, x)
    tests = _Tests(adata, layer, sf, method, fit_kwargs)
    columns: dict[str, dict[str, NDArray[Any]]] = {}
    # One CrossedGroupingWarning for the run, not one per group.
    with _one_crossed_warning():
        if reference == "rest":
            for g, label in enumerate(labels):
                is_g = pd.DataFrame(
                    {"Intercept": 1.0, f"{groupby}[{label}]": x[:, g]}, index=design.index
                )
                others = np.asarray(np.delete(zero, g, axis=0).all(axis=0))
                columns[label] = _ranked(
                    tests.feature_names,
                    *tests.run(
                        is_g,
                        np.array([0.0, 1.0]),
                        np.ones((x.shape[0], 1)),
                        zero[g],
                        others,
                        shared_reduced=True,
                    ),
                    n_genes,
                )
        else:
            ref = labels.index(reference)
            for g, label in enumerate(labels):
                if g == ref:
                    continue
                contrast = np.zeros(len(labels))
                contrast[g], contrast[ref] = 1.0, -1.0
                columns[label] = _ranked(
                    tests.feature_names,
                    *tests.run(
                        design,
                        contrast,
                        _merged_design(x, g, [ref], 1.0),
                        zero[g],
                        zero[ref],
                        shared_reduced=False,
                    ),
                    n_genes,
                )
    groups = list(columns)
    out: dict[str, Any] = {
        "params": {
            "groupby": groupby,
            "reference": reference,
            "method": f"batchglm_{method}",
            "use_raw": False,
            "layer": layer,
            "corr_method": "benjamini-hochberg",
        }
    }
    random_effects = fit_kwargs.get("random_effects")
    if random_effects is not None:
        as_list = [random_effects] if isinstance(random_effects, str) else random_effects
        out["params"]["random_effects"] = [str(r) for r in as_list]
    for field in ("names", "scores", "logfoldchanges", "pvals", "pvals_adj"):
        arrays = [columns[g][field] for g in groups]
        dtype = np.dtype([(g, a.dtype) for g, a in zip(groups, arrays, strict=True)])
        out[field] = np.rec.fromarrays(arrays, dtype=dtype)
    adata.uns[key_added] = out


class _Tests:
    """Fits and tests of one group comparison, with the separation fallback."""

    def __init__(
        self, adata: AnnData, layer: str | None, sf: Any, method: str, fit_kwargs: dict[str, Any]
    ) -> None:
        self.adata, self.layer, self.sf = adata, layer, sf
        self.method, self.fit_kwargs = method, fit_kwargs
        self.feature_names = pd.Index(adata.var_names.astype(str))
        self._shared: FitResult | None = None

    def fit(self, design: Any, features: NDArray[np.intp] | None = None) -> FitResult:
        data = self.adata if features is None else self.adata[:, features]
        return fit(data, design, layer=self.layer, size_factors=self.sf, **self.fit_kwargs)

    def reduced(self, design: Any, features: NDArray[np.intp] | None, shared: bool) -> FitResult:
        if not shared:
            return self.fit(design, features)
        if self._shared is None:
            self._shared = self.fit(design)
        return self._shared

    def run(
        self,
        design: pd.DataFrame,
        contrast: Array,
        reduced_design: Array,
        minus: NDArray[np.bool_],
        plus: NDArray[np.bool_],
        shared_reduced: bool,
    ) -> tuple[Array, Array, Array]:
        """Score, log2 fold change and p-value per feature; ``minus``/``plus``: -inf/+inf."""
        from batchglm import de as bgde

        full = self.fit(design)
        if self.method == "wald":
            test = bgde.wald(full, contrast=contrast)
            with np.errstate(divide="ignore", invalid="ignore"):
                score = np.asarray(test.coef_mle / test.coef_se, dtype=np.float64)
            est = np.asarray(test.coef_mle, dtype=np.float64)
        else:
            reduced = self.reduced(reduced_design, None, shared_reduced)
            test = bgde.lrt(full=full, reduced=reduced)
            est = full.coef_loc.to_numpy() @ contrast
            score = np.sign(est) * np.sqrt(test.stat)
        pval = np.asarray(test.pval, dtype=np.float64).copy()
        score = np.asarray(score, dtype=np.float64).copy()
        lfc = est / _LN2
        lfc[minus & plus] = np.nan
        lfc[minus & ~plus] = -np.inf
        lfc[plus & ~minus] = np.inf
        separated = minus ^ plus
        if self.method == "wald" and separated.any():
            idx = np.flatnonzero(separated)
            if shared_reduced:
                lr = bgde.lrt(full=full, reduced=self.reduced(reduced_design, None, True))
                stat, p = lr.stat[idx], lr.pval[idx]
            else:
                lr = bgde.lrt(
                    full=self.fit(design, idx), reduced=self.reduced(reduced_design, idx, False)
                )
                stat, p = lr.stat, lr.pval
            pval[idx] = p
            score[idx] = np.sign(lfc[idx]) * np.sqrt(stat)
            logger.info("%d features with a group of zeros tested by LRT", idx.size)
        score[np.isnan(pval)] = np.nan  # untestable features rank last, for every method
        return score, lfc, pval


def test_per_group(
    adata: AnnData,
    groupby: str,
    design: str,
    *,
    pseudobulk_by: str,
    coef: str | Sequence[str] | None = None,
    contrast: Any = None,
    layer: str | None = None,
    size_factors: str = "poscounts",
    dispersion: str = "map",
    min_cells: int = 1,
) -> pd.DataFrame:
    """Pseudobulk each group (e.g. cell type) by sample and test the same design in each.

    Cells are summed per ``pseudobulk_by`` x ``groupby`` with :func:`batchglm.pseudobulk`;
    each group's samples are fitted with ``design`` (NB, size factors per group) and tested
    with :func:`batchglm.de.wald` (``dispersion="map"`` by default: DESeq2-style shrunken
    dispersions, which the few samples per group need).

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x features with raw counts.
    groupby : str
        Column of ``adata.obs`` whose levels are tested separately (``"cell_type"``).
    design : str
        Formula over sample-level columns of ``adata.obs`` (``"~ condition"``).
    pseudobulk_by : str
        Column naming each cell's sample (``"donor"``).
    coef, contrast : optional
        What to test, as in :func:`batchglm.de.wald`.
    layer : str, optional
        Layer with the counts.
    size_factors : str
        Size factor method of :func:`batchglm.size_factors`, applied to each group's
        pseudobulk samples (``"poscounts"``: DESeq2's, robust to zeros).
    dispersion : {"mle", "map", "ql"}
        As in :func:`batchglm.de.wald`.
    min_cells : int
        Pseudobulk samples with fewer cells are dropped.

    Returns
    -------
    pandas.DataFrame
        One row per group and feature: ``group``, ``feature``, ``baseMean`` (mean of the
        normalised pseudobulk counts), ``log2FoldChange``, ``lfcSE`` (log2), ``stat``,
        ``pvalue`` and ``padj`` (Benjamini-Hochberg within each group, as when DESeq2 is
        run per cell type).

    Raises
    ------
    ValueError
        When a column is missing, neither ``coef`` nor ``contrast`` is given,
        ``size_factors`` is not a method name, or no group could be tested.

    Warns
    -----
    UserWarning
        For each group that cannot be tested (e.g. a design that is confounded within it,
        such as a cell type seen in one condition only); the warning names the group and
        the reason, and the group is left out.
    """
    from batchglm import de as bgde
    from batchglm.pseudobulk import pseudobulk

    _levels(adata, groupby)
    if coef is None and contrast is None:
        raise ValueError("give `coef` or `contrast`: what to test in every group.")
    if not isinstance(size_factors, str):
        raise ValueError(
            "`size_factors` must name a method (e.g. 'poscounts'), applied to each group's "
            f"pseudobulk samples, but a {type(size_factors).__name__} was given."
        )
    pb = pseudobulk(adata, pseudobulk_by, groupby, layer=layer, min_cells=min_cells)
    tables = []
    for level in pd.unique(pb.obs[groupby]):
        sub = pb[(pb.obs[groupby] == level).to_numpy()].copy()
        try:
            res = fit(sub, design, size_factors=size_factors, progress=False)
            test = bgde.wald(res, coef, contrast=contrast, dispersion=dispersion, data=sub)
        except ValueError as err:
            warnings.warn(
                f"group {level!r} of {groupby!r} was not tested: {err}",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            continue
        counts = np.asarray(sub.X, dtype=np.float64) / res.size_factors[:, None]
        # The test's own table (signed z, capped fold changes, status), with DESeq2's
        # baseMean (mean of the counts over size factors) and the group in front.
        table = pd.DataFrame(test.summary()).reset_index()
        table["baseMean"] = counts.mean(axis=0)
        table.insert(0, "group", str(level))
        tables.append(table)
        logger.info("tested group %r of %r: %d samples", level, groupby, sub.n_obs)
    if not tables:
        raise ValueError(
            f"no group of {groupby!r} could be tested with design {design!r}; see the "
            "warnings for each group."
        )
    return pd.concat(tables, ignore_index=True)
