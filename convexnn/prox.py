"""Penalties and their proximal maps: group norms, group soft-thresholding, projection onto group balls.

Two penalties on weights W (P, d, c):

    "group":   λ Σ_i Σ_k ‖W[i, :, k]‖₂   one group per pattern and output: c separate networks (as in scnn)
    "nuclear": λ Σ_i ‖W[i]‖_*           one block per pattern, neurons shared by every output

The solvers see either as a `Penalty` (value, prox, per-block norms and dual norms). For c = 1 both are the
same program. The nuclear blocks' spectra come from the c×c Gram matrices W_iᵀ W_i (d×d when d < c):
eigenvectors V_i, then σ_j = ‖W_i v_j‖ (benchmarks/results/vector_output.md measures it against a batched SVD).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = [
    "group_norms",
    "group_l1",
    "group_soft_threshold",
    "project_group_balls",
    "singular_values",
    "singular_value_threshold",
    "spectral_norms",
    "balanced_factors",
    "numerical_rank",
    "Penalty",
    "GroupL2",
    "Nuclear",
    "get_penalty",
]


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


def _right_spectrum(W: Float[Array, "p d c"]) -> tuple[Array, Array, Array]:
    """(B, σ, V) with W_i = B_i V_iᵀ, B_i = W_i V_i having orthogonal columns of norms σ_i (descending).

    V_i are the eigenvectors of the Gram W_iᵀ W_i; taking σ as the columns' norms (not the eigenvalues' roots)
    keeps every σ_j accurate to rounding relative to σ_j · cond(V), not to σ_max as √eig would be.
    """
    gram = jnp.einsum("pdc,pde->pce", W, W, precision="highest")
    _, V = jnp.linalg.eigh(gram)
    V = V[..., ::-1]
    B = jnp.einsum("pdc,pce->pde", W, V, precision="highest")
    return B, jnp.sqrt(jnp.sum(B * B, axis=1)), V


def _transposed(W: Array) -> bool:
    """Static: whether the blocks are wider than tall (d < c), so their spectra come from W_i W_iᵀ."""
    return W.shape[1] < W.shape[2]


def singular_values(W: Float[Array, "p d c"]) -> Float[Array, "p r"]:
    """σ(W_i) for every block, r = min(d, c) values each, largest first."""
    W = jnp.swapaxes(W, 1, 2) if _transposed(W) else W
    if W.shape[2] == 1:
        return jnp.sqrt(jnp.sum(W * W, axis=1))
    return _right_spectrum(W)[1]


def numerical_rank(sigma: Float[Array, "p r"], shape: tuple[int, ...]) -> Bool[Array, "p r"]:
    """σ_j > max(d, c) · eps · σ_max(W_i): the singular values that are not rounding (NumPy's matrix_rank rule).

    A thresholded block B diag(s) Vᵀ has exact zeros in s, but its spectrum recomputed from the product has
    rounding-size values there: they are not neurons.
    """
    eps = jnp.finfo(sigma.dtype).eps
    return sigma > max(shape[-2:]) * eps * jnp.max(sigma, axis=-1, keepdims=True)


def spectral_norms(H: Float[Array, "p d c"]) -> Float[Array, " p"]:
    """‖H_i‖₂ = σ_max(H_i) = √λ_max(H_iᵀ H_i) for every block: the nuclear norm's dual (eigenvalues only)."""
    H = jnp.swapaxes(H, 1, 2) if _transposed(H) else H
    if H.shape[2] == 1:
        return jnp.sqrt(jnp.sum(H * H, axis=(1, 2)))
    gram = jnp.einsum("pdc,pde->pce", H, H, precision="highest")
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[:, -1], 0))


def singular_value_threshold(W: Float[Array, "p d c"], t: Float[Array, ""] | float) -> Float[Array, "p d c"]:
    """prox_{t‖·‖_*}(W_i) = Σ_j (σ_j − t)₊ a_j b_jᵀ for every block W_i = Σ_j σ_j a_j b_jᵀ.

    Args:
        W: weights (P, d, c); t: threshold ≥ 0 (step size times λ).

    Returns:
        the thresholded weights, same shape and dtype as W.
    """
    if _transposed(W):
        return jnp.swapaxes(singular_value_threshold(jnp.swapaxes(W, 1, 2), t), 1, 2)
    if W.shape[2] == 1:
        return group_soft_threshold(W, t)
    B, sigma, V = _right_spectrum(W)
    safe = jnp.where(sigma > 0, sigma, jnp.ones((), sigma.dtype))
    scale = jnp.where(sigma > t, 1 - t / safe, jnp.zeros((), sigma.dtype))
    return jnp.einsum("pde,pce->pdc", B * scale[:, None, :], V, precision="highest")


