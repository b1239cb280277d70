"""The exact ReLU program's pieces: stacked weights, cone residuals, the AL subproblem, the certificate.

The program, with s_i = 2 m_i − 1 and one block pair (u_i, v_i) per pattern:

    min_{U,V}  L(Σ_i D_i X (u_i − v_i), y) + λ Σ_i (‖u_i‖₂ + ‖v_i‖₂)
    s.t.       s_i ⊙ X u_i ≥ 0,   s_i ⊙ X v_i ≥ 0.

The solvers work on W = [U; V] stacked as (2P, d, c) with masks [M, M] and signs (+1 for U, −1 for V).
One GEMM X W gives both the prediction z = Σ_i m_i ⊙ (X u_i − X v_i) and the cone residuals
R = s ⊙ X W, laid out (n, c, 2P): the constraints are R ≥ 0. The block axis is last on purpose: XLA's
CPU loops over a trailing axis of length c = 1 ran elementwise reductions ~30× slower than this layout.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jaxtyping import Array, Bool, Float, Scalar

from .. import losses as _losses
from .. import operators, prox
from .._rows import Rows, loss_kwargs, row_max, row_sum, row_total
from .objectives import CompositeSmooth

__all__ = ["ReluData", "AugmentedLagrangianObjective", "relu_duality_gap", "relu_violation", "stack", "unstack"]


def stack(U: Array, V: Array) -> Array:
    """[U; V]: (2P, d, c)."""
    return jnp.concatenate([U, V], axis=0)


def unstack(W: Array) -> tuple[Array, Array]:
    P = W.shape[0] // 2
    return W[:P], W[P:]


class ReluData(eqx.Module):
    """X, targets and masks of an exact ReLU problem, with the linear maps on stacked weights.

    `rows`: for one shard of row-sharded data, its real rows and the mesh axis (None: all rows, one device).
    """

    X: Float[Array, "n d"]
    masks: Bool[Array, "n p"]
    y: Float[Array, "n c"]
    loss: _losses.Loss = eqx.field(static=True)
    N: int = eqx.field(static=True)
    rows: Rows | None = None

    def loss_value(self, z: Float[Array, "n c"]) -> Scalar:
        """L(z) over every real row."""
        return self.loss.value(z, self.y, self.N, **loss_kwargs(self.rows))

    def products(self, W: Float[Array, "q d c"]) -> Float[Array, "n c q"]:
        """X W for every block of the stacked weights (one GEMM), blocks last."""
        return jnp.einsum("nd,qdc->ncq", self.X, W, precision=operators.PRECISION)

    def split(self, XW: Float[Array, "n c q"]) -> tuple[Float[Array, "n c"], Float[Array, "n c q"]]:
        """(z, R): the prediction Σ_i m_i ⊙ (X u_i − X v_i) and the cone residuals s ⊙ X W."""
        P = self.masks.shape[1]
        m = self.masks[:, None, :]
        zero = jnp.zeros((), XW.dtype)
        z = jnp.sum(jnp.where(m, XW[..., :P] - XW[..., P:], zero), axis=-1)
        R = jnp.where(jnp.concatenate([m, m], axis=-1), XW, -XW)
        return z, R

    def pullback(self, gz: Float[Array, "n c"], gR: Float[Array, "n c q"]) -> Float[Array, "q d c"]:
        """Kᵀ(gz, gR) = ∂/∂W of ⟨gz, z⟩ + ⟨gR, R⟩ (one GEMM)."""
        m = self.masks[:, None, :]
        m2 = jnp.concatenate([m, m], axis=-1)
        P = self.masks.shape[1]
        sign = jnp.concatenate([jnp.ones((P,), gz.dtype), -jnp.ones((P,), gz.dtype)])[None, None, :]
        zero = jnp.zeros((), gz.dtype)
        G = jnp.where(m2, sign * gz[:, :, None], zero) + jnp.where(m2, gR, -gR)
        return row_total(jnp.einsum("ncq,nd->qdc", G, self.X, precision=operators.PRECISION), self.rows)


def relu_violation(R: Float[Array, "n c q"], XW: Float[Array, "n c q"], rows: Rows | None = None) -> Scalar:
    """max_{i,j} (−s_ij (X w_i)_j)₊ / max |X W|: the constraint violation relative to the scale of X u."""
    scale = row_max(jnp.abs(XW), rows)
    worst = row_max(jnp.maximum(-R, 0), rows)
    return jnp.where(scale > 0, worst / jnp.where(scale > 0, scale, 1), 0)


def relu_duality_gap(data: ReluData, lam: Scalar, W: Array, z: Array, R: Array, grad: Array, gamma: Array) -> Scalar:
    """objective(U, V) − optimum ≤ gap, from θ = ∇L(z') and cone multipliers Γ ≥ 0 of any point.

    Dual: max_{θ, Γ ≥ 0} −L*(θ) s.t. ‖(Kᵀ(θ, −Γ))_g‖ ≤ λ for every block g. With H = Kᵀ(θ, −Γ) and
    s = min(1, λ / max_g ‖H_g‖), (sθ, sΓ) is dual feasible and

        gap = [L(z) + L*(sθ) − ⟨sθ, z⟩] + Σ_g [λ‖W_g‖ + s⟨H_g, W_g⟩] + s⟨Γ, R⟩,

    each term ≥ 0 when the point is feasible (R ≥ 0); the last is complementary slackness.
    """
    H = data.pullback(grad, -gamma)
    top = jnp.max(prox.group_norms(H))
    s = jnp.where(top > lam, lam / jnp.where(top > 0, top, 1), jnp.ones((), H.dtype))
    fy = data.loss.fenchel_young_gap(z, s * grad, data.y, data.N, **loss_kwargs(data.rows))
    groups = jnp.sum(jnp.maximum(lam * prox.group_norms(W) + s * jnp.sum(H * W, axis=1), 0))
    return fy + groups + s * row_sum(gamma * R, data.rows)


class AugmentedLagrangianObjective(CompositeSmooth):
    """F(K W) = L(z) + (ρ/2) ‖(Γ/ρ − R)₊‖²: the smooth part of the AL subproblem in W = [U; V].

    Its minimiser (with the group penalty) for fixed multipliers Γ ≥ 0 and penalty ρ is one AL step.
    """

    data: ReluData
    gamma: Float[Array, "n c q"]
    rho: Scalar

    def apply(self, W):
        return self.data.split(self.data.products(W))

    def transpose(self, g):
        gz, gR = g
        return self.data.pullback(gz, gR)

    def _slack(self, R):
        return self.gamma / self.rho - R

    def value(self, img):
        z, R = img
        t = jnp.maximum(self._slack(R), 0)
        return self.data.loss_value(z) + 0.5 * self.rho * row_sum(t * t, self.data.rows)

    def grad(self, img):
        z, R = img
        return self.data.loss.grad(z, self.data.y, self.data.N), -self.rho * jnp.maximum(self._slack(R), 0)

    def bregman(self, img1, img0):
        (z1, R1), (z0, R0) = img1, img0
        t1, t0 = self._slack(R1), self._slack(R0)
        # (ρ/2)[(t1)₊² − (t0)₊² − 2 (t0)₊ (t1 − t0)] ≥ 0, entry by entry.
        p1, p0 = jnp.maximum(t1, 0), jnp.maximum(t0, 0)
        hinge = 0.5 * self.rho * row_sum(jnp.maximum(p1 * p1 - p0 * p0 - 2 * p0 * (t1 - t0), 0), self.data.rows)
        return self.data.loss.bregman(z1, z0, self.data.y, self.data.N, **loss_kwargs(self.data.rows)) + hinge

    def hvp(self, img, dimg):
        (z, R), (dz, dR) = img, dimg
        active = self._slack(R) > 0
        return self.data.loss.hvp(z, dz, self.data.y, self.data.N), jnp.where(active, self.rho * dR, 0)

    def image_vdot(self, a, b):
        if self.data.rows is None:
            return super().image_vdot(a, b)
        return sum(row_sum(u * v, self.data.rows) for u, v in zip(a, b, strict=True))

    def newton_preconditioner_pays(self, W, kernel_cg_steps):
        return True  # d×d blocks: cheap next to the CG iterations they save

    def newton_preconditioner(self, img, a):
        """Block Jacobi: per group (block q, output k) the d×d matrix

            ρ Xᵀ diag(1[hinge active]) X + Xᵀ D_q diag(h_k) D_q X + (1/a) I,

        the penalty's exact (block-diagonal) Hessian plus the diagonal blocks of the loss's and the
        isotropic majorant of the norm's. The penalty dominates as ρ grows, which is when CG needs help.
        On row-sharded data the (q, c, d, d) blocks are added over the shards: one psum per Newton step.
        """
        z, R = img
        X = self.data.X
        dtype = X.dtype
        m = self.data.masks.astype(dtype)
        m2 = jnp.concatenate([m, m], axis=1)  # (n, q)
        h = self.data.loss.hessian_diagonal(z, self.data.y, self.data.N)  # (n, c)
        active = (self._slack(R) > 0).astype(dtype)  # (n, c, q)
        weight = self.rho * active + m2[:, None, :] * h[:, :, None]  # (n, c, q)
        B = row_total(jnp.einsum("ncq,nd,ne->qcde", weight, X, X, precision=operators.PRECISION), self.data.rows)
        d = X.shape[1]
        on = a > 0
        inv_a = jnp.where(on, 1 / jnp.where(on, a, 1), 1)
        eye = jnp.eye(d, dtype=dtype)[None, None]
        B = B + inv_a[:, :, None, None] * eye
        B = jnp.where(on[:, :, None, None], B, eye)
        L = jnp.linalg.cholesky(B)
        # B⁻¹ = L⁻ᵀ L⁻¹ applied as two batched matrix products: CG applies it ~100 times per factorization,
        # and XLA's CPU batched triangular solves (one small solve per block) cost more than a K and Kᵀ.
        Linv = jax.scipy.linalg.solve_triangular(L, jnp.broadcast_to(eye, B.shape), lower=True)

        def apply(v):  # v (q, d, c)
            vt = jnp.moveaxis(v, 1, 2)  # (q, c, d)
            t = jnp.einsum("qcij,qcj->qci", Linv, vt, precision=operators.PRECISION)  # L⁻¹ v
            out = jnp.einsum("qcij,qci->qcj", Linv, t, precision=operators.PRECISION)  # L⁻ᵀ L⁻¹ v
            return jnp.where(on[:, None, :], jnp.moveaxis(out, 2, 1), v)

        return apply

    def gap(self, lam, W, img, g, Ktg):
        """The subproblem's own duality gap (the penalty's conjugate is ⟨θ, Γ/ρ⟩ + ‖θ‖²/(2ρ), θ ≤ 0)."""
        (z, R), (gz, gR) = img, g
        top = jnp.max(prox.group_norms(Ktg))
        s = jnp.where(top > lam, lam / jnp.where(top > 0, top, 1), jnp.ones((), Ktg.dtype))
        rows = self.data.rows
        fy = self.data.loss.fenchel_young_gap(z, s * gz, self.data.y, self.data.N, **loss_kwargs(rows))
        t = self._slack(R)
        theta = s * gR  # ≤ 0
        fy_pen = row_sum(jnp.square(self.rho * jnp.maximum(t, 0) + theta), rows) / (2 * self.rho) + row_sum(
            theta * jnp.minimum(t, 0), rows
        )
        groups = jnp.sum(jnp.maximum(lam * prox.group_norms(W) + s * jnp.sum(Ktg * W, axis=1), 0))
        return fy + fy_pen + groups
