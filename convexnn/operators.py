"""Masked linear operators of the convex program, applied without ever forming D_i X.

The linear map of the gated program is A: W ↦ Σ_i D_i X w_i. With all P blocks stacked, one GEMM X W
gives every X w_i at once; the masks select entries inside the fused reduction. The adjoint
Aᵀ: r ↦ [Xᵀ D_i r]_i is one GEMM of Xᵀ with the masked residual. Weights are (P, d) for a single
output and (P, d, c) for c outputs; predictions and residuals are (n,) and (n, c) accordingly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

__all__ = ["gated_forward", "gated_adjoint", "cone_residuals", "row_block", "PRECISION"]

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


def gated_forward(X: Float[Array, "n d"], masks: Bool[Array, "n p"], W: Float[Array, "p d *c"]) -> Float[Array, "n *c"]:
    """ŷ = Σ_i D_i X w_i, computed as rowsum(masks ⊙ X W) with one GEMM (per row block on CPU).

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        W: weights, (P, d) or (P, d, c).

    Returns:
        predictions, (n,) or (n, c).
    """
    block = row_block(X.shape[0], W.size // W.shape[1], W.dtype.itemsize)
    if block is None:
        return _forward_dense(X, masks, W)
    (Xb, Mb), (Xr, Mr) = _split_rows(block, X, masks)
    _, out = lax.scan(lambda _, xm: (None, _forward_dense(xm[0], xm[1], W)), None, (Xb, Mb))
    return jnp.concatenate([out.reshape((-1,) + out.shape[2:]), _forward_dense(Xr, Mr, W)])


def gated_adjoint(X: Float[Array, "n d"], masks: Bool[Array, "n p"], r: Float[Array, "n *c"]) -> Float[Array, "p d *c"]:
    """Aᵀ r = [Xᵀ D_i r]_i, computed as Xᵀ (masks ⊙ r) with one GEMM (per row block on CPU).

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        r: a residual-like array, (n,) or (n, c).

    Returns:
        the block gradient, (P, d) or (P, d, c).
    """
    block = row_block(X.shape[0], masks.shape[1] * (r.size // r.shape[0]), r.dtype.itemsize)
    if block is None:
        return _adjoint_dense(X, masks, r)
    (Xb, Mb, rb), (Xr, Mr, rr) = _split_rows(block, X, masks, r)
    total, _ = lax.scan(lambda acc, b: (acc + _adjoint_dense(*b), None), _adjoint_dense(Xr, Mr, rr), (Xb, Mb, rb))
    return total


def cone_residuals(
    X: Float[Array, "n d"], masks: Bool[Array, "n p"], W: Float[Array, "p d *c"]
) -> Float[Array, "n p *c"]:
    """(2 D_i − I) X w_i for every block: non-negative exactly when each w_i lies in its pattern's cone.

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        W: weights, (P, d) or (P, d, c).

    Returns:
        s_i ⊙ X w_i stacked as (n, P) or (n, P, c), with s = 2 m − 1.
    """
    if W.ndim == 2:
        XW = jnp.einsum("nd,pd->np", X, W, precision=PRECISION)
        return jnp.where(masks, XW, -XW)
    XW = jnp.einsum("nd,pdc->npc", X, W, precision=PRECISION)
    return jnp.where(masks[:, :, None], XW, -XW)
