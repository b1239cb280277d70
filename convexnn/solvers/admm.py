"""The exact ReLU program by ADMM with a Nyström-preconditioned CG linear solve and an active-set polish.

The splitting of Bai, Gautam & Sojoudi used by NysADMM, CRONOS and admmNN: with u = [U; V], the
prediction F u = Σ_i D_i X (u_i − v_i) and the cone map G u = s ⊙ X u (one block per pattern),

    min_{u, v, s}  (1/2N) ‖F u − y‖² + λ Σ_g ‖v_g‖ + I(s ≥ 0)    s.t.  u = v,  G u = s.

Scaled-form ADMM with penalty ρ:

    u ← (FᵀF/N + ρ I + ρ_s GᵀG)⁻¹ (Fᵀy/N + ρ(v − a) + ρ_s Gᵀ(s − b))   PCG, warm-started at the last u
    v ← prox_{λ/ρ ‖·‖}(u + a),   s ← (G u + b)₊,   a ← a + u − v,   b ← b + G u − s

Other losses (logistic) also split the prediction, z = F u with penalty ρ_z: the u-step's matrix becomes
ρ_z FᵀF + ρ I + ρ_s GᵀG with ρ_z Fᵀ(z − e) in the right-hand side, and z ← prox_{L/ρ_z}(F u + e), e ← e + F u − z
(`Loss.prox`, row by row). `ADMMOptions(split_loss=True)` takes that path for the squared loss too.

GᵀG is block diagonal with every block XᵀX (s ⊙ s = 1), so ρ I + ρ_s GᵀG is inverted exactly from one
d×d eigendecomposition; FᵀF/N gets a rank-r randomized Nyström approximation, sketched once, and
Woodbury combines the two into the CG preconditioner. ρ follows residual balancing (Boyd et al. §3.4.1).
Each constraint gets its own penalty (ρ for u = v, ρ_s for G u = s, ρ_z for F u = z), each balanced. The
certificate is the exact program's duality gap at v with cone multipliers Γ = (−ρ_s b)₊.

ADMM's tail is linear with a rate near one (65 000 steps to 1e-6 at λ = 1e-3 on 200 rows), but it finds
the non-zero blocks and the tight cone constraints long before. So every so often (with `polish=True`)
`admm_polish` solves the equality-constrained problem that guess implies by Newton–CG and certifies its
answer with the exact program's gap; a certified polish ends the solve. When neither comes within the budget,
the solve says so early: every `slow_window` iterations it measures the geometric rate at which the stopping
rule's distance falls, and stops SLOW when that rate needs more than `slow_margin` times the iterations left.

On row-sharded data u, v, a and the d×d eigendecomposition are replicated and s, b (and z, e) are sharded
with the rows: each CG step adds one (2P, d, c) block over the shards, the residuals and the certificate add
scalars, and the polish adds its d×d blocks and gathers each shard's top d − 1 multipliers per block.

The CG is `linalg.pcg` (see there why not lineax's); the loop is the solvers' one driver (`_loop.iterate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int, Scalar

from .. import losses as _losses
from .. import progress
from .._rows import row_total
from .._units import Units
from ..certificates import ReluRule, relu_duality_gap, relu_violation
from ..linalg import nystrom, pcg
from ..options import ADMMOptions, NewtonOptions
from ..problem import Problem
from ..solution import RUNNING, Status
from ._loop import iterate, running
from .admm_polish import PolishResult, polish_relu

__all__ = ["ADMMState", "Point", "solve_relu_admm", "uses_loss_split"]


class Point(NamedTuple):
    """What one ADMM step starts from: the copies and slacks with their scaled duals."""

    v: Array  # copy of u, (2P, d, c)
    a: Array  # scaled dual of u = v
    s: Array  # cone slacks, (n, c, 2P)
    b: Array  # scaled dual of G u = s
    z: Array | None  # predictions (split loss only), (n, c)
    e: Array | None  # scaled dual of F u = z


class ADMMState(NamedTuple):
    point: Point
    u: Array  # the last u-step's solution (warm start of the next CG)
    v_out: Array  # the reported weights: the last v, or the accepted polish
    rho: Scalar  # penalty of u = v
    rho_s: Scalar  # penalty of G u = s
    rho_z: Scalar  # penalty of F u = z (split loss)
    objective: Scalar
    gap: Scalar
    violation: Scalar
    iterations: Int[Array, ""]
    admm_steps: Int[Array, ""]
    cg_iterations: Int[Array, ""]
    polishes: Int[Array, ""]  # active-set polishes tried
    next_polish: Int[Array, ""]  # the ADMM step at which the next polish is tried
    status: Int[Array, ""]
    distance: Scalar  # the stopping rule's lowest distance so far (`ReluRule.distance`)
    mark_distance: Scalar  # its value at the start of the current rate window
    mark_iterations: Int[Array, ""]  # the iterations at that start
    projected: Scalar  # the iterations still needed at the last window's rate (inf: no window yet)

    @property
    def W(self) -> Array:
        return self.v_out


class _Maps(NamedTuple):
    """The problem's maps as ADMM splits them, and what it computes once: XᵀX's eigenbasis, the Nyström sketch."""

    problem: Problem
    evals: Array  # eigenvalues of XᵀX (≥ 0), and
    Q: Array  # its eigenvectors
    sketch: tuple[Array, Array] | None  # (U, λ) with U diag(λ) Uᵀ ≈ FᵀF/N; None without Nyström
    split: bool  # the loss enters through its prox (z = F u split off)
    rhs_y: Array | None  # Fᵀy/N, the u-step's constant term for the exact squared loss

    def F(self, u):
        return self.problem.split(self.problem.products(u))[0]

    def Ft(self, r):
        shape = self.problem.residual_shape(2 * self.problem.num_patterns)
        return self.problem.pullback(r, jnp.zeros(shape, r.dtype))

    def Gt(self, h):
        n, c = self.problem.y.shape
        return self.problem.pullback(jnp.zeros((n, c), h.dtype), h)

    def block_apply(self, u, rho, rho_s, inverse=False):
        """(ρ I + ρ_s XᵀX)^{±1} on every block, u (q, d, c)."""
        coeff = jnp.einsum("de,qdc->qec", self.Q, u)
        diag = rho + rho_s * self.evals
        diag = 1 / diag if inverse else diag
        return jnp.einsum("de,qec->qdc", self.Q, coeff * diag[None, :, None])

    def preconditioner(self, weight_f, rho, rho_s) -> Callable[[Array], Array]:
        """v ↦ (ρ I + ρ_s GᵀG + w U diag(λ) Uᵀ)⁻¹ v by Woodbury, or the block part alone."""

        def Binv(v):
            return self.block_apply(v, rho, rho_s, inverse=True)

        if self.sketch is None:
            return Binv
        U_ny, lam_ny = self.sketch
        BU = jax.vmap(Binv)(U_ny)  # (r, q, d, c)
        eigs = weight_f * self.problem.N * lam_ny
        tiny = jnp.finfo(U_ny.dtype).tiny
        cap = jnp.diag(1 / jnp.maximum(eigs, tiny)) + jnp.einsum("rqdc,tqdc->rt", U_ny, BU)
        cap_chol = jnp.linalg.cholesky(cap)

        def apply(v):
            Bv = Binv(v)
            coeff = jax.scipy.linalg.cho_solve((cap_chol, True), jnp.einsum("rqdc,qdc->r", BU, v))
            return Bv - jnp.einsum("r,rqdc->qdc", coeff, BU)

        return apply


def _maps(problem: Problem, W0: Array, opts: ADMMOptions) -> _Maps:
    """ρ(I + GᵀG) = ρ (I + XᵀX) on every block: one d×d eigendecomposition; FᵀF/N sketched once."""
    X = problem.X.reshape(-1, problem.X.shape[-1])  # patches: GᵀG = Σ_k X_kᵀ X_k
    evals, Q = jnp.linalg.eigh(row_total(jnp.matmul(X.T, X, precision=jax.lax.Precision.HIGHEST), problem.rows))
    split = uses_loss_split(problem.loss, opts)
    maps = _Maps(problem, jnp.maximum(evals, 0), Q, None, split, None)
    if opts.precondition and opts.rank > 0:  # the u-step weighs FᵀF by 1/N (exact loss) or ρ_z (split)
        key = jax.random.key(opts.seed)
        sketch = nystrom(lambda u: maps.Ft(maps.F(u)) / problem.N, W0.shape, W0.dtype, opts.rank, key)
        maps = maps._replace(sketch=sketch)
    return maps if split else maps._replace(rhs_y=maps.Ft(problem.y / problem.N))


class _Certify(NamedTuple):
    """The exact program's certificate at v with cone multipliers Γ = (−ρ_s b)₊, and the stopping rules."""

    problem: Problem
    lam: Scalar
    rule: ReluRule
    max_iters: Int[Array, ""]

    def measure(self, v, b, rho_s):
        p = self.problem
        XW = p.products(v)
        z, R = p.split(XW)
        objective = p.loss_value(z) + self.lam * p.penalty.value(v)
        gamma = jnp.maximum(-rho_s * b, 0)
        gap = relu_duality_gap(p, self.lam, v, z, R, p.loss_grad(z), gamma)
        return objective, gap, relu_violation(R, XW, p.rows)

    def certified(self, objective, gap, violation):
        return self.rule.met(objective, gap, violation)

    def pace(self, st: ADMMState, opts: ADMMOptions) -> ADMMState:
        """At the end of each `slow_window` iterations: the geometric rate r at which the lowest distance d fell
        over it, the iterations log(d)/r it still needs at that rate, and SLOW when those exceed `slow_margin`
        times the budget left."""
        if opts.slow_window == 0:
            return st
        distance = jnp.minimum(st.distance, self.rule.distance(st.objective, st.gap, st.violation))
        spent = st.iterations - st.mark_iterations
        due = spent >= opts.slow_window
        rate = jnp.log(st.mark_distance / distance) / jnp.maximum(spent, 1).astype(distance.dtype)
        measurable = jnp.isfinite(rate) & jnp.isfinite(distance)
        needs = jnp.where(rate > 0, jnp.log(jnp.maximum(distance, 1)) / jnp.where(rate > 0, rate, 1), jnp.inf)
        left = (self.max_iters - st.iterations).astype(distance.dtype)
        slow = due & measurable & (needs > opts.slow_margin * left) & (st.status == RUNNING)
        return st._replace(
            distance=distance,
            mark_distance=jnp.where(due, distance, st.mark_distance),
            mark_iterations=jnp.where(due, st.iterations, st.mark_iterations),
            projected=jnp.where(due & measurable, needs, st.projected),
            status=jnp.where(slow, Status.SLOW, st.status).astype(jnp.int32),
        )