def balanced_factors(W: Float[Array, "p d c"]) -> tuple[Array, Array, Array]:
    """(F, G, σ): F (P, d, r), G (P, c, r), σ (P, r), r = min(d, c), with W_i = F_i G_iᵀ from W_i = Σ_j σ_j a_j b_jᵀ:
    F_i = [√σ_j a_j], G_i = [√σ_j b_j].

    ‖F_i‖² + ‖G_i‖² = 2‖W_i‖_*: the factors of least weight decay, the neurons (w_j, α_j) of block i. Singular
    values at rounding level (`numerical_rank`) give zero factors.
    """
    if _transposed(W):
        G, F, sigma = balanced_factors(jnp.swapaxes(W, 1, 2))
        return F, G, sigma
    B, sigma, V = _right_spectrum(W)
    sigma = jnp.where(numerical_rank(sigma, W.shape), sigma, jnp.zeros((), sigma.dtype))
    root = jnp.sqrt(sigma)
    safe = jnp.where(root > 0, root, jnp.ones((), root.dtype))
    return B / safe[:, None, :], V * root[:, None, :], sigma


class Penalty(eqx.Module):
    """Ω(W) = Σ_g ‖W_g‖ over blocks g of the weights (P, d, c), as the solvers and certificates use it.

    Subclasses set `name`, what `penalty=` calls them.
    """

    name = "penalty"

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

    @abc.abstractmethod
    def support(self, W: Float[Array, "p d c"]) -> Array:
        """Which parts of W are non-zero (groups; a block's singular values): a solver's identified structure."""

    def pattern_dual_norms(self, H: Float[Array, "p d c"]) -> Float[Array, " p"]:
        """max over pattern i's blocks of ‖H_g‖_*: above λ, a zero w_i violates the optimality conditions."""
        return jnp.max(self.dual_norms(H).reshape(H.shape[0], -1), axis=1)


def pattern_support(active: Bool[Array, "p ..."]) -> Bool[Array, " p"]:
    """Which patterns have any non-zero part, from a `Penalty.support`."""
    return jnp.any(active.reshape(active.shape[0], -1), axis=1)


class GroupL2(Penalty):
    """Ω(W) = Σ_i Σ_k ‖W[i, :, k]‖₂: one group per pattern and output (self-dual blocks)."""

    name = "group"

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

    def support(self, W):
        return group_norms(W) > 0


class Nuclear(Penalty):
    """Ω(W) = Σ_i ‖W[i]‖_*: one d×c block per pattern, its rank the neurons that share gate i (dual: ‖·‖₂)."""

    name = "nuclear"

    def value(self, W):
        return jnp.sum(singular_values(W))

    def prox(self, W, t):
        return singular_value_threshold(W, t)

    def norms(self, W):
        return jnp.sum(singular_values(W), axis=-1)

    def dual_norms(self, H):
        return spectral_norms(H)

    def pairing(self, H, W):
        return jnp.sum(H * W, axis=(1, 2))

    def support(self, W):
        # The ranks a solver identifies: σ_j > √eps · σ_max(W_i). Below that the Gram's eigenvectors do not
        # resolve a direction (its computed σ_j is rounding of the larger ones), so counting it would make the
        # identified ranks flicker from one iterate to the next, and the polish would never start.
        sigma = singular_values(W)
        return sigma > jnp.sqrt(jnp.finfo(sigma.dtype).eps) * jnp.max(sigma, axis=-1, keepdims=True)


PENALTIES = ("group", "nuclear")


def get_penalty(penalty: str | Penalty) -> Penalty:
    """The `Penalty` named "group" (Σ_{i,k} ‖W[i, :, k]‖₂) or "nuclear" (Σ_i ‖W[i]‖_*), or an instance as is."""
    if isinstance(penalty, Penalty):
        return penalty
    if penalty == "group":
        return GroupL2()
    if penalty == "nuclear":
        return Nuclear()
    raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}")
