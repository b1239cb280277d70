"""Masked linear operators of the convex program, applied without ever forming D_i X.

The linear map of the gated program is A: W ↦ Σ_i D_i X w_i. With all P blocks stacked, one GEMM X W
gives every X w_i at once; the masks select entries inside the fused reduction. The adjoint
Aᵀ: r ↦ [Xᵀ D_i r]_i is one GEMM of Xᵀ with the masked residual. Weights are (P, d) for a single
output and (P, d, c) for c outputs; predictions and residuals are (n,) and (n, c) accordingly.

Convolutional data are patches X (n, K, h) with masks (n, K, P): A W = Σ_i Σ_k D_ik X_k w_i, the network's
sum pooling over the K positions. That is the same map on the n·K patch rows followed by a sum over k, and
its adjoint is the same adjoint of the residual repeated over k: the fully connected program is K = 1.
For the gated program the masked patch sums Z_i = Σ_k D_ik X_k (n, P, h) (`pool_patches`) turn both maps
into K times fewer operations: A W = Σ_i Z_i w_i, Aᵀ r = [Z_iᵀ r]_i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

__all__ = [
    "gated_forward",
    "gated_adjoint",
    "cone_residuals",
    "pool_patches",
    "pool_patches_from_gates",
    "pooled_forward",
    "gates_forward",
    "gates_adjoint",
    "masks_from_gates",
    "gates_row_sums",
    "mask_row_sums",
    "gate_block",
    "pooled_adjoint",
    "patch_rows",
    "row_block",
    "PRECISION",
]

# Full float32 accuracy on accelerators whose default f32 matmul is reduced precision (TF32): the
# certificate compares objectives to 1e-6 relative, which TF32's 1e-3 would make meaningless.
PRECISION = lax.Precision.HIGHEST


def row_block(n: int, width: int, itemsize: int) -> int | None:
    """Rows per block for the masked operators, or None to apply them in one piece.

    On CPU a GEMM whose (rows × P·c) output is consumed by the mask at once is memory bound; cutting the
    rows into blocks whose masked product stays in cache (~4 MiB) halves the time of an operator and
    removes the n×P·c float buffers. Accelerators prefer one large GEMM. Static: read from shapes.
    """
    if jax.default_backend() != "cpu":
        return None
    block = max(256, (4 << 20) // max(1, width * itemsize))
    return block if n >= 2 * block else None


def _split_rows(block: int, *arrays: Array) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    """Each array's first (n // block)·block rows as (blocks, block, ...), and the remaining rows."""
    n = arrays[0].shape[0]
    head = (n // block) * block
    blocks = tuple(a[:head].reshape((n // block, block) + a.shape[1:]) for a in arrays)
    return blocks, tuple(a[head:] for a in arrays)


def _map_rows(fn, block: int | None, *arrays: Array) -> Array:
    """fn applied to row blocks of `arrays` (one piece when `block` is None), its outputs stacked by rows."""
    if block is None:
        return fn(*arrays)
    heads, tails = _split_rows(block, *arrays)
    _, out = lax.scan(lambda _, b: (None, fn(*b)), None, heads)
    return jnp.concatenate([out.reshape((-1,) + out.shape[2:]), fn(*tails)])


def _sum_rows(fn, block: int | None, *arrays: Array) -> Array:
    """Σ over row blocks of `arrays` of fn(block) (one piece when `block` is None)."""
    if block is None:
        return fn(*arrays)
    heads, tails = _split_rows(block, *arrays)
    total, _ = lax.scan(lambda acc, b: (acc + fn(*b), None), fn(*tails), heads)
    return total


def gate_block(n: int, width: int, itemsize: int) -> int | None:
    """Rows per block when patterns are recomputed from gates: their (rows × width) floats stay within ~4 MiB on
    CPU and ~256 MiB on accelerators, so no n×P buffer exists; None (one piece) when n is under two blocks."""
    budget = (4 << 20) if jax.default_backend() == "cpu" else (256 << 20)
    block = max(1, budget // max(1, width * itemsize))
    return block if n >= 2 * block else None


def _patterns(X: Float[Array, "n *k d"], gates: Float[Array, "d p"]) -> Bool[Array, "n *k p"]:
    """1[X g ≥ 0], the one home of the pattern rule, in the wider of X's and the gates' dtypes."""
    return jnp.matmul(X, gates, precision=PRECISION) >= 0


def _forward_dense(X, masks, W):
    if W.ndim == 2:
        XW = jnp.einsum("nd,pd->np", X, W, precision=PRECISION)
        return jnp.sum(jnp.where(masks, XW, jnp.zeros((), XW.dtype)), axis=1)
    XW = jnp.einsum("nd,pdc->npc", X, W, precision=PRECISION)
    return jnp.sum(jnp.where(masks[:, :, None], XW, jnp.zeros((), XW.dtype)), axis=1)


def _adjoint_dense(X, masks, r):
    zero = jnp.zeros((), r.dtype)
    if r.ndim == 1:
        return jnp.einsum("np,nd->pd", jnp.where(masks, r[:, None], zero), X, precision=PRECISION)
    R = jnp.where(masks[:, :, None], r[:, None, :], zero)
    return jnp.einsum("npc,nd->pdc", R, X, precision=PRECISION)


def patch_rows(X: Float[Array, "n *k d"], masks: Bool[Array, "n *k p"]) -> tuple[Array, Array]:
    """Patches (n, K, h) and masks (n, K, P) as n·K rows (n·K, h) and (n·K, P); 2-D data as they are."""
    if X.ndim == 2:
        return X, masks
    return X.reshape(-1, X.shape[-1]), masks.reshape(-1, masks.shape[-1])


def gated_forward(
    X: Float[Array, "n *k d"], masks: Bool[Array, "n *k p"], W: Float[Array, "p d *c"]
) -> Float[Array, "n *c"]:
    """ŷ = Σ_i D_i X w_i (Σ_i Σ_k D_ik X_k w_i for patches (n, K, h) with masks (n, K, P)).

    Args:
        X: data, (n, d), or patches (n, K, h).
        masks: activation patterns, (n, P) bool, or (n, K, P) for patches.
        W: weights, (P, d) or (P, d, c).

    Returns:
        predictions, (n,) or (n, c).
    """
    if X.ndim == 2:
        return _rows_forward(X, masks, W)
    n, K = X.shape[:2]
    out = _rows_forward(*patch_rows(X, masks), W)
    return jnp.sum(out.reshape((n, K) + out.shape[1:]), axis=1)


def gated_adjoint(
    X: Float[Array, "n *k d"], masks: Bool[Array, "n *k p"], r: Float[Array, "n *c"]
) -> Float[Array, "p d *c"]:
    """Aᵀ r = [Xᵀ D_i r]_i ([Σ_k X_kᵀ D_ik r]_i for patches (n, K, h) with masks (n, K, P)).

    Args:
        X: data, (n, d), or patches (n, K, h).
        masks: activation patterns, (n, P) bool, or (n, K, P) for patches.
        r: a residual-like array, (n,) or (n, c).

    Returns:
        the block gradient, (P, d) or (P, d, c).
    """
    if X.ndim == 2:
        return _rows_adjoint(X, masks, r)
    K = X.shape[1]
    repeated = jnp.broadcast_to(r[:, None], (r.shape[0], K) + r.shape[1:]).reshape((-1,) + r.shape[1:])
    return _rows_adjoint(*patch_rows(X, masks), repeated)


def pool_patches(X: Float[Array, "n k h"], masks: Bool[Array, "n k p"]) -> Float[Array, "n p h"]:
    """Z_i = Σ_k D_ik X_k for every pattern: the gated program's data once the positions are summed.

    Built in row blocks on CPU (as the operators are), so no (rows, K, P) float buffer exceeds ~4 MiB.

    Args:
        X: patches (n, K, h); masks: (n, K, P) bool.

    Returns:
        Z, (n, P, h): A W = Σ_i Z_i w_i and Aᵀ r = [Z_iᵀ r]_i.
    """
    block = row_block(X.shape[0], X.shape[1] * masks.shape[-1], X.dtype.itemsize)
    return _map_rows(_pool, block, X, masks)


def pool_patches_from_gates(X: Float[Array, "n k h"], gates: Float[Array, "h p"]) -> Float[Array, "n p h"]:
    """Z_i = Σ_k 1[X_k g_i ≥ 0] X_k, the patterns recomputed from the gates one row block at a time.

    The (n, K, P) masks never exist: each block's (rows, K, P) patterns live only while it is pooled (at
    most ~4 MiB of them on CPU, ~256 MiB on accelerators). Costs one more product with the gates.

    Args:
        X: patches (n, K, h); gates: (h, P).

    Returns:
        Z, (n, P, h), equal to `pool_patches(X, activation_masks(X, gates))`.
    """
    n, K, _ = X.shape
    block = gate_block(n, K * gates.shape[1], X.dtype.itemsize)
    return _map_rows(lambda x: _pool(x, _patterns(x, gates)), block, X)


def _pool(x: Float[Array, "n k h"], m: Bool[Array, "n k p"]) -> Float[Array, "n p h"]:
    return jnp.einsum("nkp,nkh->nph", m.astype(x.dtype), x, precision=PRECISION)


def pooled_forward(Z: Float[Array, "n p h"], W: Float[Array, "p h *c"]) -> Float[Array, "n *c"]:
    """Σ_i Z_i w_i."""
    if W.ndim == 2:
        return jnp.einsum("nph,ph->n", Z, W, precision=PRECISION)
    return jnp.einsum("nph,phc->nc", Z, W, precision=PRECISION)


def pooled_adjoint(Z: Float[Array, "n p h"], r: Float[Array, "n *c"]) -> Float[Array, "p h *c"]:
    """[Z_iᵀ r]_i."""
    if r.ndim == 1:
        return jnp.einsum("nph,n->ph", Z, r, precision=PRECISION)
    return jnp.einsum("nph,nc->phc", Z, r, precision=PRECISION)


def _rows_forward(X: Float[Array, "n d"], masks: Bool[Array, "n p"], W: Float[Array, "p d *c"]) -> Float[Array, "n *c"]:
    """ŷ = Σ_i D_i X w_i, computed as rowsum(masks ⊙ X W) with one GEMM (per row block on CPU).

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        W: weights, (P, d) or (P, d, c).

    Returns:
        predictions, (n,) or (n, c).
    """
    block = row_block(X.shape[0], W.size // W.shape[1], W.dtype.itemsize)
    return _map_rows(lambda x, m: _forward_dense(x, m, W), block, X, masks)


def _rows_adjoint(X: Float[Array, "n d"], masks: Bool[Array, "n p"], r: Float[Array, "n *c"]) -> Float[Array, "p d *c"]:
    """Aᵀ r = [Xᵀ D_i r]_i, computed as Xᵀ (masks ⊙ r) with one GEMM (per row block on CPU).

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        r: a residual-like array, (n,) or (n, c).

    Returns:
        the block gradient, (P, d) or (P, d, c).
    """
    block = row_block(X.shape[0], masks.shape[1] * (r.size // r.shape[0]), r.dtype.itemsize)
    return _sum_rows(_adjoint_dense, block, X, masks, r)


def gates_forward(
    X: Float[Array, "n d"], gates: Float[Array, "d p"], W: Float[Array, "p d *c"]
) -> Float[Array, "n *c"]:
    """ŷ = Σ_i D_i X w_i with D_i = diag(1[X g_i ≥ 0]) recomputed per row block (`gate_block`): no n×P masks.

    Costs one more GEMM than `gated_forward`, X G beside X W. Returns predictions (n,) or (n, c).
    """
    block = gate_block(X.shape[0], gates.shape[1] * (1 + W.size // (W.shape[0] * W.shape[1])), X.dtype.itemsize)
    return _map_rows(lambda x: _forward_dense(x, _patterns(x, gates), W), block, X)


def gates_adjoint(
    X: Float[Array, "n d"], gates: Float[Array, "d p"], r: Float[Array, "n *c"]
) -> Float[Array, "p d *c"]:
    """Aᵀ r = [Xᵀ D_i r]_i with D_i = diag(1[X g_i ≥ 0]) recomputed per row block (`gate_block`): no n×P masks.

    Costs one more GEMM than `gated_adjoint`. Returns the block gradient (P, d) or (P, d, c).
    """
    block = gate_block(X.shape[0], gates.shape[1] * (1 + r.size // r.shape[0]), X.dtype.itemsize)
    return _sum_rows(lambda x, r: _adjoint_dense(x, _patterns(x, gates), r), block, X, r)


def masks_from_gates(X: Float[Array, "n *k d"], gates: Float[Array, "d p"]) -> Bool[Array, "n *k p"]:
    """1[X g_i ≥ 0] for the given gates (per row, or per row and position for patches), built in row blocks
    (`gate_block`): n×P (n×K×P) bools, no float buffer of that size."""
    width = gates.shape[1] * (X.shape[1] if X.ndim == 3 else 1)
    return _map_rows(lambda x: _patterns(x, gates), gate_block(X.shape[0], width, X.dtype.itemsize), X)


def mask_row_sums(masks: Bool[Array, "n *k p"], s: Float[Array, "n *k"]) -> Float[Array, " p"]:
    """Σ_j m_ji s_j over every row (and position) j, in row blocks on CPU (`row_block`): Mᵀ s with no float copy of
    the masks."""
    M, v = masks.reshape(-1, masks.shape[-1]), s.reshape(-1)
    block = row_block(M.shape[0], M.shape[1], s.dtype.itemsize)
    return _sum_rows(lambda m, v: jnp.sum(jnp.where(m, v[:, None], jnp.zeros((), v.dtype)), axis=0), block, M, v)


def gates_row_sums(X: Float[Array, "n d"], gates: Float[Array, "d p"], s: Float[Array, " n"]) -> Float[Array, " p"]:
    """Σ_j 1[x_j g_i ≥ 0] s_j for every gate, in row blocks (`gate_block`): Mᵀ s without the masks M."""
    block = gate_block(X.shape[0], gates.shape[1], X.dtype.itemsize)
    return _sum_rows(lambda x, s: jnp.matmul(s, _patterns(x, gates).astype(s.dtype), precision=PRECISION), block, X, s)


def cone_residuals(
    X: Float[Array, "n *k d"], masks: Bool[Array, "n *k p"], W: Float[Array, "p d *c"]
) -> Float[Array, "n ..."]:
    """(2 D_i − I) X w_i for every block: non-negative exactly when each w_i lies in its pattern's cone.

    Args:
        X: data, (n, d), or patches (n, K, h) (a constraint per position k).
        masks: activation patterns, (n, P) bool, or (n, K, P).
        W: weights, (P, d) or (P, d, c).

    Returns:
        s_i ⊙ X w_i stacked as (n, P) or (n, P, c) ((n, K, P) or (n, K, P, c) for patches), s = 2 m − 1.
    """
    if X.ndim == 3:
        n, K = X.shape[:2]
        out = cone_residuals(*patch_rows(X, masks), W)
        return out.reshape((n, K) + out.shape[1:])
    if W.ndim == 2:
        XW = jnp.einsum("nd,pd->np", X, W, precision=PRECISION)
        return jnp.where(masks, XW, -XW)
    XW = jnp.einsum("nd,pdc->npc", X, W, precision=PRECISION)
    return jnp.where(masks[:, :, None], XW, -XW)