def _initial(maps: _Maps, cert: _Certify, W0: Array, opts: ADMMOptions) -> ADMMState:
    """u = v = W0, slacks at (G W0)₊, zero duals; the penalties from the data unless given."""
    problem, dtype, tiny = maps.problem, W0.dtype, jnp.finfo(W0.dtype).tiny
    X = problem.X
    if opts.rho is None:  # the mean curvature of the loss per coordinate, so neither term dominates at first
        masks_f = problem.masks.astype(dtype)
        rho0 = problem.row_sum(jnp.sum(X * X, axis=-1) * jnp.sum(masks_f, axis=-1)) / (
            problem.N * problem.num_patterns * X.shape[-1]
        )
        rho0 = jnp.maximum(rho0, tiny)
    else:
        rho0 = jnp.asarray(opts.rho, dtype)
    # The cone constraints' penalty starts scaled by 1/mean eig(XᵀX), so that ρ I and ρ_s XᵀX have the
    # same size in the u-step; residual balancing then tunes the two apart.
    rho_s0 = rho0 / jnp.maximum(jnp.mean(maps.evals), tiny) if opts.rho_s is None else jnp.asarray(opts.rho_s, dtype)
    z0, R0 = problem.split(problem.products(W0))
    # The prediction's penalty starts at the loss's mean curvature there, so ρ_z FᵀF ≈ ρ I at first.
    h0 = problem.hessian_diagonal(z0)
    rho_z0 = jnp.maximum(problem.row_sum(h0) / problem.row_sum(jnp.ones_like(h0)), tiny)
    rho_z0 = rho_z0 if maps.split else jnp.ones((), dtype)
    point0 = Point(
        v=W0,
        a=jnp.zeros_like(W0),
        s=jnp.maximum(R0, 0),
        b=jnp.zeros_like(R0),
        z=z0 if maps.split else None,
        e=jnp.zeros_like(z0) if maps.split else None,
    )
    objective, gap, violation = cert.measure(W0, point0.b, rho_s0)
    rhos = (rho0.astype(dtype), rho_s0.astype(dtype), rho_z0.astype(dtype))
    counts = (jnp.zeros((), jnp.int32),) * 4  # iterations, ADMM steps, CG iterations, polishes
    status = jnp.where(cert.certified(objective, gap, violation), Status.CONVERGED, RUNNING).astype(jnp.int32)
    next_polish = jnp.asarray(opts.polish_every, jnp.int32)
    distance = cert.rule.distance(objective, gap, violation)
    pace = (distance, distance, jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype))
    return ADMMState(point0, W0, W0, *rhos, objective, gap, violation, *counts, next_polish, status, *pace)


