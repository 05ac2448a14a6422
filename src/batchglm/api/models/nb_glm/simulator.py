"""The seed's ``Simulator``: parameters and data drawn by :func:`batchglm.simulate`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

import batchglm as bg
from batchglm.api._arrays import SeedArray, labelled
from batchglm.api.models.nb_glm._common import (
    _LOC_DIMS,
    _SCALE_DIMS,
    _design,
    _frame,
    _intercept,
    _params,
)


class Simulator:
    """Simulate negative-binomial count data from a location/scale GLM, as in the seed.

    The draw itself is :func:`batchglm.simulate`: the location intercept gives mean counts of
    hundreds to thousands, the scale intercept is ``log(r)`` for an integer ``r`` in 1..10,
    and other coefficients are uniform in about +-0.7. No constraints are imposed on the
    simulated parameters (as in the seed).

    Parameters
    ----------
    num_observations : int, optional
        Number of observations when no design is parsed (intercept-only designs are used
        then); a parsed design sets it to its number of rows.
    num_features : int, optional
        Number of features to simulate.
    seed : int, optional
        Seed for :func:`batchglm.simulate`. With a seed, every :meth:`generate_params` call
        draws the same parameters and data. Without one, a seed is drawn from NumPy's global
        legacy random state, so ``np.random.seed(...)`` makes seed-era scripts reproducible
        as it did in the seed.

    Attributes
    ----------
    num_observations : int
        Number of observations.
    num_features : int
        Number of features.
    seed : int or None
        The seed given.

    Notes
    -----
    :meth:`generate_params` simulates parameters and data together in one
    :func:`batchglm.simulate` call; :meth:`generate_data` then exposes that data as
    :attr:`X`. Calling :meth:`generate_data` again therefore returns the same data rather
    than a fresh draw from the same parameters.

    Examples
    --------
    >>> import numpy as np
    >>> import batchglm.api as glm
    >>> sim = glm.models.nb_glm.Simulator(num_features=10, seed=1)
    >>> sim.parse_dmat_loc(dmat=np.column_stack([np.ones(100), np.repeat([0, 1], 50)]))
    >>> sim.generate_params()
    >>> sim.generate_data()
    >>> sim.X.shape, sim.par_link_loc.shape
    ((100, 10), (2, 10))
    """

    def __init__(
        self, num_observations: int = 1000, num_features: int = 100, seed: int | None = None
    ) -> None:
        if int(num_features) < 1 or int(num_observations) < 1:
            raise ValueError(
                "`num_features` and `num_observations` must be positive, but they are "
                f"{num_features} and {num_observations}."
            )
        self.num_observations = int(num_observations)
        self.num_features = int(num_features)
        self.seed = seed
        self._design_loc: SeedArray | None = None
        self._design_scale: SeedArray | None = None
        self._sim: Any = None
        self._par_link_loc: SeedArray | None = None
        self._par_link_scale: SeedArray | None = None
        self._X: SeedArray | None = None

    def parse_dmat_loc(self, dmat: Any, coords: Mapping[str, Sequence[str]] | None = None) -> None:
        """Set the location design matrix.

        Parameters
        ----------
        dmat : array_like, pandas.DataFrame or xarray.DataArray
            ``(n_observations, n_params)`` design. Parameter names come from DataFrame
            columns or the DataArray's second coordinate, else ``"p0"``, ``"p1"``, ...
        coords : mapping, optional
            Seed-style coordinates, e.g. ``{"design_loc_params": names}``.
        """
        self._design_loc = self._parse(dmat, coords, "design_loc_params")

    def parse_dmat_scale(
        self, dmat: Any, coords: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Set the scale design matrix.

        Parameters
        ----------
        dmat : array_like, pandas.DataFrame or xarray.DataArray
            ``(n_observations, n_params)`` design. Parameter names come from DataFrame
            columns or the DataArray's second coordinate, else ``"p0"``, ``"p1"``, ...
        coords : mapping, optional
            Seed-style coordinates, e.g. ``{"design_scale_params": names}``.
        """
        self._design_scale = self._parse(dmat, coords, "design_scale_params")

    def _parse(self, dmat: Any, coords: Mapping[str, Sequence[str]] | None, dim: str) -> SeedArray:
        """Label a design, record its number of observations and drop earlier draws."""
        names = None if coords is None else coords.get(dim)
        design = _design(dmat, "dmat", dim, names)
        self.num_observations = int(design.shape[0])
        self._clear()
        return design

    def _clear(self) -> None:
        self._sim = None
        self._par_link_loc = self._par_link_scale = self._X = None

    def _draw_seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        # Seed-era behaviour: simulations follow NumPy's global legacy random state.
        return int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002

    def generate_params(self) -> None:
        """Draw the parameters (and, with them, the data) via :func:`batchglm.simulate`.

        Raises
        ------
        ValueError
            When the location and scale designs have different numbers of rows.
        """
        design_loc = self.design_loc
        design_scale = self.design_scale
        if design_loc.shape[0] != design_scale.shape[0]:
            raise ValueError(
                f"The location design has {design_loc.shape[0]} rows but the scale design has "
                f"{design_scale.shape[0]}; they must match."
            )
        sim = bg.simulate(
            _frame(design_loc),
            _frame(design_scale),
            n_features=self.num_features,
            family="nb",
            seed=self._draw_seed(),
        )
        self._sim = sim
        self._par_link_loc = _params(sim.coef_loc, _LOC_DIMS, "a")
        self._par_link_scale = _params(sim.coef_scale, _SCALE_DIMS, "b")
        self._X = None

    def generate_data(self) -> None:
        """Make the counts simulated with the current parameters available as :attr:`X`.

        Raises
        ------
        RuntimeError
            Before :meth:`generate_params` has run.
        """
        if self._sim is None:
            raise RuntimeError("No parameters yet: call `generate_params()` first.")
        data = np.asarray(self._sim.data)
        features = [str(f) for f in self._sim.coef_loc.index]
        self._X = labelled(data, ("observations", "features"), (None, features), name="X")

    def generate(self) -> None:
        """Draw parameters and data: :meth:`generate_params` then :meth:`generate_data`."""
        self.generate_params()
        self.generate_data()

    @property
    def X(self) -> SeedArray:
        """Simulated counts, ``(observations, features)``.

        Raises
        ------
        RuntimeError
            Before :meth:`generate_params` and :meth:`generate_data` have run.
        """
        if self._X is None:
            raise RuntimeError("No data yet: call `generate_params()` and `generate_data()`.")
        return self._X

    @property
    def design_loc(self) -> SeedArray:
        """Location design, ``(observations, design_loc_params)``; intercept-only if unset."""
        if self._design_loc is None:
            return _intercept(self.num_observations, "design_loc_params")
        return self._design_loc

    @property
    def design_scale(self) -> SeedArray:
        """Scale design, ``(observations, design_scale_params)``; intercept-only if unset."""
        if self._design_scale is None:
            return _intercept(self.num_observations, "design_scale_params")
        return self._design_scale

    @property
    def par_link_loc(self) -> SeedArray:
        """Location parameters on the link scale, ``(design_loc_params, features)``.

        Raises
        ------
        RuntimeError
            Before :meth:`generate_params` has run.
        """
        if self._par_link_loc is None:
            raise RuntimeError("No parameters yet: call `generate_params()` first.")
        return self._par_link_loc

    @property
    def par_link_scale(self) -> SeedArray:
        """Scale parameters on the link scale, ``(design_scale_params, features)``.

        Raises
        ------
        RuntimeError
            Before :meth:`generate_params` has run.
        """
        if self._par_link_scale is None:
            raise RuntimeError("No parameters yet: call `generate_params()` first.")
        return self._par_link_scale

    @property
    def a(self) -> SeedArray:
        """Seed alias of :attr:`par_link_loc`."""
        return self.par_link_loc

    @property
    def b(self) -> SeedArray:
        """Seed alias of :attr:`par_link_scale`."""
        return self.par_link_scale

    @property
    def size_factors(self) -> NDArray[np.float64] | None:
        """Size factors used by the simulation (all ones), ``None`` before simulating."""
        if self._sim is None:
            return None
        return np.asarray(self._sim.size_factors, dtype=np.float64)
