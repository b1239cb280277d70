"""Smooth parts F(K W) of composite objectives F(K W) + λ Σ_g ‖W_g‖₂, as the solvers see them.

The solvers never touch X directly: they ask an objective for the linear image K W (one GEMM), the
adjoint Kᵀ g (one GEMM) and the outer function F on the image. Because K is linear, images of
extrapolated points are combinations of images already computed, so an accelerated iteration needs one
K and one Kᵀ. The same solvers serve the gated program (K = A, F = the loss) and, later, augmented
Lagrangian subproblems and row-sharded data, which only change the objective: with a `Rows`, the
adjoint adds its (P, d, c) block over the shards (one psum) and every sum over rows adds the shards' sums.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jaxtyping import Array, Bool, Float, PyTree, Scalar

from .. import certificates, operators
from .. import losses as _losses
from .._rows import Rows, loss_kwargs, row_sum, row_total

__all__ = ["CompositeSmooth", "GatedObjective"]

Image = PyTree[Float[Array, "..."]]


class CompositeSmooth(eqx.Module):
    """F(K W) with K linear: what proximal-gradient and Newton steps need."""

    @abc.abstractmethod
    def apply(self, W: Float[Array, "p d c"]) -> Image:
        """K W."""

    @abc.abstractmethod
    def transpose(self, g: Image) -> Float[Array, "p d c"]:
        """Kᵀ g."""

    @abc.abstractmethod
    def value(self, img: Image) -> Scalar:
        """F(img)."""

    @abc.abstractmethod
    def grad(self, img: Image) -> Image:
        """∇F(img)."""

    @abc.abstractmethod
    def bregman(self, img1: Image, img0: Image) -> Scalar:
        """F(img1) − F(img0) − ⟨∇F(img0), img1 − img0⟩ ≥ 0, computed without cancellation."""

    @abc.abstractmethod
    def hvp(self, img: Image, dimg: Image) -> Image:
        """∇²F(img) dimg."""

    def image_vdot(self, a: Image, b: Image) -> Scalar:
        """⟨a, b⟩ in the image space (a sum over rows: objectives of row-sharded data add every shard's)."""
        return jax.tree.reduce(jnp.add, jax.tree.map(lambda u, v: jnp.sum(u * v), a, b))

    def newton_preconditioner(self, img: Image, a: Float[Array, "p c"]):
        """A function v ↦ P⁻¹v for P ≈ Kᵀ∇²F(img)K + diag(1/a) on the groups with a > 0 (identity on the
        others), or None when this objective has no cheap way to apply it."""
        return None

    def newton_preconditioner_pays(self, W: Float[Array, "p d c"], kernel_cg_steps: float) -> bool:
        """Static: whether building `newton_preconditioner` costs at most `kernel_cg_steps` CG iterations."""
        return False

    @abc.abstractmethod
    def gap(self, lam: Scalar, W: Float[Array, "p d c"], img: Image, g: Image, Ktg: Float[Array, "p d c"]) -> Scalar:
        """A certified bound on objective(W) − optimum from the gradient g = ∇F(img') at any point."""


class GatedObjective(CompositeSmooth):
    """F(A W) = L(Σ_i D_i X w_i, y): the smooth part of the gated ReLU program.

    Attributes:
        X: data (n, d); masks: (n, P) bool; y: targets (n, c) in X's dtype.
        loss: the loss (static); N: the loss normaliser (static; set from the global shape).
        rows: for one shard of row-sharded data, its real rows and the mesh axis (None: all rows, one device).
    """

    X: Float[Array, "n d"]
    masks: Bool[Array, "n p"]
    y: Float[Array, "n c"]
    loss: _losses.Loss = eqx.field(static=True)
    N: int = eqx.field(static=True)
    rows: Rows | None = None

    def apply(self, W):
        return operators.gated_forward(self.X, self.masks, W)

    def transpose(self, g):
        return row_total(operators.gated_adjoint(self.X, self.masks, g), self.rows)

    def value(self, img):
        return self.loss.value(img, self.y, self.N, **loss_kwargs(self.rows))

    def grad(self, img):
        return self.loss.grad(img, self.y, self.N)

    def bregman(self, img1, img0):
        return self.loss.bregman(img1, img0, self.y, self.N, **loss_kwargs(self.rows))

    def hvp(self, img, dimg):
        return self.loss.hvp(img, dimg, self.y, self.N)

    def image_vdot(self, a, b):
        return super().image_vdot(a, b) if self.rows is None else row_sum(a * b, self.rows)

    def gap(self, lam, W, img, g, Ktg):
        return certificates.duality_gap(self.loss, self.y, self.N, lam, W, img, g, Ktg, self.rows)

    def newton_preconditioner_pays(self, W, kernel_cg_steps):
        if self.rows is not None and self.rows.sharded:
            return False  # the sample-space kernel is n×n: it would gather every row onto every device
        n, c = self.y.shape
        P, d = self.masks.shape[1], self.X.shape[1]
        return n * n * P + n**3 / 3 <= kernel_cg_steps * 4 * n * d * P

    def newton_preconditioner(self, img, a):
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
        n, c = self.y.shape
        dtype = self.X.dtype
        work = jnp.float64 if jax.config.jax_enable_x64 else dtype
        X = self.X.astype(work)
        M = self.masks.astype(work)
        a = a.astype(work)
        XX = jnp.matmul(X, X.T, precision=operators.PRECISION)
        T = XX[None] * jnp.einsum("np,pc,mp->cnm", M, a, M, precision=operators.PRECISION)
        f = jnp.sqrt(self.loss.hessian_diagonal(img, self.y, self.N)).T.astype(work)  # (c, n)
        L = jnp.linalg.cholesky(jnp.eye(n, dtype=work)[None] + f[:, :, None] * T * f[:, None, :])
        cho = jax.vmap(lambda Lk, tk: jax.scipy.linalg.cho_solve((Lk, True), tk))
        active = (a > 0)[:, None, :]
        a3 = a[:, None, :]

        def apply(v):
            av = a3 * v.astype(work)
            q = f * cho(L, f * operators.gated_forward(X, self.masks, av).T)  # (c, n)
            out = av - a3 * operators.gated_adjoint(X, self.masks, q.T)
            return jnp.where(active, out, v.astype(work)).astype(dtype)

        return apply