def _balance(primal, dual, opts: ADMMOptions, dtype):
    """Residual balancing (Boyd et al. §3.4.1): ×2 when the primal residual dominates, ×½ when the dual does."""
    grow = jnp.where(primal > opts.balance * dual, 2.0, jnp.where(dual > opts.balance * primal, 0.5, 1.0))
    return grow.astype(dtype)


def _admm_map(maps: _Maps, lam, x: Point, u_warm, rho, rho_s, rho_z, opts: ADMMOptions):
    """One over-relaxed ADMM step from x: (u, the next point, CG steps, the residual-balancing factors)."""
    problem, dtype = maps.problem, u_warm.dtype
    weight_f = rho_z if maps.split else 1 / jnp.asarray(problem.N, dtype)
    alpha = jnp.asarray(opts.relaxation, dtype)

    def system(u):
        return weight_f * maps.Ft(maps.F(u)) + maps.block_apply(u, rho, rho_s)

    rhs = rho * (x.v - x.a) + rho_s * maps.Gt(x.s - x.b)
    rhs = rhs + (rho_z * maps.Ft(x.z - x.e) if maps.split else maps.rhs_y)
    # Warm start: solve for the correction from the last u.
    precondition = maps.preconditioner(weight_f, rho, rho_s)
    delta, cg_steps = pcg(system, rhs - system(u_warm), opts.cg_rtol, opts.cg_max_steps, precondition)
    u = u_warm + delta
    Fu, Gu = problem.split(problem.products(u))
    u_hat = alpha * u + (1 - alpha) * x.v
    Gu_hat = alpha * Gu + (1 - alpha) * x.s
    v = problem.penalty.prox(u_hat + x.a, lam / rho)
    s = jnp.maximum(Gu_hat + x.b, 0)
    fx = x._replace(v=v, a=x.a + u_hat - v, s=s, b=x.b + Gu_hat - s)

    # Primal ‖u − v‖ against dual ρ‖v − v⁻‖, ‖Gu − s‖ against ρ_s‖Gᵀ(s − s⁻)‖, ‖Fu − z‖ against ρ_z‖Fᵀ(z − z⁻)‖.
    f_v = _balance(jnp.sqrt(jnp.sum(jnp.square(u - v))), rho * jnp.sqrt(jnp.sum(jnp.square(v - x.v))), opts, dtype)
    f_s = _balance(
        jnp.sqrt(problem.row_sum(jnp.square(Gu - s))),
        rho_s * jnp.sqrt(jnp.sum(jnp.square(maps.Gt(s - x.s)))),
        opts,
        dtype,
    )
    f_z = jnp.ones((), dtype)
    if maps.split:
        w = alpha * Fu + (1 - alpha) * x.z + x.e
        z = problem.loss.prox(w, problem.y, problem.N, 1 / rho_z)
        fx = fx._replace(z=z, e=w - z)
        primal = jnp.sqrt(problem.row_sum(jnp.square(Fu - z)))
        f_z = _balance(primal, rho_z * jnp.sqrt(jnp.sum(jnp.square(maps.Ft(z - x.z)))), opts, dtype)
    return u, fx, cg_steps, (f_v, f_s, f_z)


