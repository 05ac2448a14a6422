"""Negative binomial and Poisson GLMs with random intercepts, fitted by the Laplace method.

``bg.fit(..., random_effects="donor")`` lands here (see :mod:`batchglm.mixed.fit`). The
modules, one idea each:

* :mod:`batchglm.mixed.grouping`: the grouping factor as a group index per observation.
* :mod:`batchglm.mixed.third_derivatives`: third and fourth derivatives of the
  log-likelihood in the predictors, which the gradient and Hessian of the Laplace objective
  need.
* :mod:`batchglm.mixed.inner`: the batched mode of the random intercepts (features x groups).
* :mod:`batchglm.mixed.laplace`: the Laplace marginal log-likelihood as an objective for
  the Newton engine of :mod:`batchglm.solvers.newton`.
* :mod:`batchglm.mixed.outer_hessian`: its analytic Hessian (one factor).
* :mod:`batchglm.mixed.reml`: the restricted (REML) Laplace likelihood, fixed effects
  integrated out with the random intercepts (``reml=True``, one factor).
* :mod:`batchglm.mixed.small_sample`: between-within denominator degrees of freedom and the
  group-level reference of features whose variance is 0.
* :mod:`batchglm.mixed.moderation`: empirical-Bayes moderation of the group-level variance
  across features for the Wald tests (the default of ``bg.de.wald`` on mixed fits).
* :mod:`batchglm.mixed.fit`: orchestration over feature chunks.

See ``docs/mixed_model.md``.
"""

from __future__ import annotations
