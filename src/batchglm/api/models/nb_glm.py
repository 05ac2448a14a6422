"""Negative-binomial GLMs with the seed's surface: ``Simulator``, ``InputData``, ``Estimator``.

A thin translation layer: :class:`Simulator` calls :func:`batchglm.simulate`,
:class:`Estimator` calls :func:`batchglm.fit`, and both hand results back in the seed's
shapes and names, i.e. parameters as ``(n_params, n_features)`` labelled arrays with dims
``("design_loc_params", "features")`` / ``("design_scale_params", "features")``, data and
designs as ``("observations", ...)`` arrays. Those arrays are :class:`batchglm.api.SeedArray`
objects, xarray DataArrays that ``np.matmul`` accepts, so seed code such as
``np.matmul(estimator.design_loc, estimator.par_link_loc)`` keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

import batchglm as bg
from batchglm.api._arrays import SeedArray, as_matrix, labelled

__all__ = ["SEED_TRAINING_STRATEGIES", "Estimator", "InputData", "Simulator"]

logger = logging.getLogger("batchglm")

#: Training-strategy names of the seed's estimators; all of them run the exact solver here.
SEED_TRAINING_STRATEGIES: tuple[str, ...] = (
    "AUTO",
    "DEFAULT",
    "EXACT",
    "QUICK",
    "PRE_INITIALIZED",
    "CONSTRAINED",
    "CONTINUOUS",
    "BY_GENE",
    "INEXACT",
    "GD",
    "IRLS",
    "IRLS_TR",
    "IRLS_GD",
    "IRLS_GD_TR",
)

_LOC_DIMS = ("design_loc_params", "features")
_SCALE_DIMS = ("design_scale_params", "features")
_logged_notices: set[str] = set()


def _log_once(key: str, msg: str, *args: object) -> None:
    """Log an INFO notice the first time ``key`` comes up in this process."""
    if key not in _logged_notices:
        _logged_notices.add(key)
        logger.info(msg, *args)


def _design(dmat: Any, what: str, dim: str, names: Sequence[str] | None = None) -> SeedArray:
    """Read a design matrix into an ``("observations", dim)`` array with parameter names."""
    values, columns = as_matrix(dmat, what, names)
    if columns is None:
        columns = [f"p{j}" for j in range(values.shape[1])]
    return labelled(values.astype(np.float64), ("observations", dim), (None, columns))


def _intercept(n_obs: int, dim: str) -> SeedArray:
    """Build an intercept-only ``(n_obs, 1)`` design named ``"Intercept"``."""
    return labelled(np.ones((n_obs, 1)), ("observations", dim), (None, ["Intercept"]))


def _frame(design: SeedArray) -> pd.DataFrame:
    """Return the design as the DataFrame handed to the core (names as columns)."""
    names = [str(n) for n in design.coords[design.dims[1]].to_numpy()]
    return pd.DataFrame(design.to_numpy(), columns=names)


def _params(coef: pd.DataFrame, dims: tuple[str, str], name: str | None) -> SeedArray:
    """Turn a core ``(features x coefficients)`` frame into a seed ``(params, features)`` array."""
    return labelled(
        coef.to_numpy().T,
        dims,
        ([str(c) for c in coef.columns], [str(f) for f in coef.index]),
        name=name,
    )


def _constraints(value: ArrayLike | None, what: str) -> NDArray[np.float64] | None:
    """Validate the container of a seed constraint matrix; its meaning is checked by the core."""
    if value is None:
        return None
    m = np.array(value, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"`{what}` must be a 2-D matrix, but it has {m.ndim} dimension(s).")
    return m


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
        names = None if coords is None else coords.get("design_loc_params")
        self._design_loc = _design(dmat, "dmat", "design_loc_params", names)
        self.num_observations = int(self._design_loc.shape[0])
        self._clear()

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
        names = None if coords is None else coords.get("design_scale_params")
        self._design_scale = _design(dmat, "dmat", "design_scale_params", names)
        self.num_observations = int(self._design_scale.shape[0])
        self._clear()

    def _clear(self) -> None:
        self._sim = None
        self._par_link_loc = self._par_link_scale = self._X = None

    def _draw_seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        # Seed-era behaviour: simulations follow NumPy's global legacy random state.
        return int(np.random.randint(0, 2**31 - 1))  # noqa: NPY002

    def generate_params(self) -> None:
        """Draw the parameters (and, with them, the data) via :func:`batchglm.simulate`."""
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
        """Make the counts simulated with the current parameters available as :attr:`X`."""
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
        """Simulated counts, ``(observations, features)``."""
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
        """Location parameters on the link scale, ``(design_loc_params, features)``."""
        if self._par_link_loc is None:
            raise RuntimeError("No parameters yet: call `generate_params()` first.")
        return self._par_link_loc

    @property
    def par_link_scale(self) -> SeedArray:
        """Scale parameters on the link scale, ``(design_scale_params, features)``."""
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


class Estimator:
    """Fit a negative-binomial location/scale GLM with the seed's interface.

    All fitting is :func:`batchglm.fit`, which finds the exact maximum-likelihood estimate
    per feature. The seed's training strategies (``"AUTO"``, ``"DEFAULT"``, ``"EXACT"``,
    ``"QUICK"``, ``"PRE_INITIALIZED"``, ``"CONSTRAINED"``, ``"CONTINUOUS"``, ``"BY_GENE"``,
    ``"INEXACT"``, ``"GD"`` and the ``"IRLS*"`` variants, or a custom list of optimizer
    settings) are all mapped onto that exact solver; a notice is logged once per process.

    Parameters
    ----------
    input_data : InputData
        Data, designs and constraints; constraints are read when training starts.
    batch_size : int, optional
        Accepted for seed compatibility and ignored: the exact solver uses all data.
    quick_scale : bool, optional
        Accepted for seed compatibility and ignored: the scale model is always fitted.
    max_iter : int, optional
        Iteration limit passed to :func:`batchglm.fit`.
    tol : float, optional
        Convergence tolerance passed to :func:`batchglm.fit`.
    progress : object, optional
        Passed to :func:`batchglm.fit`.
    **seed_options : object
        Other seed-era options (``init_a``, ``init_b``, ``dtype``, ``termination_type``,
        ...); accepted and ignored with a notice.

    Examples
    --------
    >>> import numpy as np
    >>> import batchglm.api as glm
    >>> sim = glm.models.nb_glm.Simulator(num_features=5, seed=0)
    >>> sim.parse_dmat_loc(dmat=np.column_stack([np.ones(200), np.repeat([0, 1], 100)]))
    >>> sim.generate()
    >>> data = glm.models.nb_glm.InputData.new(data=sim.X, design_loc=sim.design_loc)
    >>> est = glm.models.nb_glm.Estimator(data)
    >>> est.initialize()
    >>> est.train_sequence("QUICK")
    >>> est.par_link_loc.dims
    ('design_loc_params', 'features')
    """

    def __init__(
        self,
        input_data: InputData,
        batch_size: int = 500,
        quick_scale: bool = False,
        *,
        max_iter: int = 100,
        tol: float = 1e-10,
        progress: Any = None,
        **seed_options: Any,
    ) -> None:
        if not isinstance(input_data, InputData):
            raise TypeError(
                "`input_data` must come from `glm.models.nb_glm.InputData.new(...)`, got "
                f"{type(input_data).__name__}."
            )
        self.input_data = input_data
        self.max_iter = max_iter
        self.tol = tol
        self.progress = progress
        if quick_scale:
            _log_once(
                "quick_scale",
                "quick_scale=True is ignored: batchglm always fits the scale model exactly.",
            )
        if seed_options:
            _log_once(
                "seed_options:" + ",".join(sorted(seed_options)),
                "Seed-era estimator options %s are ignored: batchglm.fit needs none of them.",
                sorted(seed_options),
            )
        self._result: Any = None

    def initialize(self) -> None:
        """Prepare training (nothing to do: :func:`batchglm.fit` initialises itself)."""
        logger.debug("Estimator.initialize(): batchglm.fit initialises itself.")

    def train_sequence(
        self, training_strategy: str | Sequence[Mapping[str, Any]] | None = "AUTO"
    ) -> None:
        """Fit the model; every seed training strategy runs the exact solver.

        Parameters
        ----------
        training_strategy : str or sequence of dict, optional
            A seed strategy name (see :data:`SEED_TRAINING_STRATEGIES`, case-insensitive)
            or a custom list of seed optimizer settings. Any of them maps onto the exact
            solver of :func:`batchglm.fit`.

        Raises
        ------
        ValueError
            If ``training_strategy`` is a name the seed did not know.
        """
        if isinstance(training_strategy, str):
            if training_strategy.upper() not in SEED_TRAINING_STRATEGIES:
                raise ValueError(
                    f"Unknown training strategy {training_strategy!r}; the seed's names are "
                    f"{', '.join(SEED_TRAINING_STRATEGIES)} (all run the exact solver)."
                )
        _log_once(
            "training_strategy",
            "Training strategy %r: batchglm maps all seed training strategies onto its exact "
            "maximum-likelihood solver (batchglm.fit).",
            training_strategy,
        )
        self._fit()

    def train(self, **kwargs: Any) -> None:
        """Fit the model with the exact solver; seed optimizer settings are ignored.

        Parameters
        ----------
        **kwargs : object
            Seed optimizer settings (``learning_rate``, ``optim_algo``, ...); ignored.
        """
        _log_once(
            "train",
            "Estimator.train(): seed optimizer settings are ignored; batchglm fits with its "
            "exact maximum-likelihood solver (batchglm.fit).",
        )
        self._fit()

    def _fit(self) -> None:
        d = self.input_data
        self._result = bg.fit(
            d.fit_data(),
            _frame(d.design_loc),
            _frame(d.design_scale),
            constraints_loc=d.constraints_loc,
            constraints_scale=d.constraints_scale,
            size_factors=d.size_factors,
            family="nb",
            max_iter=self.max_iter,
            tol=self.tol,
            progress=self.progress,
        )
        conv = np.asarray(self._result.converged, dtype=bool)
        logger.info("Fit finished: %d of %d features converged.", int(conv.sum()), conv.size)

    def finalize(self) -> Estimator:
        """Return the trained estimator (the seed returned a result store here).

        Returns
        -------
        Estimator
            ``self``, which exposes all results.
        """
        self.fit_result  # noqa: B018 - raises if not trained
        return self

    @property
    def fit_result(self) -> Any:
        """The :func:`batchglm.fit` result behind this estimator."""
        if self._result is None:
            raise RuntimeError("Not trained yet: call `train_sequence(...)` first.")
        return self._result

    def _features(self) -> list[str]:
        return [str(f) for f in self.fit_result.coef_loc.index]

    def _param_array(self, coef: pd.DataFrame, dims: tuple[str, str]) -> SeedArray:
        out = _params(coef, dims, None)
        allzero = np.all(self.input_data.X.to_numpy() == 0, axis=0)
        return out.assign_coords(feature_allzero=("features", allzero))

    @property
    def par_link_loc(self) -> SeedArray:
        """Fitted location parameters, ``(design_loc_params, features)``."""
        return self._param_array(self.fit_result.coef_loc, _LOC_DIMS)

    @property
    def par_link_scale(self) -> SeedArray:
        """Fitted scale parameters, ``(design_scale_params, features)``."""
        return self._param_array(self.fit_result.coef_scale, _SCALE_DIMS)

    @property
    def a(self) -> SeedArray:
        """Seed alias of :attr:`par_link_loc`."""
        return self.par_link_loc

    @property
    def b(self) -> SeedArray:
        """Seed alias of :attr:`par_link_scale`."""
        return self.par_link_scale

    @property
    def design_loc(self) -> SeedArray:
        """Location design, ``(observations, design_loc_params)``."""
        return self.input_data.design_loc

    @property
    def design_scale(self) -> SeedArray:
        """Scale design, ``(observations, design_scale_params)``."""
        return self.input_data.design_scale

    @property
    def log_likelihood(self) -> xr.DataArray:
        """Log-likelihood per feature at the estimate, ``(features,)``."""
        ll = np.asarray(self.fit_result.loglik, dtype=np.float64)
        return xr.DataArray(ll, dims=("features",), coords={"features": self._features()})

    @property
    def loss(self) -> float:
        """Seed loss: negative log-likelihood summed over features, per observation."""
        return -float(np.sum(self.log_likelihood.to_numpy())) / self.input_data.num_observations

    @property
    def fisher_inv(self) -> xr.DataArray:
        """Inverse observed Fisher information per feature.

        Dims ``("features", "delta_var0", "delta_var1")`` as in the seed; the parameter axes
        hold the location parameters first, then the scale parameters (full parameters, so
        the matrix is singular under constraints), labelled ``"loc:<name>"`` and
        ``"scale:<name>"``.
        """
        cov = np.asarray(self.fit_result.covariance(), dtype=np.float64)
        names = [f"loc:{c}" for c in self.fit_result.coef_loc.columns] + [
            f"scale:{c}" for c in self.fit_result.coef_scale.columns
        ]
        return xr.DataArray(
            cov,
            dims=("features", "delta_var0", "delta_var1"),
            coords={"features": self._features(), "delta_var0": names, "delta_var1": names},
        )

    @property
    def converged(self) -> xr.DataArray:
        """Whether the fit converged, per feature, ``(features,)``."""
        conv = np.asarray(self.fit_result.converged, dtype=bool)
        return xr.DataArray(conv, dims=("features",), coords={"features": self._features()})

    @property
    def n_iter(self) -> xr.DataArray:
        """Solver iterations per feature, ``(features,)``."""
        it = np.asarray(self.fit_result.n_iter)
        return xr.DataArray(it, dims=("features",), coords={"features": self._features()})

    @property
    def status(self) -> xr.DataArray:
        """Solver status per feature (e.g. ``"converged"``), ``(features,)``."""
        st = np.asarray(self.fit_result.status, dtype=object)
        return xr.DataArray(st, dims=("features",), coords={"features": self._features()})
