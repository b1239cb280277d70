"""Cone decomposition (Mishkin, Sahiner & Pilanci, 2022): a gated solution made feasible for exact ReLU.

Every block w_i of a gated solution splits as w_i = u_i − v_i with u_i, v_i in the pattern's cone
K_i = {u : (2D_i − I) X u ≥ 0} (when X has full column rank), so the exact ReLU program has a feasible
point with the same training predictions. Per block, with B = (2D_i − I) X and a = (B w)₊,

    u = argmin ½‖u‖² + ½‖u − w‖²  s.t.  B u ≥ a,     v = u − w,

(B u ≥ a ≥ 0 and B v = B u − B w ≥ a − B w ≥ 0), a small strictly convex QP solved by a primal–dual
interior-point method whose Newton systems are d×d: Bᵀ diag(·) B = Xᵀ diag(·) X because s ⊙ s = 1.
The price is the penalty: Σ ‖u_i‖ + ‖v_i‖ ≥ Σ ‖w_i‖, reported as `growth`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Scalar

from . import operators, prox
from ._cone_qp import cone_qp
from .certificates import relu_violation
from .solution import Solution

__all__ = ["ConeDecomposition", "cone_decompose", "cone_qp"]


class ConeDecomposition(eqx.Module):
    """The result of `cone_decompose`.

    Attributes:
        weights: (U, V) with U − V equal to the gated weights, each block in its cone.
        penalty_gated: Σ_g ‖W_g‖; penalty_relu: Σ_g ‖U_g‖ + ‖V_g‖; growth: their ratio (≥ 1).
        violation: max (−s_i ⊙ X w)₊ / max |X w| over all blocks of U and V (0 when exact).
    """

    weights: tuple[Array, Array]
    penalty_gated: Scalar
    penalty_relu: Scalar
    growth: Scalar
    violation: Scalar


def cone_decompose(
    solution: Solution | Float[Array, "p d *c"],
    X: ArrayLike,
    masks: ArrayLike | None = None,
    *,
    iterations: int = 40,
) -> ConeDecomposition:
    """Split each gated block w_i into u_i − v_i with u_i, v_i in the cone of pattern i.

    Args:
        solution: a gated `Solution` (or its weights (P, d) / (P, d, c)).
        X: the data (n, d) (or patches (n, K, h)) it was solved on; masks: its activation patterns (n, P) (or
            (n, K, P)), by default the ones
            `solve_gated` recorded in `solution.stats["masks"]`.
        iterations: interior-point iterations per block (40 reaches ~1e-10 relative in float64 on rows; patches,
            with K constraints per image, can need more: `violation` says what remains).

    Returns:
        a `ConeDecomposition`: feasible (U, V) with the same training predictions as W, the penalty
        before and after, their ratio and the remaining relative violation.
    """
    if masks is None:
        masks = solution.stats.get("masks") if isinstance(solution, Solution) else None
        if masks is None:
            raise ValueError("masks must be given (only a Solution from solve_gated records its masks)")
    W = solution.weights if isinstance(solution, Solution) else solution
    W = jnp.asarray(W)
    if isinstance(W, tuple):
        raise ValueError("cone_decompose takes a gated solution (weights W), not an exact ReLU one")
    squeeze = W.ndim == 2
    W3 = W[..., None] if squeeze else W
    X = jnp.asarray(X, W3.dtype)
    masks = jnp.asarray(masks, bool)
    if X.ndim == 3 and masks.ndim == 3:  # patches: a cone constraint per position, i.e. per patch row
        X, masks = operators.patch_rows(X, masks)
    P, d, c = W3.shape
    if X.shape[1] != d or masks.shape != (X.shape[0], P):
        raise ValueError(f"X must be (n, {d}) and masks (n, {P}); got {X.shape} and {masks.shape}")
    signs = jnp.where(masks, 1.0, -1.0).astype(W3.dtype)  # (n, P)

    def one(args):
        i, k = args
        s, w = signs[:, i], W3[i, :, k]
        lower = jnp.maximum(s * jnp.matmul(X, w, precision=operators.PRECISION), 0)
        return cone_qp(X, s, w / 2, lower, iterations)

    idx_i, idx_k = jnp.meshgrid(jnp.arange(P), jnp.arange(c), indexing="ij")
    U = lax.map(one, (idx_i.reshape(-1), idx_k.reshape(-1))).reshape(P, c, d)
    U = jnp.moveaxis(U, 2, 1)
    U = jnp.where(prox.group_norms(W3)[:, None, :] > 0, U, 0)
    V = U - W3
    both = jnp.concatenate([U, V], axis=0)
    XW = jnp.einsum("nd,qdc->ncq", X, both, precision=operators.PRECISION)  # relu_violation's layout
    violation = relu_violation(jnp.concatenate([signs, signs], axis=1)[:, None, :] * XW, XW)
    before = prox.group_l1(W3)
    after = prox.group_l1(U) + prox.group_l1(V)
    growth = jnp.where(before > 0, after / jnp.where(before > 0, before, 1), 1)
    if squeeze:
        U, V = U[..., 0], V[..., 0]
    return ConeDecomposition(
        weights=(U, V), penalty_gated=before, penalty_relu=after, growth=growth, violation=violation
    )