def _step(maps: _Maps, cert: _Certify, st: ADMMState, opts: ADMMOptions) -> ADMMState:
    """One ADMM step, its certificate, and the penalties rebalanced (the scaled duals follow them)."""
    u, fx, cg_steps, (f_v, f_s, f_z) = _admm_map(maps, cert.lam, st.point, st.u, st.rho, st.rho_s, st.rho_z, opts)
    objective, gap, violation = cert.measure(fx.v, fx.b, st.rho_s)
    done = cert.certified(objective, gap, violation)
    point = fx._replace(a=fx.a / f_v, b=fx.b / f_s, e=None if fx.e is None else fx.e / f_z)
    st = st._replace(
        point=point,
        u=u,
        v_out=fx.v,
        rho=st.rho * f_v,
        rho_s=st.rho_s * f_s,
        rho_z=st.rho_z * f_z,
        objective=objective,
        gap=gap,
        violation=violation,
        iterations=st.iterations + 1 + cg_steps,
        admm_steps=st.admm_steps + 1,
        cg_iterations=st.cg_iterations + cg_steps,
        status=jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32),
    )
    return cert.pace(st, opts)


def _polish_step(maps: _Maps, cert: _Certify, st: ADMMState, max_iters, opts: ADMMOptions) -> ADMMState:
    """After ADMM steps up to `next_polish`: polish once; a certified result ends the solve."""
    problem, dtype = maps.problem, st.v_out.dtype
    _, R = problem.split(problem.products(st.v_out))
    b = st.point.b
    gamma_admm = jnp.maximum(-st.rho_s * b, 0)  # ρ_s b does not change when balancing rescales ρ_s
    attempt = running(st, max_iters) & (st.admm_steps >= st.next_polish)

    def run_polish(_):
        res = polish_relu(
            problem, cert.lam, st.v_out, R + b < 0, gamma_admm, maps.evals[-1], NewtonOptions(), opts.polish_budget
        )
        ok = jnp.isfinite(res.objective) & jnp.isfinite(res.gap)
        return res._replace(gap=jnp.where(ok, res.gap, jnp.inf))

    def skip(_):
        return PolishResult(st.v_out, st.objective, jnp.asarray(jnp.inf, dtype), st.violation, jnp.zeros((), jnp.int32))

    res = lax.cond(attempt, run_polish, skip, None)
    accept = attempt & cert.certified(res.objective, res.gap, res.violation)
    backoff = (jnp.asarray(opts.polish_backoff, dtype) * st.admm_steps.astype(dtype)).astype(jnp.int32)
    wait = jnp.maximum(jnp.asarray(opts.polish_every, jnp.int32), backoff)
    return st._replace(
        v_out=jnp.where(accept, res.W, st.v_out),
        objective=jnp.where(accept, res.objective, st.objective),
        gap=jnp.where(accept, res.gap, st.gap),
        violation=jnp.where(accept, res.violation, st.violation),
        status=jnp.where(accept, Status.CONVERGED, st.status).astype(jnp.int32),
        iterations=st.iterations + jnp.where(attempt, res.iterations, 0),
        polishes=st.polishes + attempt.astype(jnp.int32),
        next_polish=jnp.where(attempt, st.admm_steps + wait, st.next_polish),
    )


