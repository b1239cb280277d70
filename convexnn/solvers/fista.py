"""R-FISTA: accelerated proximal gradient with backtracking line search, step growth and restarts.

One iteration, from the extrapolated point V with g = ∇F(K V) and G = Kᵀ g already known:

    W⁺ = prox_{ηλΩ}(V − η G)                        the penalty's prox (group or singular-value thresholding)
    accept η if  F(K W⁺) − F(K V) − ⟨g, K(W⁺ − V)⟩ ≤ ‖W⁺ − V‖² / (2η)   (else shrink η, retry)
    restart momentum if ⟨V − W⁺, W⁺ − W⟩ > 0        (gradient-mapping restart, O'Donoghue–Candès)
    V⁺ = W⁺ + β (W⁺ − W),  K V⁺ = K W⁺ + β (K W⁺ − K W)   (no GEMM: K is linear)
    g⁺ = ∇F(K V⁺),  G⁺ = Kᵀ g⁺                      one GEMM; also gives the dual point for the gap

so an iteration costs one K (per line-search trial) and one Kᵀ. The step grows by `growth` after an
accepted step whose measured curvature left room for it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from ..options import FistaOptions
from ..solution import RUNNING, Status
from .objectives import CompositeSmooth

__all__ = [
    "FistaState",
    "init_state",
    "fista_step",
    "tree_combine",
    "status_of",
    "status_at",
    "is_finite",
    "rounding_scale",
]


class FistaState(NamedTuple):
    W: Float[Array, "p d c"]  # current iterate
    img: PyTree  # K W
    V: Float[Array, "p d c"]  # extrapolated point
    img_v: PyTree  # K V
    g_v: PyTree  # ∇F(K V)
    G_v: Float[Array, "p d c"]  # Kᵀ ∇F(K V)
    t: Scalar  # momentum parameter
    step: Scalar  # step size η for the next line search
    objective: Scalar  # F(K W) + λ‖W‖_{2,1}
    gap: Scalar  # certified bound on objective − optimum
    stable: Int[Array, ""]  # iterations since the set of non-zero groups last changed
    active: Bool[Array, "p ..."]  # the identified structure of W: its non-zero groups (its blocks' ranks)


def tree_combine(a: PyTree, b: PyTree, alpha: Scalar, beta: Scalar) -> PyTree:
    """alpha·a + beta·b leaf by leaf."""
    return jax.tree.map(lambda x, y: alpha * x + beta * y, a, b)


def _vdot(a: Array, b: Array) -> Scalar:
    return jnp.sum(a * b)


def evaluate(obj: CompositeSmooth, lam: Scalar, W: Array, img: PyTree, g: PyTree, G: Array) -> tuple:
    """(objective, gap) at W, with the dual point taken from the gradient g (and G = Kᵀ g)."""
    objective = obj.value(img) + lam * obj.penalty.value(W)
    return objective, obj.gap(lam, W, img, g, G)


def init_state(obj: CompositeSmooth, lam: Scalar, W0: Float[Array, "p d c"], step0: Scalar | None = None) -> FistaState:
    """The state at W0: its image, gradient, objective, gap, and a first step size.

    Without `step0` the first step is 1/ρ with ρ = ⟨K G, ∇²F K G⟩ / ‖G‖², the curvature of F∘K along
    the gradient (one extra K); the line search corrects it from there.
    """
    img = obj.apply(W0)
    g = obj.grad(img)
    G = obj.transpose(g)
    objective, gap = evaluate(obj, lam, W0, img, g, G)
    dtype = W0.dtype
    if step0 is None:
        KG = obj.apply(G)
        curv = obj.image_vdot(KG, obj.hvp(img, KG))
        gg = _vdot(G, G)
        step0 = jnp.where((curv > 0) & (gg > 0), gg / jnp.where(curv > 0, curv, 1), 1.0)
    active = obj.penalty.support(W0)
    one, zero = jnp.ones((), dtype), jnp.zeros((), jnp.int32)
    # At W0 the extrapolated point is W0 itself: (V, K V, ∇F, Kᵀ∇F) = (W0, K W0, g, G).
    return FistaState(W0, img, W0, img, g, G, one, jnp.asarray(step0, dtype), objective, gap, zero, active)


def fista_step(obj: CompositeSmooth, lam: Scalar, s: FistaState, opts: FistaOptions) -> FistaState:
    """One R-FISTA iteration (see the module docstring)."""
    dtype = s.W.dtype
    tiny = jnp.finfo(dtype).tiny
    eps = jnp.finfo(dtype).eps

    def attempt(step):
        W_new = obj.penalty.prox(s.V - step * s.G_v, step * lam)
        img_new = obj.apply(W_new)
        dd = _vdot(W_new - s.V, W_new - s.V)
        breg = obj.bregman(img_new, s.img_v)
        # Rounding in F's values is ~eps·|F|; allow that much so a converged iterate is not rejected.
        ok = breg <= dd / (2 * step) * (1 + 16 * eps) + 16 * eps * tiny
        curvature = 2 * breg / jnp.maximum(dd, tiny)  # of F∘K along W_new − V
        return W_new, img_new, ok, curvature

    def backtrack_cond(c):
        _, _, _, ok, _, k = c
        return (~ok) & (k < opts.max_backtracks)

    def backtrack_body(c):
        step, _, _, _, curvature, k = c
        # The curvature just measured says which step would have passed; never shrink by less than
        # `backtrack`'s complement, never by more than 10×.
        new_step = jnp.clip(0.95 / jnp.maximum(curvature, tiny), 0.1 * step, opts.backtrack * step)
        return (new_step, *attempt(new_step), k + 1)

    first = attempt(s.step)
    step, W_new, img_new, _, curvature, _ = lax.while_loop(
        backtrack_cond, backtrack_body, (s.step, *first, jnp.zeros((), jnp.int32))
    )

    restart = _vdot(s.V - W_new, W_new - s.W) > 0
    t_next = (1 + jnp.sqrt(1 + 4 * s.t * s.t)) / 2
    beta = jnp.where(restart, 0, (s.t - 1) / t_next)
    t_next = jnp.where(restart, 1, t_next)
    V = W_new + beta * (W_new - s.W)
    img_v = tree_combine(img_new, s.img, 1 + beta, -beta)
    g_v = obj.grad(img_v)
    G_v = obj.transpose(g_v)

    objective, gap = evaluate(obj, lam, W_new, img_new, g_v, G_v)
    active = obj.penalty.support(W_new)
    changed = jnp.any(active != s.active)
    grow = curvature * step < opts.slack
    new_step = jnp.where(grow, step * opts.growth, step).astype(dtype)
    stable = jnp.where(changed, 0, s.stable + 1)
    return FistaState(
        W_new, img_new, V, img_v, g_v, G_v, t_next.astype(dtype), new_step, objective, gap, stable, active
    )


def is_finite(s: FistaState) -> Bool[Array, ""]:
    return jnp.all(jnp.isfinite(s.W)) & jnp.isfinite(s.objective) & jnp.isfinite(s.gap)


def rounding_scale(objective: Scalar) -> Scalar:
    """How large the rounding of a computed objective is, in epsilons: √(|F| · max(1, |F|)).

    In the solvers' units (targets of unit variance), a loss value's rounding is that of its residuals times
    the targets' scale, √|F| · 1, and at least that of the value itself, |F|. Stall rules compare progress
    with it: relative to max(1, |F|) alone, a well-fitted problem (|F| ≪ 1) would look stalled far too soon.
    """
    size = jnp.abs(objective)
    return jnp.sqrt(size * jnp.maximum(1, size))


def status_of(s: FistaState, tol: Scalar) -> Int[Array, ""]:
    """Status from the state alone: NONFINITE, CONVERGED, or still running."""
    return status_at(s.objective, s.gap, tol, is_finite(s))


def status_at(objective: Scalar, gap: Scalar, tol: Scalar, finite: Bool[Array, ""]) -> Int[Array, ""]:
    """NONFINITE unless `finite`, else CONVERGED once gap ≤ tol · max(1, |objective|) (every solver's stopping rule,
    in its units), else still running."""
    met = gap <= tol * jnp.maximum(1, jnp.abs(objective))
    return jnp.where(finite, jnp.where(met, Status.CONVERGED, RUNNING), Status.NONFINITE).astype(jnp.int32)
