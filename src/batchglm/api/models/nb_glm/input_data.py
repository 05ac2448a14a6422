"""The seed's ``InputData``: data, designs and assignable seed-style constraints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from batchglm.api._arrays import SeedArray, as_matrix, labelled
from batchglm.api.models.nb_glm._common import _constraints, _design, _intercept


class InputData:
    """Data, designs and constraints for :class:`Estimator`, as in the seed.

    Create it with :meth:`new`. :attr:`constraints_loc` and :attr:`constraints_scale` can be
    assigned afterwards, in the seed's encoding: one row per zero-sum set of parameters,
    ``+1`` for its members and ``-1`` for the dependent parameter (a ready ``(p, p_free)``
    reparametrisation matrix is accepted as well, see :func:`batchglm.fit`).

    Parameters
    ----------
    X : SeedArray
        Counts, ``(observations, features)``.
    design_loc : SeedArray
        Location design, ``(observations, design_loc_params)``.
    design_scale : SeedArray
        Scale design, ``(observations, design_scale_params)``.
    size_factors : array_like, optional
        Positive per-observation size factors.
    """

    def __init__(
        self,
        X: SeedArray,
        design_loc: SeedArray,
        design_scale: SeedArray,
        size_factors: ArrayLike | None = None,
    ) -> None:
        self.X = X
        self.design_loc = design_loc
        self.design_scale = design_scale
        self.size_factors = None if size_factors is None else np.asarray(size_factors)
        self._constraints_loc: NDArray[np.float64] | None = None
        self._constraints_scale: NDArray[np.float64] | None = None

    @classmethod
    def new(
        cls,
        data: Any,
        design_loc: Any = None,
        design_scale: Any = None,
        constraints_loc: ArrayLike | None = None,
        constraints_scale: ArrayLike | None = None,
        size_factors: ArrayLike | None = None,
        design_loc_names: Sequence[str] | None = None,
        design_scale_names: Sequence[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> InputData:
        """Collect data, designs and constraints for an :class:`Estimator`.

        Parameters
        ----------
        data : array_like, pandas.DataFrame, xarray.DataArray or AnnData-like
            Counts, ``(observations, features)``. Feature names come from DataFrame
            columns, the DataArray's second coordinate or an AnnData's ``var_names``.
        design_loc : array_like, pandas.DataFrame or xarray.DataArray, optional
            Location design ``(observations, params)``; intercept-only if omitted.
        design_scale : array_like, pandas.DataFrame or xarray.DataArray, optional
            Scale design ``(observations, params)``; intercept-only if omitted.
        constraints_loc : array_like, optional
            Location constraints in the seed's encoding (see the class docstring).
        constraints_scale : array_like, optional
            Scale constraints in the seed's encoding.
        size_factors : array_like, optional
            Positive per-observation size factors.
        design_loc_names : sequence of str, optional
            Location parameter names.
        design_scale_names : sequence of str, optional
            Scale parameter names.
        feature_names : sequence of str, optional
            Feature names.

        Returns
        -------
        InputData
            The collected input.

        Raises
        ------
        ValueError
            When a design's rows do not match the observations of ``data``.
        """
        if not isinstance(data, xr.DataArray | pd.DataFrame) and hasattr(data, "var_names"):
            feature_names = feature_names or [str(v) for v in data.var_names]
            data = data.X
        values, features = as_matrix(data, "data", feature_names)
        X = labelled(values, ("observations", "features"), (None, features), name="X")
        n_obs = int(values.shape[0])
        loc = (
            _intercept(n_obs, "design_loc_params")
            if design_loc is None
            else _design(design_loc, "design_loc", "design_loc_params", design_loc_names)
        )
        scale = (
            _intercept(n_obs, "design_scale_params")
            if design_scale is None
            else _design(design_scale, "design_scale", "design_scale_params", design_scale_names)
        )
        for what, d in (("design_loc", loc), ("design_scale", scale)):
            if d.shape[0] != n_obs:
                raise ValueError(
                    f"`{what}` has {d.shape[0]} rows but `data` has {n_obs} observations; "
                    "they must match."
                )
        out = cls(X, loc, scale, size_factors=size_factors)
        out.constraints_loc = constraints_loc
        out.constraints_scale = constraints_scale
        return out

    @property
    def constraints_loc(self) -> NDArray[np.float64] | None:
        """Location constraints in the seed's encoding, or ``None``."""
        return self._constraints_loc

    @constraints_loc.setter
    def constraints_loc(self, value: ArrayLike | None) -> None:
        self._constraints_loc = _constraints(value, "constraints_loc")

    @property
    def constraints_scale(self) -> NDArray[np.float64] | None:
        """Scale constraints in the seed's encoding, or ``None``."""
        return self._constraints_scale

    @constraints_scale.setter
    def constraints_scale(self, value: ArrayLike | None) -> None:
        self._constraints_scale = _constraints(value, "constraints_scale")

    @property
    def num_observations(self) -> int:
        """Number of observations."""
        return int(self.X.shape[0])

    @property
    def num_features(self) -> int:
        """Number of features."""
        return int(self.X.shape[1])

    @property
    def num_design_loc_params(self) -> int:
        """Number of location parameters."""
        return int(self.design_loc.shape[1])

    @property
    def num_design_scale_params(self) -> int:
        """Number of scale parameters."""
        return int(self.design_scale.shape[1])

    @property
    def design_loc_names(self) -> list[str]:
        """Location parameter names."""
        return [str(n) for n in self.design_loc.coords["design_loc_params"].to_numpy()]

    @property
    def design_scale_names(self) -> list[str]:
        """Scale parameter names."""
        return [str(n) for n in self.design_scale.coords["design_scale_params"].to_numpy()]

    @property
    def feature_names(self) -> list[str] | None:
        """Feature names, or ``None`` when the data carried none."""
        if "features" not in self.X.coords:
            return None
        return [str(n) for n in self.X.coords["features"].to_numpy()]

    def fit_data(self) -> NDArray[Any] | pd.DataFrame:
        """Return the counts in the form handed to :func:`batchglm.fit`.

        Returns
        -------
        ndarray or pandas.DataFrame
            A DataFrame when feature names are known, else the plain matrix.
        """
        names = self.feature_names
        values = self.X.to_numpy()
        return values if names is None else pd.DataFrame(values, columns=names)
