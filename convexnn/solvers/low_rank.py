"""Low-rank Newton polish for the nuclear penalty: Newton–CG on the factors of the identified ranks.

From each block's thin SVD W_i = Σ_j σ_j a_j b_jᵀ, with the columns σ_j > 0 that proximal gradient has
identified, the balanced factors F_i = [√σ_j a_j], G_i = [√σ_j b_j] (d×r, c×r; `prox.balanced_factors`) start

    φ(F, G) = F(K Σ_i F_i G_iᵀ) + (λ/2)(‖F‖² + ‖G‖²),

the network's own weight-decay objective on those neurons. At balanced factors φ equals the convex objective
(‖U‖_* = min_{FGᵀ = U} (‖F‖² + ‖G‖²)/2), and it is smooth: the nuclear norm's kink at a rank-deficient block
is gone once its rank is fixed. With Γ = Kᵀ∇F(K U) and dU = dF Gᵀ + F dGᵀ,

    ∇_F φ = Γ G + λF,     ∇_G φ = Γᵀ F + λG
    ∇²φ (dF, dG) = (dΓ G + Γ dG + λ dF,  dΓᵀ F + Γᵀ dF + λ dG),   dΓ = Kᵀ ∇²F K dU

so a Hessian-vector product costs one K and one Kᵀ, like an R-FISTA step. The directions (F_i Ω, G_i Ω), Ω
skew, leave φ unchanged; CG started at zero never enters them (the gradient is orthogonal to them), and it
stops at non-positive curvature. Newton–CG with an Armijo search then converges fast where proximal gradient
crawls along the spectra. Whether the ranks were right is the caller's business: it certifies the result
with the convex program's duality gap.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Scalar

from .. import prox
from ..linalg import pcg
from ..options import NewtonOptions
from ..solution import RUNNING, Status
from ._loop import iterate
from .newton import armijo_search, step_outcome
from .objectives import CompositeSmooth

__all__ = ["low_rank_polish"]


def _vdot(a: Array, b: Array) -> Scalar:
    return jnp.sum(a * b)


def _product(Z: Array, d: int) -> Array:
    """U = F Gᵀ for the stacked factors Z = [F; G] (P, d + c, r)."""
    return jnp.einsum("pdr,pcr->pdc", Z[:, :d], Z[:, d:], precision="highest")


class _Carry(NamedTuple):
    Z: Float[Array, "p e r"]  # stacked factors [F; G]
    img: object  # K F Gᵀ
    phi: Scalar
    grad_norm0: Scalar
    steps: Int[Array, ""]
    iterations: Int[Array, ""]  # spent: 1 + CG iterations per Newton step
    flat: Int[Array, ""]
    status: Int[Array, ""]


def _phi(obj: CompositeSmooth, lam: Scalar, Z: Array, img) -> Scalar:
    return obj.value(img) + 0.5 * lam * _vdot(Z, Z)


def _gradient(obj: CompositeSmooth, lam: Scalar, Z: Array, img, mask: Array, d: int) -> tuple:
    """(∇φ on the active factors, ∇F(img), Γ = Kᵀ∇F(img))."""
    zero = jnp.zeros((), Z.dtype)
    g = obj.grad(img)
    Gamma = obj.transpose(g)
    F, G = Z[:, :d], Z[:, d:]
    gF = jnp.einsum("pdc,pcr->pdr", Gamma, G, precision="highest")
    gG = jnp.einsum("pdc,pdr->pcr", Gamma, F, precision="highest")
    return jnp.where(mask, jnp.concatenate([gF, gG], axis=1) + lam * Z, zero), g, Gamma


def _hessian(obj: CompositeSmooth, lam: Scalar, Z: Array, img, Gamma: Array, mask: Array, d: int):
    """D ↦ ∇²φ D on the active factors (the identity elsewhere): one K and one Kᵀ per product."""
    zero = jnp.zeros((), Z.dtype)
    F, G = Z[:, :d], Z[:, d:]

    def mm(a, b, spec):
        return jnp.einsum(spec, a, b, precision="highest")

    def hvp(D):
        D = jnp.where(mask, D, zero)
        dF, dG = D[:, :d], D[:, d:]
        dU = mm(dF, G, "pdr,pcr->pdc") + mm(F, dG, "pdr,pcr->pdc")
        dGamma = obj.transpose(obj.hvp(img, obj.apply(dU)))
        hF = mm(dGamma, G, "pdc,pcr->pdr") + mm(Gamma, dG, "pdc,pcr->pdr")
        hG = mm(dGamma, F, "pdc,pdr->pcr") + mm(Gamma, dF, "pdc,pdr->pcr")
        return jnp.where(mask, jnp.concatenate([hF, hG], axis=1) + lam * D, D)

    return hvp


def low_rank_polish(
    obj: CompositeSmooth,
    lam: Scalar,
    W: Float[Array, "p d c"],
    active: Bool[Array, "p r"],
    opts: NewtonOptions,
    budget: Int[Array, ""],
    tol: Scalar | float = 0.0,
) -> tuple[Float[Array, "p d c"], Int[Array, ""]]:
    """Minimise φ over the factors of the singular pairs in `active` (the others held at zero) by Newton–CG.

    Stops like `newton.newton_polish`: after `newton_steps` steps, when a step fails to lower φ (beyond
    rounding) or needed more than `max_halvings` halvings, when φ stops moving, when the point is certified
    (gap ≤ tol·max(1, |φ|)), or when `budget` iterations are spent.

    Returns:
        (W = F Gᵀ at the end, iterations spent).
    """
    dtype = W.dtype
    zero = jnp.zeros((), dtype)
    d = W.shape[1]
    F, G, _ = prox.balanced_factors(W)
    mask = active[:, None, :]
    Z0 = jnp.where(mask, jnp.concatenate([F, G], axis=1), zero)

    def step(c: _Carry) -> _Carry:
        g, grad_loss, Gamma = _gradient(obj, lam, c.Z, c.img, mask, d)
        gnorm = jnp.sqrt(_vdot(g, g))
        U = _product(c.Z, d)
        certified = obj.gap(lam, U, c.img, grad_loss, Gamma) <= tol * jnp.maximum(1, jnp.abs(c.phi))
        grad_norm0 = jnp.where(c.steps == 0, gnorm, c.grad_norm0)
        rtol = jnp.minimum(opts.cg_rtol, gnorm / jnp.maximum(grad_norm0, jnp.finfo(dtype).tiny))
        cg_budget = jnp.where(certified, 0, jnp.minimum(opts.cg_steps, budget - c.iterations - 1))
        direction, k = pcg(_hessian(obj, lam, c.Z, c.img, Gamma, mask, d), -g, rtol, cg_budget)
        slope = _vdot(g, direction)
        direction = jnp.where(slope < 0, direction, -g)
        slope = jnp.where(slope < 0, slope, -gnorm * gnorm)

        def trial(alpha):
            Z = c.Z + alpha * direction
            img = obj.apply(_product(Z, d))
            return Z, img, _phi(obj, lam, Z, img)

        (Z_new, img_new, val), h = armijo_search(trial, c.phi, slope, opts)
        improved, flat, steps, status = step_outcome(c, val, h, gnorm, lam, jnp.sum(mask), certified, opts)
        return _Carry(
            Z=jnp.where(improved, Z_new, c.Z),
            img=jax.tree.map(lambda x, y: jnp.where(improved, x, y), img_new, c.img),
            phi=jnp.where(improved, val, c.phi),
            grad_norm0=grad_norm0,
            steps=steps,
            iterations=c.iterations + 1 + k,
            flat=flat,
            status=status,
        )

    img0 = obj.apply(_product(Z0, d))
    init = _Carry(
        Z=Z0,
        img=img0,
        phi=_phi(obj, lam, Z0, img0),
        grad_norm0=jnp.ones((), dtype),
        steps=jnp.zeros((), jnp.int32),
        iterations=jnp.zeros((), jnp.int32),
        flat=jnp.zeros((), jnp.int32),
        status=jnp.asarray(RUNNING if opts.newton_steps > 0 else Status.CONVERGED, jnp.int32),
    )
    out = iterate(step, init, budget)
    return _product(out.Z, d), out.iterations
