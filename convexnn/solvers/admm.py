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

ADMM's tail is linear with a rate near one (measured: 65 000 steps to 1e-6 at λ = 1e-3 on 200 rows), but
it finds the non-zero blocks and the tight cone constraints long before. So every so often (with
`polish=True`) `admm_polish` solves the equality-constrained problem that guess implies by Newton–CG and
certifies its answer with the exact program's gap; a certified polish ends the solve. Anderson acceleration
of the ADMM map (memory 5–10, safeguarded) was measured and not adopted: 10–50 % fewer steps on 200 rows
for 1.7–2.4× the wall time per step.

On row-sharded data u, v, a and the d×d eigendecomposition are replicated and s, b (and z, e) are sharded
with the rows: each CG step adds one (2P, d, c) block over the shards, the residuals and the certificate add
scalars, and the polish adds its d×d blocks and gathers each shard's top d − 1 multipliers per block.

The CG is `newton.pcg` rather than lineax's CG: lineax stops on element-wise tests in both the solution
and the right-hand side spaces, which never pass when entries of either are near zero (inactive blocks).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int, Scalar

from .. import losses as _losses
from .. import progress, prox
from .._rows import row_sum, row_total
from .._units import Units
from ..solution import RUNNING, Status
from .admm_polish import PolishResult, polish_relu
from .newton import NewtonOptions, pcg
from .relu_objectives import ReluData, relu_duality_gap, relu_violation

__all__ = ["ADMMOptions", "ADMMState", "Point", "solve_relu_admm", "nystrom", "uses_loss_split"]


class ADMMOptions(NamedTuple):
    """ADMM settings. `rho=None` picks ρ from the data; `rank=0` or `precondition=False` turns Nyström off.

    `split_loss`: also split the prediction z = F u, so that the loss enters through its prox (None:
    for every loss but the squared one, whose u-step takes the loss exactly).
    """

    rho: float | None = None
    rho_s: float | None = None  # the cone constraints' penalty (None: ρ / mean eig(XᵀX))
    cg_rtol: float = 1e-3
    cg_max_steps: int = 50
    rank: int = 20
    precondition: bool = True
    balance: float = 10.0  # rescale ρ by 2 when one residual exceeds the other by this factor
    relaxation: float = 1.6  # over-relaxation α ∈ [1, 2) (Boyd et al. §3.4.3); 1 is plain ADMM
    split_loss: bool | None = None
    polish_every: int = 50  # ADMM steps before the first active-set polish (with polish=True); each one
    # that fails waits max(polish_every, polish_backoff × steps so far) more, so failed polishes cost a
    # bounded fraction of the solve
    polish_backoff: float = 0.25
    polish_budget: int = 400  # iterations (one K and one Kᵀ each) a polish may spend
    seed: int = 0


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

    @property
    def W(self) -> Array:
        return self.v_out


def nystrom(matvec, shape, dtype, rank: int, key) -> tuple[Array, Array]:
    """Randomized Nyström approximation A ≈ U diag(λ) Uᵀ of a PSD operator (Tropp et al., 2017, stable form).

    Returns (U, λ) with U of shape (rank,) + shape (orthonormal rows) and λ ≥ 0 of shape (rank,).
    """
    omega = jax.random.normal(key, (rank,) + tuple(shape), dtype)
    Q, _ = jnp.linalg.qr(omega.reshape(rank, -1).T)  # (m, r)
    Q = Q.T.reshape((rank,) + tuple(shape))
    Y = jax.vmap(matvec)(Q).reshape(rank, -1).T  # (m, r)
    Qm = Q.reshape(rank, -1).T
    nu = jnp.sqrt(Y.shape[0]) * jnp.finfo(dtype).eps * jnp.linalg.norm(Y)
    Y = Y + nu * Qm
    C = jnp.linalg.cholesky(Qm.T @ Y)
    B = jax.scipy.linalg.solve_triangular(C, Y.T, lower=True).T  # Y C⁻ᵀ
    U, sigma, _ = jnp.linalg.svd(B, full_matrices=False)
    lam = jnp.maximum(sigma * sigma - nu, 0)
    return U.T.reshape((rank,) + tuple(shape)), lam


