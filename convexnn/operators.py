"""Masked linear operators of the convex program, applied without ever forming D_i X.

The linear map of the gated program is A: W ↦ Σ_i D_i X w_i. With all P blocks stacked, one GEMM X W
gives every X w_i at once; the masks select entries inside the fused reduction. The adjoint
Aᵀ: r ↦ [Xᵀ D_i r]_i is one GEMM of Xᵀ with the masked residual. Weights are (P, d) for a single
output and (P, d, c) for c outputs; predictions and residuals are (n,) and (n, c) accordingly.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float

__all__ = ["gated_forward", "gated_adjoint", "cone_residuals", "PRECISION"]

# Full float32 accuracy on accelerators whose default f32 matmul is reduced precision (TF32): the
# certificate compares objectives to 1e-6 relative, which TF32's 1e-3 would make meaningless.
PRECISION = lax.Precision.HIGHEST


def gated_forward(
    X: Float[Array, "n d"], masks: Bool[Array, "n p"], W: Float[Array, "p d *c"]
) -> Float[Array, "n *c"]:
    """ŷ = Σ_i D_i X w_i, computed as rowsum(masks ⊙ X W) with one GEMM.

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        W: weights, (P, d) or (P, d, c).

    Returns:
        predictions, (n,) or (n, c).
    """
    if W.ndim == 2:
        XW = jnp.einsum("nd,pd->np", X, W, precision=PRECISION)
        return jnp.sum(jnp.where(masks, XW, jnp.zeros((), XW.dtype)), axis=1)
    XW = jnp.einsum("nd,pdc->npc", X, W, precision=PRECISION)
    return jnp.sum(jnp.where(masks[:, :, None], XW, jnp.zeros((), XW.dtype)), axis=1)


def gated_adjoint(
    X: Float[Array, "n d"], masks: Bool[Array, "n p"], r: Float[Array, "n *c"]
) -> Float[Array, "p d *c"]:
    """Aᵀ r = [Xᵀ D_i r]_i, computed as Xᵀ (masks ⊙ r) with one GEMM.

    Args:
        X: data, (n, d).
        masks: activation patterns, (n, P) bool.
        r: a residual-like array, (n,) or (n, c).

    Returns:
        the block gradient, (P, d) or (P, d, c).
    """
    zero = jnp.zeros((), r.dtype)
    if r.ndim == 1:
        R = jnp.where(masks, r[:, None], zero)
        return jnp.einsum("np,nd->pd", R, X, precision=PRECISION)
    R = jnp.where(masks[:, :, None], r[:, None, :], zero)
    return jnp.einsum("npc,nd->pdc", R, X, precision=PRECISION)


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
