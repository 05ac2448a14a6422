"""Writing a fit into an AnnData (``FitResult.to_anndata``).

:func:`to_anndata` stores a :class:`~batchglm.FitResult` in ``varm``, ``var`` and ``uns``
using only types that ``write_h5ad`` can store. Reading AnnData is the input layer's
(:mod:`batchglm.anndata_io`); writing sits above the result it writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batchglm.input_types import is_anndata
from batchglm.version import __version__

if TYPE_CHECKING:
    from anndata import AnnData

    from batchglm.design import Design
    from batchglm.result import FitResult


@contextlib.contextmanager
def _nullable_strings_allowed() -> Iterator[None]:
    # pandas >= 3 stores text as `str` (StringDtype) columns and indices; anndata 0.11-0.12
    # writes them only when `allow_write_nullable_strings` is set (files that anndata < 0.11
    # cannot read), and refuses otherwise. The setting is changed for our write only.
    import anndata

    settings = getattr(anndata, "settings", None)
    if settings is None or not hasattr(settings, "allow_write_nullable_strings"):
        yield
        return
    with settings.override(allow_write_nullable_strings=True):
        yield


def write_h5ad(adata: AnnData, path: str | Path) -> None:
    """Write an AnnData to ``.h5ad``, text columns of pandas >= 3 included.

    With pandas 3 the observation names and text columns read from a CSV are ``str``
    (``StringDtype``) arrays, which anndata 0.11-0.12 writes only when its setting
    ``allow_write_nullable_strings`` is on: it is switched on for this write alone (the
    file then needs anndata >= 0.11 to be read). With pandas 2 nothing changes.

    Parameters
    ----------
    adata : AnnData
        The data to write.
    path : str or Path
        Output file.
    """
    with _nullable_strings_allowed():
        adata.write_h5ad(path)


def _h5ad_value(value: object) -> Any:
    # write_h5ad stores str, numbers, bools, arrays and dicts of those; None and arbitrary
    # objects it cannot, so they become strings (None: dropped by the caller).
    if isinstance(value, bool | int | float | str | np.integer | np.floating | np.bool_):
        return value
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Mapping):
        return {str(k): _h5ad_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return np.array([str(v) for v in value], dtype=object)
    return str(value)


def _design_record(design: Design, names: pd.Index) -> dict[str, Any]:
    # `names` are the result's coefficient columns: empty for families without a scale.
    record: dict[str, Any] = {
        "formula": design.formula if design.formula is not None else "",
        "coef_names": np.array([str(n) for n in names], dtype=object),
        "constraints": np.asarray(
            design.constraints if len(names) else np.zeros((0, 0)), dtype=np.float64
        ),
    }
    if design.constraint_spec is not None:
        record["constraint_spec"] = _h5ad_value(design.constraint_spec)
    return record


def to_anndata(result: FitResult, adata: AnnData, key_added: str = "batchglm") -> AnnData:
    """Store a fit in an AnnData, in place.

    Features are matched by name, never by position: every fitted feature must be in
    ``adata.var_names`` (in any order); variables of ``adata`` that were not fitted (a fit
    of a subset of genes) get NaN, ``converged=False`` and status ``"not_fitted"``.
    Duplicated names on either side cannot be matched and are refused.

    Parameters
    ----------
    result : FitResult
        The fit.
    adata : anndata.AnnData
        Target; modified in place.
    key_added : str
        Prefix ``key`` of every key written.

    Returns
    -------
    anndata.AnnData
        ``adata`` itself, with these keys added (or replaced):

        * ``varm[f"{key}_coef_loc"]``, ``varm[f"{key}_coef_scale"]``: DataFrames indexed by
          ``var_names`` with one column per coefficient name (location, scale);
        * ``varm[f"{key}_se_loc"]``, ``varm[f"{key}_se_scale"]``: their standard errors;
        * ``var[f"{key}_loglik"]`` (float), ``var[f"{key}_converged"]`` (bool),
          ``var[f"{key}_status"]`` (str), ``var[f"{key}_n_iter"]`` (int, -1 if not fitted);
        * ``uns[key]``: a dict with ``family`` (its name); ``loc`` and ``scale``, each a dict with
          ``formula`` (``""`` for a matrix design), ``coef_names``, ``constraints`` (the
          matrix ``C``, ``theta = C @ theta_free``) and, for named constraints,
          ``constraint_spec`` (the dict of nested factors or the equations); ``settings``
          (the fields of :class:`~batchglm.fit_settings.FitSettings` such as ``max_iter``,
          ``tol`` and ``layer``; those that are ``None`` are left out); ``n_obs``;
          ``version``;
        * mixed fits (``random_effects=``) also: ``varm[f"{key}_random_var"]``, one column
          per grouping factor with the random-intercept variances (natural-log scale, as
          :attr:`~batchglm.FitResult.random_var`); ``varm[f"{key}_random_effects_{factor}"]``,
          one column per group (e.g. donor) with its conditional mode ``u_g`` (as
          :meth:`~batchglm.FitResult.random_effects`); and ``uns[key]["random_effects"]``,
          the list of grouping factors.

        All of these survive ``write_h5ad`` / ``read_h5ad``.

    Raises
    ------
    ValueError
        When a fitted feature is not in ``adata.var_names``, feature names repeat on
        either side, ``key_added`` is not a plain name, or a coefficient name holds ``/``.
    """
    if not is_anndata(adata):
        raise ValueError(f"`adata` must be an AnnData, but a {type(adata).__name__} was given.")
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(
            f"`key_added` must be a non-empty string without '/', but {key_added!r} was given."
        )
    var_names = pd.Index(adata.var_names.astype(str))
    missing = result.feature_names.difference(var_names)
    if len(missing):
        raise ValueError(
            f"{len(missing)} fitted features are not in `adata.var_names`, e.g. "
            f"{[str(m) for m in missing[:5]]}; write the fit to the AnnData it came from."
        )
    for side, names in (("the fit's", result.feature_names), ("`adata.var_names`", var_names)):
        dup = names[names.duplicated()].unique()
        if len(dup):
            raise ValueError(
                f"feature names must be unique to match a fit to an AnnData by name, but "
                f"{side} repeat {len(dup)} name(s), e.g. {[str(v) for v in dup[:5]]}; call "
                "`adata.var_names_make_unique()` before fitting."
            )
    coef_loc, coef_scale = result.coef_loc, result.coef_scale
    for name in [*coef_loc.columns, *coef_scale.columns]:
        if "/" in name:
            raise ValueError(
                f"coefficient name {name!r} contains '/', which h5ad cannot store as a "
                "column name; rename the design column (or the formula term)."
            )

    def frame(values: pd.DataFrame) -> pd.DataFrame:
        out = values.reindex(var_names)
        out.index = adata.var_names
        return out

    key = key_added
    adata.varm[f"{key}_coef_loc"] = frame(coef_loc)
    adata.varm[f"{key}_coef_scale"] = frame(coef_scale)
    adata.varm[f"{key}_se_loc"] = frame(result.se_loc)
    adata.varm[f"{key}_se_scale"] = frame(result.se_scale)
    fitted = var_names.isin(result.feature_names)
    pos = result.feature_names.get_indexer(var_names[fitted])
    loglik = np.full(len(var_names), np.nan)
    loglik[fitted] = result.loglik.to_numpy()[pos]
    converged = np.zeros(len(var_names), dtype=bool)
    converged[fitted] = result.converged.to_numpy()[pos]
    status = np.full(len(var_names), "not_fitted", dtype=object)
    status[fitted] = result.status.astype(str).to_numpy()[pos]
    n_iter = np.full(len(var_names), -1, dtype=np.int64)
    n_iter[fitted] = result.n_iter.to_numpy()[pos]
    adata.var[f"{key}_loglik"] = loglik
    adata.var[f"{key}_converged"] = converged
    adata.var[f"{key}_status"] = pd.Categorical(status)
    adata.var[f"{key}_n_iter"] = n_iter
    adata.uns[key] = {
        "family": result.family.name,
        "loc": _design_record(result.loc, coef_loc.columns),
        "scale": _design_record(result.scale, coef_scale.columns),
        "settings": _h5ad_value(result.settings.as_dict()),
        "n_obs": len(result.obs_names),
        "version": __version__,
    }
    if result.random is not None:
        adata.varm[f"{key}_random_var"] = frame(result.random_var)
        for factor in result.random.factors:
            modes = result.random_effects(factor).T
            modes.columns = [str(c) for c in modes.columns]
            adata.varm[f"{key}_random_effects_{factor}"] = frame(modes)
        adata.uns[key]["random_effects"] = _h5ad_value(list(result.random.factors))
    return adata