def solve_relu_admm(
    problem: Problem,
    lam: Scalar,
    W0: Array,
    rule: ReluRule,
    max_iters: Int[Array, ""],
    opts: ADMMOptions,
    monitor: progress.Monitor | None = None,
    polish: bool = True,
    units: Units | None = None,
    state: ADMMState | None = None,
) -> ADMMState:
    """ADMM for the exact ReLU program from u = v = W0 (or from `state`, exactly); see the module docstring.

    With `polish`, every `opts.polish_every` ADMM steps an active-set Newton polish (`admm_polish`) solves
    for the point ADMM's active set implies; it ends the solve when the exact certificate accepts it. The
    polish runs between phases of ADMM steps: under vmap (λ paths) a polish inside the step would run at
    every step (a batched cond runs both branches).

    Stops CONVERGED when the certificate meets `rule`; SLOW when, over a window of `opts.slow_window`
    iterations, the rule's distance fell at a rate that would need more than `opts.slow_margin` times the
    iterations left (`_Certify.pace`; the projection is `projected`).

    With a `monitor` (static), reports after ADMM steps (every `monitor.every` iterations) and at the end,
    in the user's units when the problem was rescaled by `units`.
    """
    maps = _maps(problem, W0, opts)
    cert = _Certify(problem, lam, rule, max_iters)
    if state is None:
        state = _initial(maps, cert, W0, opts)
    else:
        done = cert.certified(state.objective, state.gap, state.violation)
        state = state._replace(status=jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32))

    phases = {}
    if polish:
        phases = dict(
            pause=lambda st: st.admm_steps >= st.next_polish,
            between=lambda st: _polish_step(maps, cert, st, max_iters, opts),
        )
    return iterate(
        lambda st: _step(maps, cert, st, opts),
        state,
        max_iters,
        finite=lambda st: jnp.isfinite(st.objective) & jnp.isfinite(st.gap) & jnp.all(jnp.isfinite(st.v_out)),
        counters=("iterations", "admm_steps", "cg_iterations"),
        report=progress.reporter(monitor, lam, units, _read, step_out="weight_penalty_out"),
        **phases,
    )


def _read(st: ADMMState) -> dict:
    return dict(iteration=st.iterations, objective=st.objective, gap=st.gap, violation=st.violation, step=st.rho)


def uses_loss_split(loss, opts: ADMMOptions) -> bool:
    """Static: whether the ADMM splits z = F u (the loss by its prox) or takes the squared loss in the u-step."""
    if opts.split_loss is None:
        return not isinstance(loss, _losses.Squared)
    if not opts.split_loss and not isinstance(loss, _losses.Squared):
        raise ValueError(f"ADMMOptions(split_loss=False) needs the squared loss; got {loss.name}")
    return bool(opts.split_loss)
