"""Smooth parts F(K W) of composite objectives F(K W) + λ Σ_g ‖W_g‖₂, as the solvers see them.

The solvers never touch X directly: they ask an objective for the linear image K W (one GEMM), the
adjoint Kᵀ g (one GEMM) and the outer function F on the image. Because K is linear, images of
extrapolated points are combinations of images already computed, so an accelerated iteration needs one
K and one Kᵀ. The same solvers serve the gated program (K = A, F = the loss) and the exact ReLU
program's augmented Lagrangian subproblems (K = (z, R), F = the loss plus the penalty); both read their data
from a `Problem`, so row-sharded data (whose maps add every shard's) and other operators change nothing here.
"""

from __future__ import annotations

import abc
import functools
import operator

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jaxtyping import Array, Float, PyTree, Scalar

from .. import certificates, linalg, operators, prox
from .._rows import row_total
from ..problem import Problem

__all__ = ["CompositeSmooth", "GatedObjective", "AugmentedLagrangianObjective"]

Image = PyTree[Float[Array, "..."]]


class CompositeSmooth(eqx.Module):
    """F(K W) with K linear: what proximal-gradient and Newton steps need.

    By default F is the problem's loss of the prediction, img = K W (n, c); objectives whose image carries
    more (the AL's cone residuals) override value, grad, bregman, hvp and image_vdot.
    """

    problem: eqx.AbstractVar[Problem]

    @property
    def penalty(self) -> prox.Penalty:
        """Ω of the composite objective F(K W) + λ Ω(W)."""
        return self.problem.penalty

    @abc.abstractmethod
    def apply(self, W: Float[Array, "p d c"]) -> Image:
        """K W."""

    @abc.abstractmethod
    def transpose(self, g: Image) -> Float[Array, "p d c"]:
        """Kᵀ g."""

    def value(self, img: Image) -> Scalar:
        """F(img)."""
        return self.problem.loss_value(img)

    def grad(self, img: Image) -> Image:
        """∇F(img)."""
        return self.problem.loss_grad(img)

    def bregman(self, img1: Image, img0: Image) -> Scalar:
        """F(img1) − F(img0) − ⟨∇F(img0), img1 − img0⟩ ≥ 0, computed without cancellation."""
        return self.problem.loss_bregman(img1, img0)

    def hvp(self, img: Image, dimg: Image) -> Image:
        """∇²F(img) dimg."""
        return self.problem.loss_hvp(img, dimg)

    def image_vdot(self, a: Image, b: Image) -> Scalar:
        """⟨a, b⟩ in the image space (a sum over rows: objectives of row-sharded data add every shard's)."""
        if self.problem.rows is None:
            return jax.tree.reduce(jnp.add, jax.tree.map(lambda u, v: jnp.sum(u * v), a, b))
        parts = [self.problem.row_sum(u * v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
        return functools.reduce(operator.add, parts)

    def newton_preconditioner(self, img: Image, a: Float[Array, "p c"], unit: Float[Array, "p d c"] | None = None):
        """A function v ↦ P⁻¹v for P ≈ Kᵀ∇²F(img)K + diag(1/a) on the groups with a > 0 (identity on the
        others), or None when this objective has no cheap way to apply it. `unit` holds the groups' directions
        ŵ_g = W_g/‖W_g‖, for objectives that take the norm's exact curvature (I − ŵŵᵀ)/a into P."""
        return None

    def newton_preconditioner_pays(self, W: Float[Array, "p d c"], kernel_cg_steps: float) -> bool:
        """Static: whether building `newton_preconditioner` costs at most `kernel_cg_steps` CG iterations."""
        return False

    @abc.abstractmethod
    def gap(self, lam: Scalar, W: Float[Array, "p d c"], img: Image, g: Image, Ktg: Float[Array, "p d c"]) -> Scalar:
        """A certified bound on objective(W) − optimum from the gradient g = ∇F(img') at any point."""


class GatedObjective(CompositeSmooth):
    """F(A W) = L(Σ_i D_i X w_i, y): the smooth part of the gated ReLU program on `problem`."""

    problem: Problem

    def apply(self, W):
        return self.problem.forward(W)

    def transpose(self, g):
        return self.problem.adjoint(g)

    def gap(self, lam, W, img, g, Ktg):
        p = self.problem
        return certificates.duality_gap(p.loss, p.y, p.N, lam, W, img, g, Ktg, p.rows, p.penalty)

    def newton_preconditioner_pays(self, W, kernel_cg_steps):
        p = self.problem
        if p.rows is not None and p.rows.sharded:
            return False  # the sample-space kernel is n×n: it would gather every row onto every device
        n, c = p.y.shape
        P, d = p.num_patterns, p.X.shape[-1]
        if p.patches:  # the kernel Σ_i a_i Z_i Z_iᵀ has no X Xᵀ ⊙ (M Mᵀ) shortcut: n² P d to build
            return p.pooled is not None and n * n * P * d + n**3 / 3 <= kernel_cg_steps * 4 * n * d * P
        return n * n * P + n**3 / 3 <= kernel_cg_steps * 4 * n * d * P

    def newton_preconditioner(self, img, a, unit=None):
        """P⁻¹ by Woodbury in sample space, for P = Aᵀ diag(h) A + diag(1/a), h the diagonal of ∇²L:

            P⁻¹ v = a v − a Aᵀ [h (I + h^½ T h^½)⁻¹] A (a v),   T_k = (X Xᵀ) ⊙ (M diag(a_k) Mᵀ),

        T_k being A diag(a) Aᵀ for output k (the kernel of the reweighted model): c Cholesky
        factorizations of n×n matrices, worth it for small n. For losses acting entry by entry P ⪰ H
        and differs from it by rank |S|, so PCG converges in a few steps; for cross-entropy the
        coupling between outputs is left out of P.

        The formula subtracts two nearly equal terms in the stiff directions (relative error ~ eps · cond),
        which in float32 can make P⁻¹ indefinite and stall the polish; it is therefore built and applied in
        float64 whenever JAX has float64 enabled (`jax_enable_x64`), whatever the data's dtype: n×n work,
        small next to the CG iterations it saves.
        """
        p = self.problem
        n, c = p.y.shape
        dtype = p.X.dtype
        work = jnp.float64 if jax.config.jax_enable_x64 else dtype
        a = a.astype(work)
        if p.pooled is not None:  # patches: T_k = Σ_i a_ik Z_i Z_iᵀ
            Z = p.pooled.astype(work)
            T = jnp.einsum("nph,pc,mph->cnm", Z, a, Z, precision=operators.PRECISION)
            forward = functools.partial(operators.pooled_forward, Z)
            adjoint = functools.partial(operators.pooled_adjoint, Z)
        else:
            X = p.X.astype(work)
            masks = p.mask_array()  # n×P bool: small beside the n² P this kernel costs to build
            M = masks.astype(work)
            XX = jnp.matmul(X, X.T, precision=operators.PRECISION)
            T = XX[None] * jnp.einsum("np,pc,mp->cnm", M, a, M, precision=operators.PRECISION)
            forward = functools.partial(operators.gated_forward, X, masks)
            adjoint = functools.partial(operators.gated_adjoint, X, masks)
        f = jnp.sqrt(p.hessian_diagonal(img)).T.astype(work)  # (c, n)
        L = jnp.linalg.cholesky(jnp.eye(n, dtype=work)[None] + f[:, :, None] * T * f[:, None, :])
        cho = jax.vmap(lambda Lk, tk: jax.scipy.linalg.cho_solve((Lk, True), tk))
        active = (a > 0)[:, None, :]
        a3 = a[:, None, :]

        def apply(v):
            av = a3 * v.astype(work)
            q = f * cho(L, f * forward(av).T)  # (c, n)
            out = av - a3 * adjoint(q.T)
            return jnp.where(active, out, v.astype(work)).astype(dtype)

        return apply


class AugmentedLagrangianObjective(CompositeSmooth):
    """F(K W) = L(z) + (ρ/2) ‖(Γ/ρ − R)₊‖²: the smooth part of the AL subproblem in W = [U; V].

    Its minimiser (with the group penalty) for fixed multipliers Γ ≥ 0 and penalty ρ is one AL step.
    """

    problem: Problem
    gamma: Float[Array, "n *k c q"]
    rho: Scalar
    woodbury_max_rows: int = eqx.field(static=True, default=1024)
    norm_floor: float = eqx.field(static=True, default=1e-2)

    def apply(self, W):
        return self.problem.split(self.problem.products(W))

    def transpose(self, g):
        gz, gR = g
        return self.problem.pullback(gz, gR)

    def _slack(self, R):
        return self.gamma / self.rho - R

    def value(self, img):
        z, R = img
        t = jnp.maximum(self._slack(R), 0)
        return self.problem.loss_value(z) + 0.5 * self.rho * self.problem.row_sum(t * t)

    def grad(self, img):
        z, R = img
        return self.problem.loss_grad(z), -self.rho * jnp.maximum(self._slack(R), 0)

    def bregman(self, img1, img0):
        (z1, R1), (z0, R0) = img1, img0
        t1, t0 = self._slack(R1), self._slack(R0)
        # (ρ/2)[(t1)₊² − (t0)₊² − 2 (t0)₊ (t1 − t0)] ≥ 0, entry by entry.
        p1, p0 = jnp.maximum(t1, 0), jnp.maximum(t0, 0)
        hinge = 0.5 * self.rho * self.problem.row_sum(jnp.maximum(p1 * p1 - p0 * p0 - 2 * p0 * (t1 - t0), 0))
        return self.problem.loss_bregman(z1, z0) + hinge

    def hvp(self, img, dimg):
        (z, R), (dz, dR) = img, dimg
        active = self._slack(R) > 0
        return self.problem.loss_hvp(z, dz), jnp.where(active, self.rho * dR, 0)

    def newton_preconditioner_pays(self, W, kernel_cg_steps):
        return True  # d×d blocks (and, on small rows, n×n kernels): cheap next to the CG iterations they save

    def couples_samples(self) -> bool:
        """Static: whether the preconditioner takes the loss's coupling across blocks in sample space
        (`_woodbury`): float64 rows on one device, n ≤ woodbury_max_rows (its build costs ~n/4 CG steps). In
        float32 it measured worse than block Jacobi: a 60×5×10 teacher at λ = 1e-3 stalled 9.7e-5 above p*
        instead of 1e-5."""
        p = self.problem
        sharded = p.rows is not None and p.rows.sharded
        small = p.X.shape[0] <= self.woodbury_max_rows
        return not sharded and not p.patches and small and p.X.dtype == jnp.float64

    def newton_preconditioner(self, img, a, unit=None):
        """P⁻¹ for P = M + Fᵀ diag(h) F, or block Jacobi where that does not pay (patches, sharded rows, large n).

        M is block diagonal, per group (block q, output k) the d×d matrix

            ρ Xᵀ diag(1[hinge active]) X + (I − (1 − δ) ŵŵᵀ) / a,      δ = norm_floor,

        the penalty's exact Hessian plus the norm's curvature kept definite along ŵ (without `unit`: I/a, its
        isotropic majorant). F W = z is the prediction map and h the diagonal of the loss's Hessian, so P
        differs from the subproblem's Hessian by δ ŵŵᵀ/a per group (and, for cross-entropy, the coupling
        between outputs): CG converges in a few steps whatever ρ and λ. P⁻¹ is applied by Woodbury in sample
        space (`_woodbury`). Block Jacobi keeps the diagonal blocks of Fᵀ diag(h) F instead (and I/a) and misses
        their coupling across blocks, which at small λ costs CG hundreds of steps. On row-sharded data its
        (q, c, d, d) blocks are added over the shards: one psum per Newton step.
        """
        z, R = img
        p = self.problem
        X = p.X
        dtype = X.dtype
        active = (self._slack(R) > 0).astype(dtype)  # (n, c, q)
        on = a > 0
        inv_a = jnp.where(on, 1 / jnp.where(on, a, 1), 1)
        eye = jnp.eye(X.shape[-1], dtype=dtype)[None, None]
        if self.couples_samples():
            curvature = eye
            if unit is not None:  # the norm's exact curvature (I − ŵŵᵀ)/a, kept definite along ŵ by norm_floor
                curvature = eye - (1 - self.norm_floor) * jnp.einsum("qdc,qec->qcde", unit, unit)
            M = row_blocks(self.rho * active, X, p.rows) + inv_a[:, :, None, None] * curvature
            return self._woodbury(z, M, on)
        B = row_blocks(self.rho * active + stacked_curvature(p, z), X, p.rows)
        return linalg.block_jacobi(B + inv_a[:, :, None, None] * eye, on)

    def _woodbury(self, z, M: Float[Array, "q c d d"], on):
        """v ↦ P⁻¹v = M⁻¹v − M⁻¹Fᵀ h^½ (I + h^½ T h^½)⁻¹ h^½ F M⁻¹v, T_k = Σ_q D_q X M_qk⁻¹ Xᵀ D_q (n×n per output).

        T = Σ_q Y_qk Y_qkᵀ with Y_qk = D_q X L_qk⁻ᵀ, M_qk = L_qk L_qkᵀ, costs n² d · 2P per output; each application
        a K, a Kᵀ and two block solves. Float64 only (`couples_samples`).
        """
        p = self.problem
        X = p.X
        Linv = linalg.block_jacobi_factor(M, on)  # (q, c, d, d): L⁻¹, the identity off the groups that are on
        m = p.masks.astype(X.dtype)
        m2 = jnp.concatenate([m, m], axis=-1)  # (n, q)
        Y = jnp.einsum("nd,qced,nq,qc->qcne", X, Linv, m2, on.astype(X.dtype), precision=operators.PRECISION)
        T = jnp.einsum("qcne,qcme->cnm", Y, Y, precision=operators.PRECISION)
        f = jnp.sqrt(p.hessian_diagonal(z)).T  # (c, n)
        K = jnp.linalg.cholesky(jnp.eye(X.shape[0], dtype=X.dtype)[None] + f[:, :, None] * T * f[:, None, :])
        cho = jax.vmap(lambda Kk, tk: jax.scipy.linalg.cho_solve((Kk, True), tk))
        mask = on[:, None, :]
        signed = jnp.concatenate([m, -m], axis=-1)  # ±D_q: U adds, V subtracts

        def solve_blocks(v):  # M⁻¹ v on the groups that are on, 0 elsewhere; v (q, d, c)
            return jnp.where(mask, linalg.block_jacobi_apply(Linv, on, v), 0)

        def forward(u):  # F u = Σ_q ±D_q X u_q, (n, c)
            XU = jnp.einsum("nd,qdc->ncq", X, u, precision=operators.PRECISION)
            return jnp.einsum("ncq,nq->nc", XU, signed, precision=operators.PRECISION)

        def adjoint(g):  # Fᵀ g, (q, d, c)
            return jnp.einsum("nq,nc,nd->qdc", signed, g, X, precision=operators.PRECISION)

        def apply(v):
            u = solve_blocks(v)
            back = f * cho(K, f * forward(u).T)  # (c, n)
            out = u - solve_blocks(adjoint(back.T))
            return jnp.where(mask, out, v)

        return apply

    def gap(self, lam, W, img, g, Ktg):
        """The subproblem's own duality gap (the penalty's conjugate is ⟨θ, Γ/ρ⟩ + ‖θ‖²/(2ρ), θ ≤ 0)."""
        (z, R), (gz, gR) = img, g
        s = certificates.dual_scale(Ktg, lam, self.penalty)
        p = self.problem
        fy = p.fenchel_young_gap(z, s * gz)
        t = self._slack(R)
        theta = s * gR  # ≤ 0
        fy_pen = p.row_sum(jnp.square(self.rho * jnp.maximum(t, 0) + theta)) / (2 * self.rho) + p.row_sum(
            theta * jnp.minimum(t, 0)
        )
        return fy + fy_pen + certificates.penalty_gap(lam, W, Ktg, s, self.penalty)


def stacked_curvature(problem: Problem, z: Float[Array, "n c"]) -> Float[Array, "n *k c q"]:
    """m_jq h_jk for the stacked blocks q of [U; V]: the loss's Hessian diagonal h where block q's pattern is on.

    For patches, per position (m_jkq h_j): the diagonal blocks of the loss's Hessian without the cross-position
    terms, which is what a block-Jacobi preconditioner needs.
    """
    m = problem.masks.astype(z.dtype)
    m2 = jnp.concatenate([m, m], axis=-1)  # (n, q) or (n, K, q)
    h = problem.hessian_diagonal(z)
    h = h[:, None, :, None] if problem.patches else h[:, :, None]
    return m2[..., None, :] * h


def row_blocks(weight: Float[Array, "n *k c q"], X: Float[Array, "n *k d"], rows) -> Float[Array, "q c d d"]:
    """Σ_j weight_jkq x_j x_jᵀ for every block (q, k) (and every position of patches), added over the shards."""
    spec = "nkcq,nkd,nke->qcde" if X.ndim == 3 else "ncq,nd,ne->qcde"
    return row_total(jnp.einsum(spec, weight, X, X, precision=operators.PRECISION), rows)
