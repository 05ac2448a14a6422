"""The seed's ``Estimator``: every training strategy runs :func:`batchglm.fit`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

import batchglm as bg
from batchglm.api._arrays import SeedArray
from batchglm.api.models.nb_glm._common import (
    _LOC_DIMS,
    _SCALE_DIMS,
    SEED_TRAINING_STRATEGIES,
    _frame,
    _log_once,
    _params,
    logger,
)
from batchglm.api.models.nb_glm.input_data import InputData


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
        """The :func:`batchglm.fit` result behind this estimator.

        Raises
        ------
        RuntimeError
            Before :meth:`train_sequence` has run.
        """
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
