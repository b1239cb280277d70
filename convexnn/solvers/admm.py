"""The exact ReLU program (squared loss) by ADMM with a Nyström-preconditioned CG linear solve.

The splitting of Bai, Gautam & Sojoudi used by NysADMM, CRONOS and admmNN: with u = [U; V], the
prediction F u = Σ_i D_i X (u_i − v_i) and the cone map G u = s ⊙ X u (one block per pattern),

    min_{u, v, s}  (1/2N) ‖F u − y‖² + λ Σ_g ‖v_g‖ + I(s ≥ 0)    s.t.  u = v,  G u = s.

Scaled-form ADMM with penalty ρ:

    u ← (FᵀF/N + ρ I + ρ_s GᵀG)⁻¹ (Fᵀy/N + ρ(v − a) + ρ_s Gᵀ(s − b))   PCG, warm-started at the last u
    v ← prox_{λ/ρ ‖·‖}(u + a),   s ← (G u + b)₊,   a ← a + u − v,   b ← b + G u − s

GᵀG is block diagonal with every block XᵀX (s ⊙ s = 1), so ρ I + ρ_s GᵀG is inverted exactly from one
d×d eigendecomposition; FᵀF/N gets a rank-r randomized Nyström approximation, sketched once, and
Woodbury combines the two into the CG preconditioner. ρ follows residual balancing (Boyd et al. §3.4.1).
The two constraints get their own penalties (ρ for u = v, ρ_s for G u = s), each balanced. The
certificate is the exact program's duality gap at v with cone multipliers Γ = (−ρ_s b)₊.

On row-sharded data u, v, a and the d×d eigendecomposition are replicated and s, b are sharded with the
rows: each CG step adds one (2P, d, c) block over the shards, the residuals and the certificate add scalars.

The CG is `newton.pcg` rather than lineax's CG: lineax stops on element-wise tests in both the solution
and the right-hand side spaces, which never pass when entries of either are near zero (inactive blocks).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int, Scalar

from .. import progress, prox
from .._rows import row_sum, row_total
from ..solution import RUNNING, Status
from .newton import pcg
from .relu_objectives import ReluData, relu_duality_gap, relu_violation

__all__ = ["ADMMOptions", "ADMMState", "solve_relu_admm", "nystrom"]


class ADMMOptions(NamedTuple):
    """ADMM settings. `rho=None` picks ρ from the data; `rank=0` or `precondition=False` turns Nyström off."""

    rho: float | None = None
    cg_rtol: float = 1e-3
    cg_max_steps: int = 50
    rank: int = 20
    precondition: bool = True
    balance: float = 10.0  # rescale ρ by 2 when one residual exceeds the other by this factor
    relaxation: float = 1.6  # over-relaxation α ∈ [1, 2) (Boyd et al. §3.4.3); 1 is plain ADMM
    seed: int = 0


class ADMMState(NamedTuple):
    u: Array
    v: Array
    s: Array
    a: Array  # scaled dual of u = v
    b: Array  # scaled dual of G u = s
    rho: Scalar  # penalty of u = v
    rho_s: Scalar  # penalty of G u = s
    objective: Scalar
    gap: Scalar
    violation: Scalar
    iterations: Int[Array, ""]
    admm_steps: Int[Array, ""]
    cg_iterations: Int[Array, ""]
    status: Int[Array, ""]

    @property
    def W(self) -> Array:
        return self.v


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
) -> ADMMState:
    """ADMM for the exact ReLU program (squared loss) from u = v = W0; see the module docstring.

    With a `monitor` (static), reports after ADMM steps (every `monitor.every` iterations) and at the end.
    """
    dtype = W0.dtype
    N = data.N
    X = data.X

    def F(u):
        return data.split(data.products(u))[0]

    def FtF(u):  # FᵀF u / N
        z, _ = data.split(data.products(u))
        return data.pullback(z / N, jnp.zeros((X.shape[0], u.shape[2], u.shape[0]), dtype))

    def G(u):
        return data.split(data.products(u))[1]

    def Gt(h):
        return data.pullback(jnp.zeros((X.shape[0], h.shape[1]), dtype), h)

    # ρ(I + GᵀG) = ρ (I + XᵀX) on every block: one d×d eigendecomposition.
    evals, Q = jnp.linalg.eigh(row_total(jnp.matmul(X.T, X, precision=jax.lax.Precision.HIGHEST), data.rows))
    evals = jnp.maximum(evals, 0)

    def block_apply(u, rho, rho_s, inverse=False):  # (ρ I + ρ_s XᵀX)^{±1} on every block, u (q, d, c)
        coeff = jnp.einsum("de,qdc->qec", Q, u)
        diag = rho + rho_s * evals
        diag = 1 / diag if inverse else diag
        return jnp.einsum("de,qec->qdc", Q, coeff * diag[None, :, None])

    use_nystrom = opts.precondition and opts.rank > 0
    if use_nystrom:
        U_ny, lam_ny = nystrom(FtF, W0.shape, dtype, opts.rank, jax.random.key(opts.seed))

    def preconditioner(rho, rho_s):
        """v ↦ (ρ I + ρ_s GᵀG + U diag(λ) Uᵀ)⁻¹ v by Woodbury, or the block part alone."""

        def Binv(v):
            return block_apply(v, rho, rho_s, inverse=True)

        if not use_nystrom:
            return Binv
        BU = jax.vmap(Binv)(U_ny)  # (r, q, d, c)
        cap = jnp.diag(1 / jnp.maximum(lam_ny, jnp.finfo(dtype).tiny)) + jnp.einsum("rqdc,tqdc->rt", U_ny, BU)
        cap_chol = jnp.linalg.cholesky(cap)

        def apply(v):
            Bv = Binv(v)
            coeff = jax.scipy.linalg.cho_solve((cap_chol, True), jnp.einsum("rqdc,qdc->r", BU, v))
            return Bv - jnp.einsum("r,rqdc->qdc", coeff, BU)

        return apply

    rhs_y = data.pullback(data.y / N, jnp.zeros((X.shape[0], W0.shape[2], W0.shape[0]), dtype))

    def measure(v, b, rho_s):
        XW = data.products(v)
        z, R = data.split(XW)
        objective = data.loss_value(z) + lam * prox.group_l1(v)
        grad = data.loss.grad(z, data.y, N)
        gamma = jnp.maximum(-rho_s * b, 0)
        return objective, relu_duality_gap(data, lam, v, z, R, grad, gamma), relu_violation(R, XW, data.rows)

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
    rho_s0 = rho0 / jnp.maximum(jnp.mean(evals), jnp.finfo(dtype).tiny)
    s0 = jnp.maximum(G(W0), 0)
    zeros_u = jnp.zeros_like(W0)
    zeros_s = jnp.zeros_like(s0)
    objective, gap, violation = measure(W0, zeros_s, rho_s0)
    done = (violation <= constraint_tol) & (gap <= tol * jnp.maximum(1, jnp.abs(objective)))
    state0 = ADMMState(
        u=W0,
        v=W0,
        s=s0,
        a=zeros_u,
        b=zeros_s,
        rho=rho0.astype(dtype),
        rho_s=rho_s0.astype(dtype),
        objective=objective,
        gap=gap,
        violation=violation,
        iterations=jnp.zeros((), jnp.int32),
        admm_steps=jnp.zeros((), jnp.int32),
        cg_iterations=jnp.zeros((), jnp.int32),
        status=jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32),
    )

    def cond(st: ADMMState):
        return (st.status == RUNNING) & (st.iterations < max_iters)

    def report(st: ADMMState, **when):
        fields = dict(objective=st.objective, gap=st.gap, violation=st.violation, step=st.rho, lam=lam)
        progress.report(monitor, iteration=st.iterations, **fields, **when)

    def body(st: ADMMState) -> ADMMState:
        rho, rho_s = st.rho, st.rho_s

        def system(u):
            return FtF(u) + block_apply(u, rho, rho_s)

        rhs = rhs_y + rho * (st.v - st.a) + rho_s * Gt(st.s - st.b)
        # Warm start: solve for the correction from the last u.
        delta, cg_steps = pcg(system, rhs - system(st.u), opts.cg_rtol, opts.cg_max_steps, preconditioner(rho, rho_s))
        u = st.u + delta
        Gu = G(u)
        alpha = jnp.asarray(opts.relaxation, dtype)
        u_hat = alpha * u + (1 - alpha) * st.v
        Gu_hat = alpha * Gu + (1 - alpha) * st.s
        v = prox.group_soft_threshold(u_hat + st.a, lam / rho)
        s = jnp.maximum(Gu_hat + st.b, 0)
        a = st.a + u_hat - v
        b = st.b + Gu_hat - s

        # Residual balancing for each constraint: primal ‖u − v‖ against dual ρ‖v − v⁻‖, and
        # ‖Gu − s‖ against ρ_s‖Gᵀ(s − s⁻)‖.
        def factor(primal, dual):
            grow = jnp.where(primal > opts.balance * dual, 2.0, jnp.where(dual > opts.balance * primal, 0.5, 1.0))
            return grow.astype(dtype)

        f_v = factor(jnp.sqrt(jnp.sum(jnp.square(u - v))), rho * jnp.sqrt(jnp.sum(jnp.square(v - st.v))))
        f_s = factor(
            jnp.sqrt(row_sum(jnp.square(Gu - s), data.rows)), rho_s * jnp.sqrt(jnp.sum(jnp.square(Gt(s - st.s))))
        )
        objective, gap, violation = measure(v, b, rho_s)
        finite = jnp.isfinite(objective) & jnp.isfinite(gap) & jnp.all(jnp.isfinite(v))
        done = (violation <= constraint_tol) & (gap <= tol * jnp.maximum(1, jnp.abs(objective)))
        status = jnp.where(finite, jnp.where(done, Status.CONVERGED, RUNNING), Status.NONFINITE).astype(jnp.int32)
        new = ADMMState(
            u=u,
            v=v,
            s=s,
            a=a / f_v,  # scaled duals follow their penalties
            b=b / f_s,
            rho=rho * f_v,
            rho_s=rho_s * f_s,
            objective=objective,
            gap=gap,
            violation=violation,
            iterations=st.iterations + 1 + cg_steps,
            admm_steps=st.admm_steps + 1,
            cg_iterations=st.cg_iterations + cg_steps,
            status=status,
        )
        kept = jax.tree.map(lambda x, y: jnp.where(finite, x, y), new, st)
        kept = kept._replace(
            iterations=new.iterations, admm_steps=new.admm_steps, cg_iterations=new.cg_iterations, status=status
        )
        if monitor is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(kept, since=st.iterations, when=cond(st) & cond(kept))
        return kept

    out = lax.while_loop(cond, body, state0)
    out = out._replace(status=jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32))
    if monitor is not None:
        report(out, status=out.status)
    return out
