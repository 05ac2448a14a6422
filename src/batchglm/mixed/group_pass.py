"""Per-group sums of the conditional terms of a random-intercept fit, in one compiled pass.

Everything the one-factor Laplace objective (:mod:`batchglm.mixed.laplace`) needs from the
data is a per-group sum over the observations: an inner Newton step needs ``S1 = sum d ll
/ d eta`` and ``S2 = sum d^2 ll / d eta^2`` of every ``(group, feature)`` pair; the value,
gradient and analytic Hessian (:mod:`batchglm.mixed.outer_hessian`) need ``sum ll`` and
per-group moments ``sum_{j in g} w_j a_j a_j^T`` of the design rows ``a_j = (1, x_j)`` and
``b_j = (1, z_j)`` weighted by the derivatives of order two to four. Computed with NumPy,
each is a pass that writes an ``(n_obs, F)`` array of terms and a sparse product that
reads it back (with the third and fourth derivatives about 13 such passes per
evaluation). Here:

* :meth:`GroupPass.point` computes ``q = mu / r`` at random intercepts 0 once per
  evaluation (one exponential per observation);
* :meth:`GroupPass.sums`, the pass of an inner step, multiplies it by ``exp(u_g)`` and
  sums ``S1`` and ``S2`` by group (no exponential or logarithm per observation);
* :meth:`GroupPass.moments`, the pass at the mode, computes ``ll`` and every moment in one
  go; :meth:`GroupPass.joint_moments` the lighter pass of a REML joint Newton step;
  :meth:`GroupPass.loglik` the value alone.

Nothing of size ``n_obs x F`` is written; the accumulators are ``(n_groups, m, F)``.

Fewer products: the rows of each group are written in the coordinates of the columns that
vary within groups (:class:`batchglm.mixed.row_basis.RowBasis`). With ``~ condition + x``
and an intercept-only scale the second moments take 3 + 2 + 1 products per derivative
order instead of 10 + 8 + 3.

Family terms: those of :mod:`batchglm.families.nb_kernel`,
:mod:`batchglm.mixed.third_derivatives` and the Poisson family, except that ``q`` is the
product above (it differs from ``exp(eta - log r)`` in the last bit) and ``log1p(q)`` is
``log(1 + q)`` for ``q >= 0.01``. Sums run over the observations in their order, as the
sparse group sums do; both paths agree to about ``1e-12`` in the fits
(``tests/test_mixed_fused_pass.py``). The kernels are
:mod:`batchglm.mixed.group_pass_compiled`, compiled by numba on first use (cached on disk;
the GIL is released, so chunks run in parallel threads); :func:`applies` says when
(:data:`ENABLED`, and ``batchglm.families.nb_kernel.ENABLED``, switched off by
``BATCHGLM_NUMBA=0``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from batchglm.families import nb_kernel
from batchglm.mixed.row_basis import RowBasis, embed, symmetric, upper_triangle

Array = NDArray[np.float64]

#: Use the compiled passes where they apply (switch for tests that compare both paths).
ENABLED = True
#: Family codes of the compiled kernels.
_NB = 0
_POISSON = 1
FAMILY_CODES = {"nb": _NB, "poisson": _POISSON}


def applies(family: str, y: Array) -> bool:
    """Tell whether the compiled per-group passes can evaluate this block.

    Parameters
    ----------
    family : str
        Family name.
    y : ndarray
        Counts ``(n_obs, F)``.

    Returns
    -------
    bool
        True for ``nb`` and ``poisson`` with a 2-D float64 block while the compiled
        kernels are enabled (:data:`ENABLED` and
        :data:`batchglm.families.nb_kernel.ENABLED`). Unlike the NB
        kernel there is no minimum size: a random-intercept fit costs many passes, and the
        one-time load of the kernels (about 0.5 s per process) pays off on small data too.
    """
    return (
        ENABLED
        and nb_kernel.ENABLED
        and family in FAMILY_CODES
        and isinstance(y, np.ndarray)
        and y.ndim == 2
        and y.dtype == np.float64
    )


@dataclass
class ModeMoments:
    """Per-group sums at the modes, ``(n_groups, F, ...)``, in full design coordinates.

    Attributes
    ----------
    ll : ndarray
        ``(G, F)`` sum of the conditional log-likelihood terms (count terms excluded).
    first_loc : ndarray
        ``(G, F, p)`` ``sum d_loc a_j``; entry 0 is ``S1``.
    first_scale : ndarray or None
        ``(G, F, ps)`` ``sum d_scale b_j`` (``None`` without a scale).
    loc : tuple of ndarray
        For derivative orders 2, 3, 4: ``(G, F, p, p)`` ``sum d_o a_j a_j^T`` (``d_o`` the
        ``o``-th derivative in the location predictor); ``loc[0][..., 0, 0]`` is ``S2``.
    cross : tuple of ndarray or None
        ``(G, F, p, ps)`` ``sum c_o a_j b_j^T`` with ``c2 = d2_cross`` and ``c3``, ``c4``
        of :mod:`batchglm.mixed.third_derivatives`.
    scale : tuple of ndarray or None
        ``(G, F, ps, ps)`` ``sum e_o b_j b_j^T`` with ``e2 = d2_scale``, ``e3``, ``e4``.
    """

    ll: Array
    first_loc: Array
    first_scale: Array | None
    loc: tuple[Array, Array, Array]
    cross: tuple[Array, Array, Array] | None
    scale: tuple[Array, Array, Array] | None

    def raw(self, order: int) -> tuple[Array, Array | None, Array | None]:
        """Return the three moments of one derivative order (2, 3 or 4).

        Parameters
        ----------
        order : int
            Derivative order.

        Returns
        -------
        tuple
            ``(loc, cross, scale)`` of that order, as
            :meth:`batchglm.mixed.outer_hessian.GroupMoments.raw` returns them.
        """
        o = order - 2
        cross = None if self.cross is None else self.cross[o]
        scale = None if self.scale is None else self.scale[o]
        return self.loc[o], cross, scale

    @property
    def s1(self) -> Array:
        """``(G, F)`` group sums of ``d ll / d eta``."""
        return self.first_loc[..., 0]

    @property
    def s2(self) -> Array:
        """``(G, F)`` group sums of ``d^2 ll / d eta^2``."""
        return self.loc[0][..., 0, 0]


@dataclass
class Point:
    """The predictors of one evaluation, prepared once for all its passes.

    Attributes
    ----------
    eta_fixed : ndarray
        ``(n_obs, F)`` fixed part of the location predictor (offset included).
    log_r : ndarray
        ``(1, F)`` or ``(n_obs, F)`` scale predictor (NB; zeros for Poisson).
    r : ndarray
        ``exp(log_r)``.
    base : ndarray
        ``(n_obs, F)`` ``q = mu / r`` (NB) or ``mu`` (Poisson) at random intercepts 0: a
        pass at intercepts ``u_g`` multiplies it by ``exp(u_g)`` instead of taking an
        exponential per observation.
    """

    eta_fixed: Array
    log_r: Array
    r: Array
    base: Array


class GroupPass:
    """The compiled per-group passes over one block of features.

    Parameters
    ----------
    family : {"nb", "poisson"}
        Family name.
    y : ndarray
        Counts ``(n_obs, F)``.
    index : ndarray of int
        ``(n_obs,)`` group of each observation.
    n_groups : int
        Number of groups.
    loc_basis : RowBasis
        Location rows ``(1, x_j)`` per group.
    scale_basis : RowBasis or None
        Scale rows ``(1, z_j)`` per group (NB); ``None`` for Poisson.
    """

    def __init__(
        self,
        family: str,
        y: Array,
        index: NDArray[np.intp],
        n_groups: int,
        loc_basis: RowBasis,
        scale_basis: RowBasis | None,
    ) -> None:
        self.family = family
        self.code = FAMILY_CODES[family]
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.index = np.ascontiguousarray(index, dtype=np.intp)
        self.n_groups = n_groups
        self.loc_basis = loc_basis
        self.scale_basis = scale_basis if self.code == _NB else None
        n = self.y.shape[0]
        self._tl = loc_basis.coords
        self._ts = self.scale_basis.coords if self.scale_basis is not None else np.zeros((n, 0))
        rl, rs = self._tl.shape[1], self._ts.shape[1]
        self._tri_l = upper_triangle(rl)
        self._tri_s = upper_triangle(rs)
        self._coords = np.ascontiguousarray(np.column_stack([self._tl, self._ts]))
        tri_l = self._tri_l
        tri_s = (self._tri_s[0] + rl, self._tri_s[1] + rl)
        cross_a, cross_b = (
            x.ravel() for x in np.meshgrid(np.arange(rl), rl + np.arange(rs), indexing="ij")
        )
        zero = np.zeros(1, dtype=np.intp)
        # Accumulators of the moments pass: (term of ``wb``, product of coordinates). Terms:
        # 0 ll, 1 d_loc, 2 d_scale, 3-5 d2-d4, 6-8 c2-c4, 9-11 e2-e4 (see _moments).
        blocks = [(0, zero, zero), (1, np.arange(rl), np.zeros(rl, np.intp))]
        blocks.append((2, rl + np.arange(rs), np.zeros(rs, np.intp)))
        blocks += [(3 + o, tri_l[0], tri_l[1]) for o in range(3)]
        blocks += [(6 + o, cross_a, cross_b) for o in range(3)]
        blocks += [(9 + o, tri_s[0], tri_s[1]) for o in range(3)]
        self._plan = _plan(blocks)
        #: The light pass (ll, d_loc x t, d2_loc x t t^T) of a joint mode solve.
        self._light_plan = _plan([blocks[0], blocks[1], blocks[3]])

    def subset(self, keep: NDArray[np.bool_]) -> GroupPass:
        """Restrict to the features where ``keep`` is true.

        Parameters
        ----------
        keep : ndarray of bool
            Mask over features.

        Returns
        -------
        GroupPass
            Same designs and groups, fewer features.
        """
        return GroupPass(
            self.family,
            self.y[:, keep],
            self.index,
            self.n_groups,
            self.loc_basis,
            self.scale_basis,
        )

    def point(self, eta_fixed: Array, eta_scale: Array) -> Point:
        """Prepare the predictors of an evaluation (one exponential per observation).

        Parameters
        ----------
        eta_fixed : ndarray
            ``(n_obs, F)`` fixed part of the location predictor (offset included).
        eta_scale : ndarray
            Scale predictor, ``(1, F)`` or ``(n_obs, F)`` (ignored for Poisson).

        Returns
        -------
        Point
            Inputs of :meth:`sums` and :meth:`moments`.
        """
        eta_fixed = np.ascontiguousarray(eta_fixed, dtype=np.float64)
        n, n_feat = self.y.shape
        if self.code != _NB:
            zeros = np.zeros((1, n_feat))
            return Point(eta_fixed, zeros, zeros + 1.0, np.exp(eta_fixed))
        log_r = np.asarray(eta_scale, dtype=np.float64)
        if log_r.ndim != 2 or log_r.shape[0] not in (1, n):
            log_r = np.broadcast_to(log_r, (n, n_feat))
        log_r = np.ascontiguousarray(log_r)
        base = np.subtract(eta_fixed, log_r)
        np.exp(base, out=base)
        return Point(eta_fixed, log_r, np.exp(log_r), base)

    def sums(self, point: Point, shift: Array) -> tuple[Array, Array]:
        """Group sums of ``d ll / d eta`` and ``d^2 ll / d eta^2``.

        Parameters
        ----------
        point : Point
            From :meth:`point`.
        shift : ndarray
            ``(n_groups, F)`` random intercepts ``sigma v_g`` added to the predictor.

        Returns
        -------
        s1, s2 : ndarray
            Each ``(n_groups, F)``.
        """
        n_feat = self.y.shape[1]
        acc = np.zeros((self.n_groups, 2, n_feat))
        with np.errstate(over="ignore"):
            factor = np.exp(shift)
        _kernel("sums")(self.code, self.y, point.base, point.r, self.index, factor, acc)
        return acc[:, 0], acc[:, 1]

    def loglik(self, point: Point, shift: Array) -> Array:
        """Group sums of the conditional log-likelihood terms (count terms excluded).

        Parameters
        ----------
        point : Point
            From :meth:`point`.
        shift : ndarray
            ``(n_groups, F)`` random intercepts ``sigma v_g``.

        Returns
        -------
        ndarray
            ``(n_groups, F)``.
        """
        acc = np.zeros((self.n_groups, self.y.shape[1]))
        _kernel("loglik")(*self._kernel_args(point, shift), acc)
        return acc

    def _kernel_args(self, point: Point, shift: Array) -> tuple[Any, ...]:
        """Leading arguments of the ``loglik`` and ``moments`` kernels at a point and shift."""
        shift = np.ascontiguousarray(shift, dtype=np.float64)
        with np.errstate(over="ignore"):
            factor = np.exp(shift)
        return (
            self.code,
            self.y,
            point.base,
            point.eta_fixed,
            point.log_r,
            point.r,
            self.index,
            shift,
            factor,
        )

    def _pass(
        self,
        point: Point,
        shift: Array,
        plan: tuple[NDArray[np.intp], ...],
        light: bool,
        coords: Array | None = None,
    ) -> Array:
        """Run the moments kernel with an accumulator plan; ``(G, width, F)`` sums."""
        term, prod_a, prod_b = plan
        acc = np.zeros((self.n_groups, term.size, self.y.shape[1]))
        _kernel("moments")(
            *self._kernel_args(point, shift),
            self._coords if coords is None else coords,
            prod_a,
            prod_b,
            term,
            light,
            acc,
        )
        return acc

    def weighted_sums(
        self,
        point: Point,
        shift: Array,
        coords: Array,
        plan: tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]],
    ) -> Array:
        """Per-group sums of derivative terms times products of two given coordinates.

        Parameters
        ----------
        point : Point
            From :meth:`point`.
        shift : ndarray
            ``(n_groups, F)`` random intercepts ``sigma v_g``.
        coords : ndarray
            ``(n_obs, c)`` per-observation coordinates (C-contiguous).
        plan : tuple of ndarray of int
            ``(term, a, b)``: accumulator ``k`` sums term ``term[k]`` (numbered as in
            :meth:`moments`: 0 ll, 1 d_loc, 2 d_scale, 3-5 d2-d4, 6-8 c2-c4, 9-11 e2-e4)
            times ``coords[:, a[k]] * coords[:, b[k]]``.

        Returns
        -------
        ndarray
            ``(G, width, F)`` sums.
        """
        return self._pass(point, shift, plan, False, np.ascontiguousarray(coords))

    def joint_moments(self, point: Point, shift: Array) -> tuple[Array, Array, Array]:
        """Per-group sums of a Newton step on fixed effects and intercepts together.

        Parameters
        ----------
        point : Point
            From :meth:`point`.
        shift : ndarray
            ``(n_groups, F)`` random intercepts ``sigma v_g``.

        Returns
        -------
        ll : ndarray
            ``(G, F)`` sums of the log-likelihood terms (count terms excluded).
        first : ndarray
            ``(G, F, p)`` ``sum d_loc a_j`` (entry 0 is ``S1``).
        second : ndarray
            ``(G, F, p, p)`` ``sum d2_loc a_j a_j^T`` (entry ``[0, 0]`` is ``S2``).
        """
        rl = self._tl.shape[1]
        acc = np.moveaxis(self._pass(point, shift, self._light_plan, True), 1, 2)
        a_emb = self.loc_basis.embed
        first = embed(acc[..., 1 : 1 + rl, None], a_emb, np.ones((1, 1, 1)))[..., 0]
        second = embed(symmetric(acc[..., 1 + rl :], self._tri_l, rl), a_emb, a_emb)
        return acc[..., 0].copy(), first, second

    def moments(self, point: Point, shift: Array) -> ModeMoments:
        """All per-group sums of the value, gradient and Hessian at the modes.

        Parameters
        ----------
        point : Point
            From :meth:`point`.
        shift : ndarray
            ``(n_groups, F)`` random intercepts ``sigma v_g`` (at the modes).

        Returns
        -------
        ModeMoments
            In the full coordinates ``a_j = (1, x_j)`` and ``b_j = (1, z_j)``.
        """
        n_feat = self.y.shape[1]
        rl, rs = self._tl.shape[1], self._ts.shape[1]
        ml, ms = self._tri_l[0].size, self._tri_s[0].size
        acc = self._pass(point, shift, self._plan, False)
        acc = np.moveaxis(acc, 1, 2)  # (G, F, width)
        blocks = np.split(acc, np.cumsum([1, rl, rs] + [ml] * 3 + [rl * rs] * 3 + [ms] * 2), axis=2)
        a_emb = self.loc_basis.embed
        one = np.ones((1, 1, 1))
        first_loc = embed(blocks[1][..., None], a_emb, one)[..., 0]
        tri_l, tri_s = self._tri_l, self._tri_s
        loc = (
            embed(symmetric(blocks[3], tri_l, rl), a_emb, a_emb),
            embed(symmetric(blocks[4], tri_l, rl), a_emb, a_emb),
            embed(symmetric(blocks[5], tri_l, rl), a_emb, a_emb),
        )
        ll = blocks[0][..., 0].copy()
        if self.scale_basis is None:
            return ModeMoments(ll, first_loc, None, loc, None, None)
        b_emb = self.scale_basis.embed
        shape = (self.n_groups, n_feat, rl, rs)
        return ModeMoments(
            ll,
            first_loc,
            embed(blocks[2][..., None], b_emb, one)[..., 0],
            loc,
            (
                embed(blocks[6].reshape(shape), a_emb, b_emb),
                embed(blocks[7].reshape(shape), a_emb, b_emb),
                embed(blocks[8].reshape(shape), a_emb, b_emb),
            ),
            (
                embed(symmetric(blocks[9], tri_s, rs), b_emb, b_emb),
                embed(symmetric(blocks[10], tri_s, rs), b_emb, b_emb),
                embed(symmetric(blocks[11], tri_s, rs), b_emb, b_emb),
            ),
        )


def _plan(
    blocks: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Concatenate ``(term, first coordinates, second coordinates)`` blocks."""
    term = np.concatenate([np.full(a.size, t, dtype=np.intp) for t, a, _ in blocks])
    prod_a = np.concatenate([a for _, a, _ in blocks]).astype(np.intp)
    prod_b = np.concatenate([b for _, _, b in blocks]).astype(np.intp)
    return term, prod_a, prod_b


_compiled: list[Any] = []
_LOCK = threading.Lock()


def _kernel(name: str) -> Callable[..., Any]:
    """Return the compiled kernel ``name`` of :mod:`batchglm.mixed.group_pass_compiled`.

    The module is imported on first use (numba's on-disk cache serves later processes).
    """
    with _LOCK:
        if not _compiled:
            from batchglm.mixed import group_pass_compiled

            _compiled.append(group_pass_compiled)
    kernel: Callable[..., Any] = getattr(_compiled[0], name)
    return kernel
