"""ADMM's active-set polish: from the groups and cone constraints ADMM has identified, solve for the exact point.

ADMM identifies which blocks are non-zero and which cone constraints are tight long before it resolves the
values (its tail is linear with a rate near one). Given that guess — groups S with v_g ≠ 0 and, for each,
the rows A_g whose slack ADMM holds at zero (s_j + b_j ≤ 0 in its scaled form, OSQP's rule) — the program

    min_W  L(F W) + λ Σ_{g∈S} ‖W_g‖   s.t.  x_jᵀ W_g = 0  (j ∈ A_g)

is smooth and only equality-constrained. With Π_g the projection onto {w : x_jᵀ w = 0, j ∈ A_g} it is the
group-lasso problem min L(F Π W) + λ Σ ‖W_g‖ (a component of W_g outside range Π_g only adds to ‖W_g‖), which
the active-set Newton–CG of `newton.newton_polish` solves; its Newton directions stay in range Π.

The cone multipliers of the polished point come from stationarity, Σ_{j∈A_g} Γ_j s_j x_j = (Fᵀθ)_g + λ ŵ_g
(θ = ∇L): the least-norm solution Γ_j s_j = x_jᵀ M_g⁺ r_g with M_g = Σ_{j∈A_g} x_j x_jᵀ. Groups outside S keep
ADMM's multipliers. The caller accepts the polished point only if the exact program's certificate says so.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Scalar

from .. import linalg, operators, prox
from .._rows import row_kth_largest
from ..certificates import relu_duality_gap, relu_violation
from ..options import NewtonOptions
from ..problem import Problem
from .newton import newton_polish
from .objectives import CompositeSmooth, row_blocks, stacked_curvature

__all__ = ["PolishResult", "polish_relu"]


class ProjectedPrediction(CompositeSmooth):
    """F(K W) = L(F Π W): the loss of the prediction map applied to each group's projection Π_g W_g."""

    problem: Problem
    Pi: Float[Array, "q c d d"]

    def project(self, W):
        return jnp.einsum("qcde,qec->qdc", self.Pi, W, precision=operators.PRECISION)

    def apply(self, W):
        return self.problem.split(self.problem.products(self.project(W)))[0]

    def transpose(self, g):
        n, c = g.shape
        zeros = jnp.zeros((n, c, self.Pi.shape[0]), g.dtype)
        return self.project(self.problem.pullback(g, zeros))

    def gap(self, lam, W, img, g, Ktg):
        return jnp.asarray(jnp.inf, W.dtype)  # only the exact program's certificate (the caller's) counts

    def newton_preconditioner_pays(self, W, kernel_cg_steps):
        return True  # d×d blocks: cheap next to the CG iterations they save

    def newton_preconditioner(self, img, a, unit=None):
        """Block Jacobi in range Π: per group B_g = Π_g (Xᵀ D_q diag(h_k) D_q X + I/a_g) Π_g + (I − Π_g)."""
        p = self.problem
        X = p.X
        dtype = X.dtype
        A = row_blocks(stacked_curvature(p, img), X, p.rows)
        on = a > 0
        inv_a = jnp.where(on, 1 / jnp.where(on, a, 1), 1)
        eye = jnp.eye(X.shape[1], dtype=dtype)[None, None]
        Pi = self.Pi
        return linalg.block_jacobi(Pi @ (A + inv_a[:, :, None, None] * eye) @ Pi + (eye - Pi), on)


class PolishResult(NamedTuple):
    W: Array
    objective: Scalar
    gap: Scalar
    violation: Scalar
    iterations: Int[Array, ""]


def _tight_rows_projections(problem: Problem, tight: Bool[Array, "n c q"]):
    """Per group: an eigenbasis of M_g = Σ_{j tight} x_j x_jᵀ and which of its directions M_g spans."""
    X = problem.X
    weight = tight.astype(X.dtype)
    M = row_blocks(weight, X, problem.rows)
    evals, vecs = jnp.linalg.eigh(M)
    top = jnp.max(evals, axis=-1, keepdims=True)
    spanned = evals > X.shape[1] * jnp.finfo(X.dtype).eps * 100 * jnp.maximum(top, jnp.finfo(X.dtype).tiny)
    return evals, vecs, spanned


