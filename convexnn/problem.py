"""One problem type for every program: its data, linear maps and cone residuals; and `prepare`, the public check.

    gated:      A W = Σ_i D_i X w_i,              Aᵀ r = [Xᵀ D_i r]_i
    exact ReLU: on stacked W = [U; V] (2P blocks), z = Σ_i D_i X (u_i − v_i), cone residuals R = s ⊙ X W ≥ 0

Solvers never touch X: they ask a `Problem` for these maps and for the loss over its real rows, so a program
whose data carry another axis (patches) or whose rows live on many devices is a new `Problem`, not a new
solver. With a `Rows` every sum over rows adds the shards' sums (`convexnn._rows`).

The stacked layout of the exact ReLU program: blocks last, (n, c, 2P), signs +1 for U and −1 for V. One
GEMM X W gives both the prediction and the residuals; XLA's CPU loops over a trailing axis of length c = 1
ran elementwise reductions ~30× slower than this layout.

Convolutional programs hold patches X (n, K, h) and masks (n, K, P): predictions sum the K positions
(`operators`), and the exact ReLU program has a cone residual per position, (n, K, c, 2P). The gated maps
run on the masked patch sums Z_i = Σ_k D_ik X_k once `with_pooled` has built them (K times fewer operations).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Scalar

from . import _validate, operators, prox
from . import losses as _losses
from ._mesh import check_sharded, replicate_on_mesh, run_on_shards
from ._rows import Rows, loss_kwargs, row_sum, row_total
from ._units import Units, units_of
from .sharding import RowSharded

__all__ = ["Problem", "Prepared", "prepare", "stack", "unstack", "on_shards"]


def stack(U: Array, V: Array) -> Array:
    """[U; V]: (2P, d, c)."""
    return jnp.concatenate([U, V], axis=0)


def unstack(W: Array) -> tuple[Array, Array]:
    P = W.shape[0] // 2
    return W[:P], W[P:]


class Problem(eqx.Module):
    """The data of a convex program and the linear maps the solvers apply to weights.

    Attributes:
        X: data (n, d), or patches (n, K, h); masks: (n, P) bool, or (n, K, P) (None for patches whose gated
            maps run on `pooled` alone: the patterns were recomputed from the gates); y: targets (n, c) in X's dtype.
        loss: the loss (static); N: its normaliser (static; from the global shape on sharded data).
        rows: for one shard of row-sharded data, its real rows and the mesh axis (None: all rows, one device).
        rescale_x: whether `in_units` must bring X to unit scale (static; `convexnn._units`).
        penalty: the block penalty Ω of λ Ω(W) (static): `convexnn.prox.GroupL2` (one group per pattern and
            output, the default) or `convexnn.prox.Nuclear` (one d×c block per pattern).
        pooled: for patches, the masked patch sums Z (n, P, h) that the gated maps use (`with_pooled`), or None.
        gates: for rows (masks None), the gates G (d, P) whose patterns 1[X g_i ≥ 0] the gated maps recompute in
            row blocks (`operators.gates_forward`), so that no n×P masks are stored; or None.
    """

    X: Float[Array, "n *k d"]
    masks: Bool[Array, "n *k p"] | None
    y: Float[Array, "n c"]
    loss: _losses.Loss = eqx.field(static=True)
    N: int = eqx.field(static=True)
    rows: Rows | None = None
    rescale_x: bool = eqx.field(static=True, default=True)
    penalty: prox.Penalty = eqx.field(static=True, default=prox.GroupL2())
    pooled: Float[Array, "n p d"] | None = None
    gates: Float[Array, "d p"] | None = None

    @property
    def patches(self) -> bool:
        """Static: whether X holds patches (n, K, h) (a convolutional program)."""
        return self.X.ndim == 3

    @property
    def num_patterns(self) -> int:
        if self.masks is not None:
            return self.masks.shape[-1]
        return self.gates.shape[1] if self.gates is not None else self.pooled.shape[1]

    def mask_array(self) -> Bool[Array, "n *k p"]:
        """The masks, rebuilt from the gates when only those are held (n×P bool: for maps that need them whole)."""
        return self.masks if self.masks is not None else operators.masks_from_gates(self.X, self.gates)

    def residual_shape(self, q: int) -> tuple[int, ...]:
        """The shape of the cone residuals of q stacked blocks: (n, c, q), or (n, K, c, q) for patches."""
        n, c = self.y.shape
        return (n, self.X.shape[1], c, q) if self.patches else (n, c, q)

    def in_units(self) -> tuple[Problem, Units]:
        """The problem brought to unit scale, and the `Units` that map its results back."""
        units = units_of(self.X, self.y, self.loss, self.N, self.rows, self.rescale_x)
        X, y = units.data(self.X, self.y)
        pooled = None if self.pooled is None else units.data(self.pooled, self.y)[0]
        return dataclasses.replace(self, X=X, y=y, pooled=pooled), units

    def with_pooled(self) -> Problem:
        """For patches, the problem whose gated maps run on Z_i = Σ_k D_ik X_k (built once, n·P·h floats)."""
        if not self.patches or self.pooled is not None:
            return self
        return dataclasses.replace(self, pooled=operators.pool_patches(self.X, self.masks))

    # The gated map.
    def forward(self, W: Float[Array, "p d c"]) -> Float[Array, "n c"]:
        """A W = Σ_i D_i X w_i."""
        if self.pooled is not None:
            return operators.pooled_forward(self.pooled, W)
        if self.gates is not None:
            return operators.gates_forward(self.X, self.gates, W)
        return operators.gated_forward(self.X, self.masks, W)

    def adjoint(self, r: Float[Array, "n c"]) -> Float[Array, "p d c"]:
        """Aᵀ r = [Xᵀ D_i r]_i, added over the shards."""
        if self.pooled is not None:
            return row_total(operators.pooled_adjoint(self.pooled, r), self.rows)
        if self.gates is not None:
            return row_total(operators.gates_adjoint(self.X, self.gates, r), self.rows)
        return row_total(operators.gated_adjoint(self.X, self.masks, r), self.rows)

    # The loss over every real row.
    def loss_value(self, z: Float[Array, "n c"]) -> Scalar:
        return self.loss.value(z, self.y, self.N, **loss_kwargs(self.rows))

    def loss_grad(self, z: Float[Array, "n c"]) -> Float[Array, "n c"]:
        return self.loss.grad(z, self.y, self.N)

    def loss_bregman(self, z1: Float[Array, "n c"], z0: Float[Array, "n c"]) -> Scalar:
        return self.loss.bregman(z1, z0, self.y, self.N, **loss_kwargs(self.rows))

    def loss_hvp(self, z: Float[Array, "n c"], dz: Float[Array, "n c"]) -> Float[Array, "n c"]:
        return self.loss.hvp(z, dz, self.y, self.N)

    def hessian_diagonal(self, z: Float[Array, "n c"]) -> Float[Array, "n c"]:
        return self.loss.hessian_diagonal(z, self.y, self.N)

    def fenchel_young_gap(self, z: Float[Array, "n c"], theta: Float[Array, "n c"]) -> Scalar:
        """L(z) + L*(θ) − ⟨θ, z⟩ ≥ 0 over every real row."""
        return self.loss.fenchel_young_gap(z, theta, self.y, self.N, **loss_kwargs(self.rows))

    def row_sum(self, x: Array) -> Scalar:
        """Σ of every entry of a row-indexed array over the real rows of every shard."""
        return row_sum(x, self.rows)

    # The exact ReLU program on stacked weights [U; V].
    def products(self, W: Float[Array, "q d c"]) -> Float[Array, "n *k c q"]:
        """X W for every block of the stacked weights (one GEMM), blocks last; (n, K, c, q) for patches."""
        spec = "nkd,qdc->nkcq" if self.patches else "nd,qdc->ncq"
        return jnp.einsum(spec, self.X, W, precision=operators.PRECISION)

    def _stacked_masks(self) -> Bool[Array, "n *k 1 q"]:
        """The masks of [U; V] with an output axis: (n, 1, 2P), or (n, K, 1, 2P)."""
        m = self.masks[..., None, :]
        return jnp.concatenate([m, m], axis=-1)

    def split(self, XW: Float[Array, "n *k c q"]) -> tuple[Float[Array, "n c"], Float[Array, "n *k c q"]]:
        """(z, R): the prediction Σ_i m_i ⊙ (X u_i − X v_i) (summed over positions) and the residuals s ⊙ X W."""
        P = self.num_patterns
        m = self.masks[..., None, :]
        zero = jnp.zeros((), XW.dtype)
        z = jnp.sum(jnp.where(m, XW[..., :P] - XW[..., P:], zero), axis=-1)
        z = jnp.sum(z, axis=1) if self.patches else z
        R = jnp.where(self._stacked_masks(), XW, -XW)
        return z, R

    def pullback(self, gz: Float[Array, "n c"], gR: Float[Array, "n *k c q"]) -> Float[Array, "q d c"]:
        """Kᵀ(gz, gR) = ∂/∂W of ⟨gz, z⟩ + ⟨gR, R⟩ (one GEMM), added over the shards."""
        m2 = self._stacked_masks()
        P = self.num_patterns
        sign = jnp.concatenate([jnp.ones((P,), gz.dtype), -jnp.ones((P,), gz.dtype)])
        zero = jnp.zeros((), gz.dtype)
        gz = gz[:, None, :, None] if self.patches else gz[:, :, None]
        sign = sign.reshape((1,) * (gz.ndim - 1) + (-1,))
        G = jnp.where(m2, sign * gz, zero) + jnp.where(m2, gR, -gR)
        spec = "nkcq,nkd->qdc" if self.patches else "ncq,nd->qdc"
        return row_total(jnp.einsum(spec, G, self.X, precision=operators.PRECISION), self.rows)


def on_shards(
    fn: Callable[..., Any],
    data: RowSharded,
    loss: _losses.Loss,
    *replicated: Any,
    penalty: prox.Penalty = prox.GroupL2(),
) -> Any:
    """fn(problem, *replicated) on every row shard of `data` under `shard_map`, `problem` that shard's
    `Problem` (normalised by the real row count, with `penalty`); its outputs must be replicated (every sum
    over rows in the problem's maps ends in a collective, so they are)."""
    N = data.normaliser(loss)

    def local(X, Y, masks, rows, *args):
        problem = Problem(X=X, masks=masks, y=Y, loss=loss, N=N, rows=rows, rescale_x=data.rescale_x, penalty=penalty)
        return fn(problem, *args)

    return run_on_shards(local, data, *replicated)


class Prepared(NamedTuple):
    """The canonical inputs of a public solver: what `prepare` returns.

    X: the data (n, d) or patches (n, K, h) as an array, or the `RowSharded` (then Y and masks are None: it
    holds them). Y: targets (n, c) in X's dtype; masks: (n, P) or (n, K, P) bool; shape: (P, d, c) (d = h);
    squeeze: whether y was 1-D;
    rescale_x: whether the solvers must bring X to unit scale (static). lam (a scalar or the path's λ),
    tol, constraint_tol, max_iters: arrays of X's dtype (max_iters int32). W0: the start, (blocks·P, d, c);
    resume: the solver state of a `Solution` passed as init (None otherwise).
    """

    X: Any
    Y: Any
    masks: Any
    shape: tuple[int, int, int]
    squeeze: bool
    rescale_x: bool
    lam: jax.Array
    tol: jax.Array
    constraint_tol: jax.Array | None
    max_iters: jax.Array
    W0: jax.Array
    resume: Any

    def replicated(self, *x: Any) -> Any:
        """x on every device of a `RowSharded`'s mesh; x itself for data on one device."""
        return replicate_on_mesh(self.X.mesh, x) if isinstance(self.X, RowSharded) else x


def _check_data(X, y, masks, loss):
    """(X, Y, masks, (P, d, c), squeeze, rescale_x) for arrays or a `RowSharded` passed as X."""
    if isinstance(X, RowSharded):
        check_sharded(X, y, masks, loss)
        return X, None, None, X.shape, X.squeeze, X.rescale_x
    if y is None or masks is None:
        raise ValueError("y and masks must be given (or X must be a RowSharded from shard_rows)")
    X, Y, masks, squeeze, rescale_x = _validate.check_data(X, y, masks, loss)
    return X, Y, masks, (masks.shape[-1], X.shape[-1], Y.shape[1]), squeeze, rescale_x


def _start(init: Any, blocks: int, shape: tuple[int, int, int], squeeze: bool, dtype: Any) -> tuple[jax.Array, Any]:
    """(W0, resume state) from `init`: None (zeros), weights (W, or the pair (U, V) for two blocks), or a
    `Solution` (its weights, and its solver state when it carries one)."""
    from .solution import Solution

    P, d, c = shape
    if init is None:
        return jnp.zeros((blocks * P, d, c), dtype), None
    resume = None
    if isinstance(init, Solution):
        init, resume = init.weights, init.state
    if blocks == 1:
        return _validate.check_init(init, P, d, c, squeeze, dtype), resume
    if not (isinstance(init, tuple) and len(init) == 2):
        raise ValueError("init must be a pair (U, V) or a Solution of solve_relu")
    return stack(*(_validate.check_init(w, P, d, c, squeeze, dtype) for w in init)), resume


def prepare(
    solver: str,
    X: Any,
    y: Any,
    masks: Any,
    loss: _losses.Loss,
    *,
    lam: Any,
    tol: Any,
    max_iters: Any,
    default_max_iters: int,
    constraint_tol: Any = None,
    init: Any = None,
    blocks: int = 1,
    path: bool = False,
) -> Prepared:
    """Validate and canonicalize the inputs of the public solver `solver` (its name, for messages).

    lam is one λ, or (`path`) the 1-D λ of a path. `blocks`: weight blocks per pattern (1 gated, 2 ReLU).
    tol=None and max_iters=None take the defaults (`_validate.DEFAULT_TOL`, `default_max_iters`).

    Raises:
        ValueError: naming the argument, what was expected and what came (for traced values: when the
            program runs, through `eqx.error_if`).
    """
    name = "lams" if path else "lam"
    if lam is None:
        raise ValueError(f"{name} must be given: {solver}(X, y, masks, {name}) or {solver}(data, {name}=...)")
    X, Y, masks, shape, squeeze, rescale_x = _check_data(X, y, masks, loss)
    dtype = X.X.dtype if isinstance(X, RowSharded) else X.dtype
    lam = _validate.check_lams(lam, dtype) if path else _validate.check_lam(lam, dtype)
    tol = _validate.check_positive("tol", _validate.DEFAULT_TOL if tol is None else tol, dtype)
    if constraint_tol is not None:
        constraint_tol = _validate.check_positive("constraint_tol", constraint_tol, dtype)
    max_iters = default_max_iters if max_iters is None else max_iters
    max_iters = _validate.check_positive("max_iters", max_iters, dtype, integer=True)
    W0, resume = _start(init, blocks, shape, squeeze, dtype)
    return Prepared(X, Y, masks, shape, squeeze, rescale_x, lam, tol, constraint_tol, max_iters, W0, resume)
