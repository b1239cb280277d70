"""Linear algebra the solvers share: preconditioned CG, a randomized Nyström sketch, block-Jacobi inverses.

    pcg:          H x = b for H ⪰ 0, from x = 0, stopping at ‖r‖ ≤ rtol ‖b‖ (2-norm) or non-positive curvature
    nystrom:      A ≈ U diag(λ) Uᵀ for A ⪰ 0 given only v ↦ A v (Tropp et al., 2017, the stable form)
    block_jacobi: v ↦ B_g⁻¹ v_g for a batch of small SPD blocks B_g (d×d), identity where a block is off

The CG is hand-written rather than lineax's: a truncated Newton solve needs a residual test in the 2-norm
relative to ‖b‖ (lineax's is element-wise, which never passes when entries of b or x are near zero), a guard
against non-positive curvature, and the iteration count.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.linalg
from jax import lax
from jaxtyping import Array, Bool, Float, Int, Scalar

from . import operators

__all__ = ["pcg", "nystrom", "block_jacobi", "block_jacobi_factor", "block_jacobi_apply"]


def _vdot(a: Array, b: Array) -> Scalar:
    return jnp.sum(a * b)


def pcg(
    matvec: Callable[[Array], Array],
    b: Array,
    rtol: Scalar | float,
    max_steps: int | Int[Array, ""],
    precondition: Callable[[Array], Array] | None = None,
) -> tuple[Array, Int[Array, ""]]:
    """Approximately solve H x = b (H positive semi-definite) by preconditioned CG from x = 0.

    Stops when ‖r‖ ≤ rtol ‖b‖, after `max_steps` iterations, or at non-positive curvature (returning the
    iterate so far, which is a descent direction for the quadratic model unless it is still zero).

    Returns:
        (x, iterations).
    """
    M = precondition if precondition is not None else (lambda r: r)
    tiny = jnp.finfo(b.dtype).tiny
    bb = _vdot(b, b)
    target = (rtol * rtol) * bb
    z = M(b)

    def cond(c):
        _, r, _, _, k, ok = c
        return ok & (_vdot(r, r) > target) & (k < max_steps)

    def body(c):
        x, r, p, rz, k, _ = c
        Hp = matvec(p)
        pHp = _vdot(p, Hp)
        ok = pHp > tiny
        alpha = jnp.where(ok, rz / jnp.where(ok, pHp, 1), 0)
        x = x + alpha * p
        r = r - alpha * Hp
        z = M(r)
        rz_new = _vdot(r, z)
        p = z + (rz_new / jnp.maximum(rz, tiny)) * p
        return x, r, p, jnp.where(ok, rz_new, rz), k + 1, ok

    init = (jnp.zeros_like(b), b, z, _vdot(b, z), jnp.zeros((), jnp.int32), bb > 0)
    x, _, _, _, k, _ = lax.while_loop(cond, body, init)
    return x, k


def nystrom(matvec: Callable[[Array], Array], shape, dtype, rank: int, key) -> tuple[Array, Array]:
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


def block_jacobi(
    B: Float[Array, "q c d d"], on: Bool[Array, "q c"]
) -> Callable[[Float[Array, "q d c"]], Float[Array, "q d c"]]:
    """v ↦ B_g⁻¹ v_g for every block g = (q, c) with `on` (SPD blocks), v_g itself elsewhere.

    B⁻¹ = L⁻ᵀ L⁻¹ is applied as two batched matrix products: CG applies it ~100 times per factorization,
    and XLA's CPU batched triangular solves (one small solve per block) cost more than a K and Kᵀ.
    """
    Linv = block_jacobi_factor(B, on)
    return lambda v: block_jacobi_apply(Linv, on, v)


def block_jacobi_factor(B: Float[Array, "q c d d"], on: Bool[Array, "q c"]) -> Float[Array, "q c d d"]:
    """L_g⁻¹ for B_g = L_g L_gᵀ on the blocks with `on`, the identity elsewhere."""
    eye = jnp.eye(B.shape[-1], dtype=B.dtype)[None, None]
    B = jnp.where(on[:, :, None, None], B, eye)
    L = jnp.linalg.cholesky(B)
    return jax.scipy.linalg.solve_triangular(L, jnp.broadcast_to(eye, B.shape), lower=True)


def block_jacobi_apply(
    Linv: Float[Array, "q c d d"], on: Bool[Array, "q c"], v: Float[Array, "q d c"]
) -> Float[Array, "q d c"]:
    """L⁻ᵀ L⁻¹ v_g on the blocks with `on` (from `block_jacobi_factor`), v_g itself elsewhere."""
    vt = jnp.moveaxis(v, 1, 2)  # (q, c, d)
    t = jnp.einsum("qcij,qcj->qci", Linv, vt, precision=operators.PRECISION)  # L⁻¹ v
    out = jnp.einsum("qcij,qci->qcj", Linv, t, precision=operators.PRECISION)  # L⁻ᵀ L⁻¹ v
    return jnp.where(on[:, None, :], jnp.moveaxis(out, 2, 1), v)
