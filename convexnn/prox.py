"""Penalties and their proximal maps: group norms, group soft-thresholding, projection onto group balls.

A group is the d-vector W[i, :] (single output) or W[i, :, k] (output k): the penalty is
λ Σ_i Σ_k ‖W[i, :, k]‖₂, one group per pattern and output, as in scnn. The solvers see it as a `Penalty`
(value, prox, per-block norms and dual norms), so another block penalty is another `Penalty`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["group_norms", "group_l1", "group_soft_threshold", "project_group_balls", "Penalty", "GroupL2"]


def group_norms(W: Float[Array, "p d *c"]) -> Float[Array, "p *c"]:
    """‖W[i, :, k]‖₂ for every group: shape (P,) or (P, c)."""
    return jnp.sqrt(jnp.sum(jnp.square(W), axis=1))


def group_l1(W: Float[Array, "p d *c"]) -> Float[Array, ""]:
    """Σ_i Σ_k ‖W[i, :, k]‖₂, the group-ℓ1 penalty without λ."""
    return jnp.sum(group_norms(W))


def _expand(x: Array) -> Array:
    return x[:, None] if x.ndim == 1 else x[:, None, :]


def group_soft_threshold(W: Float[Array, "p d *c"], t: Float[Array, ""] | float) -> Float[Array, "p d *c"]:
    """prox_{t‖·‖₂}(w) = (1 − t/‖w‖₂)₊ w for every group.

    Args:
        W: weights, (P, d) or (P, d, c).
        t: threshold ≥ 0 (step size times λ).

    Returns:
        the thresholded weights, same shape and dtype as W.
    """
    norms = group_norms(W)
    safe = jnp.where(norms > 0, norms, jnp.ones((), norms.dtype))
    scale = jnp.where(norms > t, 1 - t / safe, jnp.zeros((), norms.dtype))
    return W * _expand(scale)


def project_group_balls(W: Float[Array, "p d *c"], t: Float[Array, ""] | float) -> Float[Array, "p d *c"]:
    """Π_{‖·‖₂ ≤ t}(w) for every group: the Moreau complement, prox_t(w) + Π_t(w) = w."""
    norms = group_norms(W)
    safe = jnp.where(norms > 0, norms, jnp.ones((), norms.dtype))
    scale = jnp.where(norms > t, t / safe, jnp.ones((), norms.dtype))
    return W * _expand(scale)


class Penalty(eqx.Module):
    """Ω(W) = Σ_g ‖W_g‖ over blocks g of the weights (P, d, c), as the solvers and certificates use it."""

    @abc.abstractmethod
    def value(self, W: Float[Array, "p d c"]) -> Float[Array, ""]:
        """Ω(W)."""

    @abc.abstractmethod
    def prox(self, W: Float[Array, "p d c"], t: Float[Array, ""] | float) -> Float[Array, "p d c"]:
        """prox_{tΩ}(W)."""

    @abc.abstractmethod
    def norms(self, W: Float[Array, "p d c"]) -> Array:
        """‖W_g‖ for every block (W_g ≠ 0 exactly where it is > 0)."""

    @abc.abstractmethod
    def dual_norms(self, H: Float[Array, "p d c"]) -> Array:
        """‖H_g‖_* for every block: the dual point θ is feasible when every ‖(Kᵀθ)_g‖_* ≤ λ."""

    @abc.abstractmethod
    def pairing(self, H: Float[Array, "p d c"], W: Float[Array, "p d c"]) -> Array:
        """⟨H_g, W_g⟩ for every block."""


class GroupL2(Penalty):
    """Ω(W) = Σ_i Σ_k ‖W[i, :, k]‖₂: one group per pattern and output (self-dual blocks)."""

    def value(self, W):
        return group_l1(W)

    def prox(self, W, t):
        return group_soft_threshold(W, t)

    def norms(self, W):
        return group_norms(W)

    def dual_norms(self, H):
        return group_norms(H)

    def pairing(self, H, W):
        return jnp.sum(H * W, axis=1)
