"""Differentiating a solution through its optimality conditions, not through the solver's loop.

At the optimum W* with support S (the non-zero groups), the restricted gradient vanishes:

    r(W, θ) = [Kᵀ ∇L(K W; y) + λ W_g / ‖W_g‖]_{g ∈ S} = 0,    W_g = 0 for g ∉ S,    θ = (X, y, λ).

By the implicit function theorem dW*/dθ = −H⁻¹ ∂r/∂θ with H = ∂r/∂W the restricted Hessian, so a
vector–Jacobian product costs one linear solve, u = H⁻¹ W̄ (H is symmetric), and one VJP of r:
θ̄ = −(∂r/∂θ)ᵀ u. The support is held fixed, which is exact wherever it is locally constant (λ not at a
kink of the path). The objective's derivative is its partial derivative in θ at W* (envelope theorem).
The linear solve reuses the Newton polish's operators and preconditioner.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Scalar

from .. import prox
from ..linalg import pcg
from ..options import NewtonOptions
from ..problem import Problem
from .newton import kernel_is_worth_it, restricted_newton_system
from .objectives import GatedObjective

__all__ = ["gated_solution_vjp"]

_SOLVE_RTOL = {jnp.dtype("float32"): 1e-5, jnp.dtype("float64"): 1e-12}


def gated_solution_vjp(
    X: Array,
    Y: Array,
    masks: Array,
    lam: Scalar,
    W: Array,
    loss,
    W_bar: Array,
    objective_bar: Scalar,
    max_cg: int = 1000,
) -> tuple[Array, Array, Scalar]:
    """(X̄, Ȳ, λ̄) for cotangents W̄ on the solution W and objective_bar on its objective."""
    N = loss.normaliser(Y)
    active = prox.group_norms(W) > 0
    mask = active[:, None, :]
    zero = jnp.zeros((), W.dtype)

    def objective_at(X_, Y_, lam_):
        obj = GatedObjective(problem=Problem(X=X_, masks=masks, y=Y_, loss=loss, N=N))
        return obj.value(obj.apply(W)) + lam_ * prox.group_l1(W)

    def residual(X_, Y_, lam_):
        obj = GatedObjective(problem=Problem(X=X_, masks=masks, y=Y_, loss=loss, N=N))
        return restricted_newton_system(obj, lam_, W, obj.apply(W), active, False)[0]

    obj = GatedObjective(problem=Problem(X=X, masks=masks, y=Y, loss=loss, N=N))
    use_kernel = kernel_is_worth_it(obj, W, NewtonOptions())
    _, hess, precondition, _, _ = restricted_newton_system(obj, lam, W, obj.apply(W), active, use_kernel)
    rhs = jnp.where(mask, W_bar, zero)
    u, _ = pcg(hess, rhs, _SOLVE_RTOL.get(W.dtype, 1e-6), max_cg, precondition)
    u = jnp.where(mask, u, zero)

    _, pull_residual = jax.vjp(residual, X, Y, lam)
    X_bar, Y_bar, lam_bar = jax.tree.map(jnp.negative, pull_residual(u))
    _, pull_objective = jax.vjp(objective_at, X, Y, lam)
    X_o, Y_o, lam_o = pull_objective(objective_bar)
    return X_bar + X_o, Y_bar + Y_o, lam_bar + lam_o