def solve_relu_admm(
    data: ReluData,
    lam: Scalar,
    W0: Array,
    tol: Scalar,
    constraint_tol: Scalar,
    max_iters: Int[Array, ""],
    opts: ADMMOptions,
    monitor: progress.Monitor | None = None,
    polish: bool = True,
    units: Units | None = None,
) -> ADMMState:
    """ADMM for the exact ReLU program from u = v = W0; see the module docstring.

    With `polish`, every `opts.polish_every` ADMM steps an active-set Newton polish (`admm_polish`) solves
    for the point ADMM's active set implies; it ends the solve when the exact certificate accepts it.

    With a `monitor` (static), reports after ADMM steps (every `monitor.every` iterations) and at the end,
    in the user's units when the problem was rescaled by `units`.
    """
    dtype = W0.dtype
    N = data.N
    X = data.X
    split = uses_loss_split(data.loss, opts)
    n, c = data.y.shape
    q = W0.shape[0]
    zeros_n = jnp.zeros((n, c, q), dtype)

    def F(u):
        return data.split(data.products(u))[0]

    def Ft(r):
        return data.pullback(r, zeros_n)

    def G(u):
        return data.split(data.products(u))[1]

    def Gt(h):
        return data.pullback(jnp.zeros((n, c), dtype), h)

    # ρ(I + GᵀG) = ρ (I + XᵀX) on every block: one d×d eigendecomposition.
    evals, Q = jnp.linalg.eigh(row_total(jnp.matmul(X.T, X, precision=jax.lax.Precision.HIGHEST), data.rows))
    evals = jnp.maximum(evals, 0)

    def block_apply(u, rho, rho_s, inverse=False):  # (ρ I + ρ_s XᵀX)^{±1} on every block, u (q, d, c)
        coeff = jnp.einsum("de,qdc->qec", Q, u)
        diag = rho + rho_s * evals
        diag = 1 / diag if inverse else diag
        return jnp.einsum("de,qec->qdc", Q, coeff * diag[None, :, None])

    use_nystrom = opts.precondition and opts.rank > 0
    if use_nystrom:  # FᵀF/N, sketched once; the u-step weighs FᵀF by 1/N (exact loss) or ρ_z (split)
        U_ny, lam_ny = nystrom(lambda u: Ft(F(u)) / N, W0.shape, dtype, opts.rank, jax.random.key(opts.seed))

    def preconditioner(weight_f, rho, rho_s):
        """v ↦ (ρ I + ρ_s GᵀG + w U diag(λ) Uᵀ)⁻¹ v by Woodbury, or the block part alone."""

        def Binv(v):
            return block_apply(v, rho, rho_s, inverse=True)

        if not use_nystrom:
            return Binv
        BU = jax.vmap(Binv)(U_ny)  # (r, q, d, c)
        eigs = weight_f * N * lam_ny
        cap = jnp.diag(1 / jnp.maximum(eigs, jnp.finfo(dtype).tiny)) + jnp.einsum("rqdc,tqdc->rt", U_ny, BU)
        cap_chol = jnp.linalg.cholesky(cap)

        def apply(v):
            Bv = Binv(v)
            coeff = jax.scipy.linalg.cho_solve((cap_chol, True), jnp.einsum("rqdc,qdc->r", BU, v))
            return Bv - jnp.einsum("r,rqdc->qdc", coeff, BU)

        return apply

    rhs_y = None if split else Ft(data.y / N)

    def measure(v, b, rho_s):
        XW = data.products(v)
        z, R = data.split(XW)
        objective = data.loss_value(z) + lam * prox.group_l1(v)
        grad = data.loss.grad(z, data.y, N)
        gamma = jnp.maximum(-rho_s * b, 0)
        return objective, relu_duality_gap(data, lam, v, z, R, grad, gamma), relu_violation(R, XW, data.rows)

    def certified(objective, gap, violation):
        return (violation <= constraint_tol) & (gap <= tol * jnp.maximum(1, jnp.abs(objective)))

    if opts.rho is None:  # the mean curvature of the loss per coordinate, so neither term dominates at first
        masks_f = data.masks.astype(dtype)
        rho0 = row_sum(jnp.sum(X * X, axis=1) * jnp.sum(masks_f, axis=1), data.rows) / (
            N * data.masks.shape[1] * X.shape[1]
        )
        rho0 = jnp.maximum(rho0, jnp.finfo(dtype).tiny)
    else:
        rho0 = jnp.asarray(opts.rho, dtype)
    # The cone constraints' penalty starts scaled by 1/mean eig(XᵀX), so that ρ I and ρ_s XᵀX have the
    # same size in the u-step; residual balancing then tunes the two apart.
    if opts.rho_s is None:
        rho_s0 = rho0 / jnp.maximum(jnp.mean(evals), jnp.finfo(dtype).tiny)
    else:
        rho_s0 = jnp.asarray(opts.rho_s, dtype)
    XW0 = data.products(W0)
    z0, R0 = data.split(XW0)
    # The prediction's penalty starts at the loss's mean curvature there, so ρ_z FᵀF ≈ ρ I at first.
    h0 = data.loss.hessian_diagonal(z0, data.y, N)
    rho_z0 = jnp.maximum(row_sum(h0, data.rows) / row_sum(jnp.ones_like(h0), data.rows), jnp.finfo(dtype).tiny)
    rho_z0 = rho_z0 if split else jnp.ones((), dtype)
    point0 = Point(
        v=W0,
        a=jnp.zeros_like(W0),
        s=jnp.maximum(R0, 0),
        b=jnp.zeros_like(R0),
        z=z0 if split else None,
        e=jnp.zeros_like(z0) if split else None,
    )

    objective, gap, violation = measure(W0, point0.b, rho_s0)
    done = certified(objective, gap, violation)
    state0 = ADMMState(
        point=point0,
        u=W0,
        v_out=W0,
        rho=rho0.astype(dtype),
        rho_s=rho_s0.astype(dtype),
        rho_z=rho_z0.astype(dtype),
        objective=objective,
        gap=gap,
        violation=violation,
        iterations=jnp.zeros((), jnp.int32),
        admm_steps=jnp.zeros((), jnp.int32),
        cg_iterations=jnp.zeros((), jnp.int32),
        polishes=jnp.zeros((), jnp.int32),
        next_polish=jnp.asarray(opts.polish_every, jnp.int32),
        status=jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32),
    )

    def cond(st: ADMMState):
        return (st.status == RUNNING) & (st.iterations < max_iters)

    def report(st: ADMMState, **when):
        fields = dict(objective=st.objective, gap=st.gap, violation=st.violation, step=st.rho, lam=lam)
        if units is not None:
            fields.update(
                objective=units.objective_out(st.objective),
                gap=units.objective_out(st.gap),
                step=units.weight_penalty_out(st.rho),
                lam=units.lam_out(lam),
            )
        progress.report(monitor, iteration=st.iterations, **fields, **when)

    alpha = jnp.asarray(opts.relaxation, dtype)

    def admm_map(x: Point, u_warm, rho, rho_s, rho_z):
        """One over-relaxed ADMM step from x: (u, the next point, CG steps, the residual-balancing factors)."""
        weight_f = rho_z if split else 1 / jnp.asarray(N, dtype)

        def system(u):
            return weight_f * Ft(F(u)) + block_apply(u, rho, rho_s)

        rhs = rho * (x.v - x.a) + rho_s * Gt(x.s - x.b)
        rhs = rhs + (rho_z * Ft(x.z - x.e) if split else rhs_y)
        # Warm start: solve for the correction from the last u.
        delta, cg_steps = pcg(
            system, rhs - system(u_warm), opts.cg_rtol, opts.cg_max_steps, preconditioner(weight_f, rho, rho_s)
        )
        u = u_warm + delta
        Fu, Gu = data.split(data.products(u))
        u_hat = alpha * u + (1 - alpha) * x.v
        Gu_hat = alpha * Gu + (1 - alpha) * x.s
        v = prox.group_soft_threshold(u_hat + x.a, lam / rho)
        s = jnp.maximum(Gu_hat + x.b, 0)
        fx = x._replace(v=v, a=x.a + u_hat - v, s=s, b=x.b + Gu_hat - s)

        # Residual balancing for each constraint (Boyd et al. §3.4.1): primal ‖u − v‖ against dual
        # ρ‖v − v⁻‖, ‖Gu − s‖ against ρ_s‖Gᵀ(s − s⁻)‖, ‖Fu − z‖ against ρ_z‖Fᵀ(z − z⁻)‖.
        def factor(primal, dual):
            grow = jnp.where(primal > opts.balance * dual, 2.0, jnp.where(dual > opts.balance * primal, 0.5, 1.0))
            return grow.astype(dtype)

        f_v = factor(jnp.sqrt(jnp.sum(jnp.square(u - v))), rho * jnp.sqrt(jnp.sum(jnp.square(v - x.v))))
        f_s = factor(
            jnp.sqrt(row_sum(jnp.square(Gu - s), data.rows)), rho_s * jnp.sqrt(jnp.sum(jnp.square(Gt(s - x.s))))
        )
        f_z = jnp.ones((), dtype)
        if split:
            Fu_hat = alpha * Fu + (1 - alpha) * x.z
            w = Fu_hat + x.e
            z = data.loss.prox(w, data.y, N, 1 / rho_z)
            fx = fx._replace(z=z, e=w - z)
            f_z = factor(
                jnp.sqrt(row_sum(jnp.square(Fu - z), data.rows)), rho_z * jnp.sqrt(jnp.sum(jnp.square(Ft(z - x.z))))
            )
        return u, fx, cg_steps, (f_v, f_s, f_z)

    def rescale(p: Point, f_v, f_s, f_z) -> Point:  # scaled duals follow their penalties
        return p._replace(a=p.a / f_v, b=p.b / f_s, e=None if p.e is None else p.e / f_z)

    def body(st: ADMMState) -> ADMMState:
        rho, rho_s, rho_z = st.rho, st.rho_s, st.rho_z
        u, fx, cg_steps, (f_v, f_s, f_z) = admm_map(st.point, st.u, rho, rho_s, rho_z)
        objective, gap, violation = measure(fx.v, fx.b, rho_s)
        finite = jnp.isfinite(objective) & jnp.isfinite(gap) & jnp.all(jnp.isfinite(fx.v))
        done = certified(objective, gap, violation)
        status = jnp.where(finite, jnp.where(done, Status.CONVERGED, RUNNING), Status.NONFINITE).astype(jnp.int32)

        new = ADMMState(
            point=rescale(fx, f_v, f_s, f_z),
            u=u,
            v_out=fx.v,
            rho=rho * f_v,
            rho_s=rho_s * f_s,
            rho_z=rho_z * f_z,
            objective=objective,
            gap=gap,
            violation=violation,
            iterations=st.iterations + 1 + cg_steps,
            admm_steps=st.admm_steps + 1,
            cg_iterations=st.cg_iterations + cg_steps,
            polishes=st.polishes,
            next_polish=st.next_polish,
            status=status,
        )
        kept = jax.tree.map(lambda x, y: jnp.where(finite, x, y), new, st)
        kept = kept._replace(
            iterations=new.iterations, admm_steps=new.admm_steps, cg_iterations=new.cg_iterations, status=status
        )
        if monitor is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(kept, since=st.iterations, when=cond(st) & cond(kept))
        return kept

    def polish_step(st: ADMMState) -> ADMMState:
        """After ADMM steps up to `next_polish`: polish once; a certified result ends the solve."""
        XW = data.products(st.v_out)
        _, R = data.split(XW)
        b = st.point.b
        gamma_admm = jnp.maximum(-st.rho_s * b, 0)  # ρ_s b does not change when balancing rescales ρ_s
        attempt = cond(st) & (st.admm_steps >= st.next_polish)

        def run_polish(_):
            res = polish_relu(
                data, lam, st.v_out, R + b < 0, gamma_admm, evals[-1], NewtonOptions(), opts.polish_budget
            )
            ok = jnp.isfinite(res.objective) & jnp.isfinite(res.gap)
            return res._replace(gap=jnp.where(ok, res.gap, jnp.inf))

        def skip(_):
            return PolishResult(
                st.v_out, st.objective, jnp.asarray(jnp.inf, dtype), st.violation, jnp.zeros((), jnp.int32)
            )

        res = lax.cond(attempt, run_polish, skip, None)
        accept = attempt & certified(res.objective, res.gap, res.violation)
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

    if polish:
        # ADMM steps until the next polish, then the polish, in an outer loop: under vmap (λ paths) a
        # polish inside the step would run at every step (a batched cond runs both branches).
        def until_polish(st: ADMMState):
            return cond(st) & (st.admm_steps < st.next_polish)

        def round_(st: ADMMState) -> ADMMState:
            return polish_step(lax.while_loop(until_polish, body, st))

        out = lax.while_loop(cond, round_, state0)
    else:
        out = lax.while_loop(cond, body, state0)
    out = out._replace(status=jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32))
    if monitor is not None:
        report(out, status=out.status)
    return out


def uses_loss_split(loss, opts: ADMMOptions) -> bool:
    """Static: whether the ADMM splits z = F u (the loss by its prox) or takes the squared loss in the u-step."""
    if opts.split_loss is None:
        return not isinstance(loss, _losses.Squared)
    if not opts.split_loss and not isinstance(loss, _losses.Squared):
        raise ValueError(f"ADMMOptions(split_loss=False) needs the squared loss; got {loss.name}")
    return bool(opts.split_loss)
