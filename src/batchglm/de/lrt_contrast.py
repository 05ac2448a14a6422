"""Likelihood-ratio test of a contrast: the full design under the constraint ``L a = 0``.

As edgeR's ``glmLRT(contrast=)``: :func:`contrast_null_constraints` gives the reduced
model's constraint matrix for :func:`batchglm.de.lrt.lrt`, and :func:`with_contrast_effect`
reports the contrast (its estimate, standard error and label) as the test's effect.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from batchglm.de.result import DEResult
from batchglm.de.statistics import RANK_RTOL, wald_rows
from batchglm.de.wald import ContrastLike, test_rows
from batchglm.result import FitResult

Array = NDArray[np.float64]


def contrast_null_constraints(
    res: FitResult, contrast: ContrastLike
) -> tuple[Array, Array, list[str]]:
    """Location constraints of the reduced model ``L a = 0`` for a contrast ``L``.

    The LRT of a contrast as edgeR's ``glmLRT(contrast=)`` (McCarthy, Chen & Smyth 2012):
    edgeR reparametrises the design so that the contrast is one coefficient and drops it;
    here the full design is kept and its free parameters ``a = C b`` are restricted to the
    null space of ``L C``, i.e. the reduced constraint matrix is ``C N`` with ``N`` an
    orthonormal basis of that null space (from the SVD; singular values below
    :data:`batchglm.de.statistics.RANK_RTOL` of the largest count as 0). Both span the same
    reduced model, so the likelihood ratio is the same.

    Parameters
    ----------
    res : FitResult
        The full fit (its location design and constraints ``C``, ``p x k``).
    contrast : array_like, pandas.Series, pandas.DataFrame, dict or tuple
        One or more contrasts over the location coefficients, as in
        :func:`batchglm.de.wald` (e.g. ``("condition", "trt", "ctrl")``).

    Returns
    -------
    lmat : ndarray
        ``(n_contrasts, p)`` the contrast rows.
    constraints : ndarray
        ``(p, k - rank)`` the reduced model's location constraint matrix.
    labels : list of str
        One label per contrast row.

    Raises
    ------
    ValueError
        When the contrasts are zero under the fit's constraints (nothing to test) or cover
        every free location parameter (no reduced model is left), and for contrasts that
        :func:`batchglm.de.wald` refuses.
    """
    lmat, labels = test_rows(res, None, contrast, res.loc, "loc")
    c = res.loc.constraints
    _, s, vt = np.linalg.svd(lmat @ c, full_matrices=True)
    rank = int((s > RANK_RTOL * max(s.max(initial=0.0), 1e-300)).sum())
    if rank == 0 or s.max(initial=0.0) < 1e-12:
        raise ValueError(
            f"the contrast(s) {labels} are zero under the location constraints, so there is "
            "nothing to test; give a contrast of coefficients the constraints leave free."
        )
    if rank == c.shape[1]:
        raise ValueError(
            f"the contrast(s) {labels} cover all {rank} free location parameters, so the "
            "reduced model would have none; test fewer contrasts."
        )
    return lmat, c @ vt[rank:].T, labels


def with_contrast_effect(de: DEResult, lmat: Array, labels: list[str]) -> DEResult:
    """Report the contrast estimate as the effect of a likelihood-ratio test.

    Parameters
    ----------
    de : DEResult
        The LRT of ``L a = 0`` (from :func:`lrt`, any ``dispersion``); its full fit
        ``de.fit`` is the one the statistic was computed on.
    lmat : ndarray
        ``(n_contrasts, p)`` the contrast rows.
    labels : list of str
        Their labels.

    Returns
    -------
    DEResult
        ``de`` with ``coef_mle`` the estimate ``L a`` (natural log) and ``coef_se`` its
        Wald standard error (times the root of the QL dispersion for ``dispersion="ql"``,
        as :func:`batchglm.de.shrunken.attach`) for a single contrast, ``NaN`` for several;
        ``estimates`` the estimates of every row; ``tested`` names the contrast.
    """
    fit_ = de.fit
    if fit_ is None:
        return de
    w = wald_rows(fit_, fit_.loc, 0, lmat, labels, "loc")
    se = w.coef_se
    if de.ql_dispersion is not None:
        se = se * np.sqrt(de.ql_dispersion)
    return replace(
        de,
        coef_mle=w.coef_mle,
        coef_se=se,
        effect_model=w.effect_model,
        estimates=w.estimates,
        tested=f"{', '.join(labels)} = 0 (likelihood ratio; reduced: the full design under "
        "the contrast)",
    )