def refine_zero_group_multipliers(
    problem: Problem, W: Array, theta: Array, gamma: Array, xtx_top: Scalar, steps: int
) -> Array:
    """Γ ≥ 0 on the zero groups by projected gradient on ½ Σ_{g: W_g = 0} ‖(Kᵀ(θ, −Γ))_g‖², from the given Γ.

    A zero group is dual feasible when ‖(Fᵀθ)_g − Σ_j Γ_j s_j x_j‖ ≤ λ; its cone constraints are all tight
    (R = 0), so any Γ ≥ 0 leaves complementary slackness intact. ADMM's multipliers are close; a few
    projected gradient steps (step 1/‖X‖², xtx_top = ‖X‖², one K and one Kᵀ each) bring their groups inside the ball.
    """
    step = 1 / jnp.maximum(xtx_top, jnp.finfo(W.dtype).tiny)
    off = jnp.moveaxis(prox.group_norms(W) == 0, 0, 1)[None]  # (1, c, q)

    def body(_, g):
        H = problem.pullback(theta, -g)
        descent = problem.split(problem.products(H))[1]  # −∂/∂Γ of ½‖H‖²
        return jnp.where(off, jnp.maximum(g + step * descent, 0), g)

    return jax.lax.fori_loop(0, steps, body, gamma)


def polish_relu(
    problem: Problem,
    lam: Scalar,
    v: Float[Array, "q d c"],
    tight: Bool[Array, "n c q"],
    gamma_outside: Float[Array, "n c q"],
    xtx_top: Scalar,
    opts: NewtonOptions,
    budget: int | Int[Array, ""],
    refine_steps: int = 50,
) -> PolishResult:
    """The polished point from ADMM's v (its non-zero groups), tight rows and cone multipliers; see above.

    xtx_top: the largest eigenvalue of XᵀX (ADMM has it), the step of the zero groups' multiplier refinement.
    """
    dtype = v.dtype
    active = prox.group_norms(v) > 0  # (q, c)
    tight = tight & jnp.moveaxis(active, 0, 1)[None]
    # A non-zero w_g meets at most d − 1 equalities x_jᵀ w_g = 0 (rows in general position): keep the d − 1
    # tight rows with the largest multipliers (a row tight with a zero multiplier costs nothing either way).
    d = problem.X.shape[1]
    if d > 1:
        score = jnp.where(tight, gamma_outside, -1)
        tight = tight & (score >= row_kth_largest(score, d - 1, problem.rows)[None])
    evals, vecs, spanned = _tight_rows_projections(problem, tight)
    free = (~spanned).astype(dtype)  # (q, c, d): directions no tight row constrains
    Pi = jnp.einsum("qcdk,qck,qcek->qcde", vecs, free, vecs, precision=operators.PRECISION)
    obj = ProjectedPrediction(problem=problem, Pi=Pi)
    W0 = obj.project(v)
    W, cost = newton_polish(obj, lam, W0, active, opts, jnp.asarray(budget, jnp.int32))

    inv = jnp.where(spanned, 1 / jnp.where(spanned, evals, 1), 0)

    def certificate_parts(W):
        """z, R, θ and Γ at W: stationarity's multipliers on the non-zero groups, ADMM's elsewhere."""
        XW = problem.products(W)
        z, R = problem.split(XW)
        theta = problem.loss_grad(z)
        n, c = z.shape
        Ft_theta = problem.pullback(theta, jnp.zeros((n, c, W.shape[0]), dtype))
        norms = prox.group_norms(W)[:, None, :]
        r = Ft_theta + lam * W / jnp.where(norms > 0, norms, 1)
        # y_g = M_g⁺ r_g, then Γ_j s_j = x_jᵀ y_g on the tight rows of the non-zero groups.
        coeff = jnp.einsum("qcdk,qdc->qck", vecs, r, precision=operators.PRECISION) * inv
        y_g = jnp.einsum("qcdk,qck->qdc", vecs, coeff, precision=operators.PRECISION)
        gamma_tight = jnp.where(tight, jnp.maximum(problem.split(problem.products(y_g))[1], 0), 0)
        on = jnp.moveaxis(prox.group_norms(W) > 0, 0, 1)[None]
        gamma = jnp.where(on, gamma_tight, gamma_outside)
        return XW, z, R, theta, gamma

    XW, z, R, theta, gamma = certificate_parts(W)
    # A group that Newton left at a negligible norm has no stationarity multipliers (‖H_g‖ > λ with them):
    # it is zero at the optimum, so it is set to zero and keeps ADMM's multipliers.
    H_norms = prox.group_norms(problem.pullback(theta, -gamma))
    drop = (prox.group_norms(W) > 0) & (H_norms > lam * (1 + 1e-3))
    W = jnp.where(drop[:, None, :], 0, W)
    XW, z, R, theta, gamma = certificate_parts(W)
    gamma = refine_zero_group_multipliers(problem, W, theta, gamma, xtx_top, refine_steps)
    objective = problem.loss_value(z) + lam * prox.group_l1(W)
    gap = relu_duality_gap(problem, lam, W, z, R, theta, gamma)
    return PolishResult(
        W=W, objective=objective, gap=gap, violation=relu_violation(R, XW, problem.rows), iterations=cost
    )
