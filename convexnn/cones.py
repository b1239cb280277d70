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
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Scalar

from . import operators, prox
from .solution import Solution
from .solvers.relu_objectives import relu_violation

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


def cone_qp(X: Array, s: Array, c: Array, a: Array, iterations: int = 40) -> Array:
    """min_u ½‖u − c‖² s.t. s ⊙ X u ≥ a, by a primal–dual interior-point method (d×d Newton systems).

    With a = 0 this is the projection of c onto the cone {u : s ⊙ X u ≥ 0}. Starts anywhere (infeasible
    start); 40 iterations reach ~1e-10 relative in float64.
    """
    dtype = X.dtype
    m = a.shape[0]

    def body(_, state):
        u, t, mu = state
        Bu = s * jnp.matmul(X, u, precision=operators.PRECISION)
        r_d = u - c - jnp.matmul(X.T, s * mu, precision=operators.PRECISION)
        r_p = Bu - a - t
        gap = jnp.sum(mu * t) / m
        r_c = mu * t - 0.1 * gap
        weight = mu / t
        H = jnp.eye(u.shape[0], dtype=dtype) + jnp.einsum("n,nd,ne->de", weight, X, X, precision=operators.PRECISION)
        rhs = -r_d + jnp.matmul(X.T, s * ((-r_c - mu * r_p) / t), precision=operators.PRECISION)
        du = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(H), True), rhs)
        dt = s * jnp.matmul(X, du, precision=operators.PRECISION) + r_p
        dmu = (-r_c - mu * dt) / t

        def longest(x, dx):  # the largest step in (0, 1] keeping x + step·dx > 0
            ratio = jnp.where(dx < 0, -x / jnp.where(dx < 0, dx, -1), jnp.inf)
            return jnp.minimum(1.0, 0.99 * jnp.min(ratio))

        step = jnp.minimum(longest(t, dt), longest(mu, dmu)).astype(dtype)
        new = u + step * du, t + step * dt, mu + step * dmu
        # Once complementarity underflows, the Newton system turns 0/0: keep the converged point.
        u_new, t_new, mu_new = new
        ok = jnp.all(jnp.isfinite(u_new)) & jnp.all(t_new > 0) & jnp.all(mu_new > 0)  # NaN > 0 is False
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)

    u0 = c
    t0 = jnp.maximum(s * jnp.matmul(X, u0, precision=operators.PRECISION) - a, 1.0)
    mu0 = jnp.ones_like(t0)
    u, _, _ = lax.fori_loop(0, iterations, body, (u0, t0, mu0))
    return u


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
        X: the data (n, d) it was solved on; masks: its activation patterns (n, P), by default the ones
            `solve_gated` recorded in `solution.stats["masks"]`.
        iterations: interior-point iterations per block (40 reaches ~1e-10 relative in float64).

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
