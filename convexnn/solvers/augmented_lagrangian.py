"""The exact ReLU program by an augmented Lagrangian method whose subproblems R-FISTA solves.

For multipliers Γ ≥ 0 of the cone constraints R = s ⊙ X W ≥ 0 and a penalty ρ > 0, one outer step is

    W ← argmin_W L(z(W)) + (ρ/2) ‖(Γ/ρ − R(W))₊‖² + λ Σ_g ‖W_g‖      (warm-started R-FISTA + Newton polish)
    Γ ← ρ (Γ/ρ − R(W))₊                                              (first-order multiplier update)
    ρ ← 10 ρ  if the violation did not fall fourfold                    (as in scnn and LANCELOT)

and the subproblem tolerance tightens tenfold per step down to tol/10. It stops when the violation is
≤ `constraint_tol` (relative to max |X W|) and the exact program's duality gap, built from ∇L and Γ
(`relu_duality_gap`), is ≤ tol · max(1, |objective|).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int, Scalar

from .. import progress, prox
from ..solution import RUNNING, Status
from .gated import PolishOptions, solve_composite
from .newton import NewtonOptions
from .relu_objectives import AugmentedLagrangianObjective, ReluData, relu_duality_gap, relu_violation

__all__ = ["ALOptions", "ALState", "solve_relu_al"]


class ALOptions(NamedTuple):
    """AL settings: ρ starts at rho0/N, grows by `growth` when the violation did not fall by `shrink`.

    From a feasible W0 (the default zero) the first step's violation cannot have fallen, so ρ grows once
    there: the first subproblem runs at rho0/N, the next from 10·rho0/N. Measured at 2000×50×200 (float32,
    tol 1e-4, code before 3b07a8e), that reached 1e-4 at iteration 16 402 (at d6b4375: 18 152); exempting
    the first step from the test (ρ grew at the second instead) and starting at 10·rho0/N without that
    growth both first reached it at 20 000.
    """

    rho0: float = 100.0
    growth: float = 10.0
    shrink: float = 0.25
    inner_tol0: float = 1e-3
    # The subproblems' Newton polish builds its block-Jacobi preconditioner once per polish, not per Newton
    # step: a build (n d² per block, ~84 ms) costs ~35 CG steps at 2000×50×200, and rebuilding at every
    # step did not save CG steps there (float32, one core: 174 Newton steps and ~17 400 polish iterations
    # either way; the AL's 20 000 iterations took 67 s rebuilding, 55 s building once).
    polish: PolishOptions = PolishOptions(newton=NewtonOptions(rebuild_preconditioner=False))


class ALState(NamedTuple):
    W: Array  # [U; V], (2P, d, c)
    gamma: Array  # multipliers of R ≥ 0, (n, c, 2P)
    rho: Scalar
    inner_tol: Scalar
    objective: Scalar
    gap: Scalar
    violation: Scalar
    iterations: Int[Array, ""]
    outer_steps: Int[Array, ""]
    status: Int[Array, ""]


def _measure(data: ReluData, lam: Scalar, W: Array, gamma: Array) -> tuple[Scalar, Scalar, Scalar]:
    XW = data.products(W)
    z, R = data.split(XW)
    objective = data.loss_value(z) + lam * prox.group_l1(W)
    grad = data.loss.grad(z, data.y, data.N)
    return objective, relu_duality_gap(data, lam, W, z, R, grad, gamma), relu_violation(R, XW, data.rows)


def solve_relu_al(
    data: ReluData,
    lam: Scalar,
    W0: Array,
    tol: Scalar,
    constraint_tol: Scalar,
    max_iters: Int[Array, ""],
    *,
    polish: bool = True,
    opts: ALOptions = ALOptions(),
    monitor: progress.Monitor | None = None,
) -> ALState:
    """Augmented Lagrangian for the exact ReLU program from W0 = [U0; V0]; see the module docstring.

    With a `monitor` (static), reports after outer steps (every `monitor.every` iterations) and at the end.
    """
    dtype = W0.dtype
    n, c = data.y.shape
    gamma0 = jnp.zeros((n, c, W0.shape[0]), dtype)
    objective, gap, violation = _measure(data, lam, W0, gamma0)
    done = (violation <= constraint_tol) & (gap <= tol * jnp.maximum(1, jnp.abs(objective)))
    s0 = ALState(
        W=W0,
        gamma=gamma0,
        rho=jnp.asarray(opts.rho0 / data.N, dtype),
        inner_tol=jnp.maximum(tol, jnp.asarray(opts.inner_tol0, dtype)),
        objective=objective,
        gap=gap,
        violation=violation,
        iterations=jnp.zeros((), jnp.int32),
        outer_steps=jnp.zeros((), jnp.int32),
        status=jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32),
    )

    def cond(s: ALState):
        return (s.status == RUNNING) & (s.iterations < max_iters)

    def report(s: ALState, **when):
        fields = dict(objective=s.objective, gap=s.gap, violation=s.violation, step=s.rho, lam=lam)
        progress.report(monitor, iteration=s.iterations, **fields, **when)

    def body(s: ALState) -> ALState:
        obj = AugmentedLagrangianObjective(data=data, gamma=s.gamma, rho=s.rho)
        inner = solve_composite(
            obj, lam, s.W, s.inner_tol, max_iters - s.iterations, polish=polish, polish_opts=opts.polish
        )
        W = inner.W
        _, R = data.split(data.products(W))
        gamma = s.rho * jnp.maximum(s.gamma / s.rho - R, 0)
        objective, gap, violation = _measure(data, lam, W, gamma)
        finite = jnp.isfinite(objective) & jnp.isfinite(gap) & jnp.all(jnp.isfinite(W))
        done = (violation <= constraint_tol) & (gap <= tol * jnp.maximum(1, jnp.abs(objective)))
        status = jnp.where(finite, jnp.where(done, Status.CONVERGED, RUNNING), Status.NONFINITE)
        slow = (violation > opts.shrink * s.violation) & (violation > constraint_tol)
        new = ALState(
            W=W,
            gamma=gamma,
            rho=jnp.where(slow, opts.growth * s.rho, s.rho),
            inner_tol=jnp.maximum(0.1 * s.inner_tol, 0.1 * tol),
            objective=objective,
            gap=gap,
            violation=violation,
            iterations=s.iterations + jnp.maximum(inner.iterations, 1),
            outer_steps=s.outer_steps + 1,
            status=status.astype(jnp.int32),
        )
        kept = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, s)  # the last finite state on divergence
        kept = kept._replace(iterations=new.iterations, outer_steps=new.outer_steps, status=new.status)
        if monitor is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(kept, since=s.iterations, when=cond(s) & cond(kept))
        return kept

    out = lax.while_loop(cond, body, s0)
    out = out._replace(status=jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32))
    if monitor is not None:
        report(out, status=out.status)
    return out
