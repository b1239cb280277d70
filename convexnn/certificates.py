"""Certificates of both programs: dual points, duality gaps, cone violations, λ_max and the objective's unit.

Gated primal: p* = min_W L(A W) + λ Σ_g ‖W_g‖₂, with A W = Σ_i D_i X w_i.
Gated dual:   d* = max_θ −L*(θ) subject to ‖(Aᵀθ)_g‖₂ ≤ λ for every group g, and d* = p*.

Any gradient of the loss, ∇L(z), scaled by s = min(1, λ / max_g ‖(Aᵀ∇L(z))_g‖) is dual feasible, so

    gap(W, θ) = [L(AW) + L*(θ) − ⟨θ, AW⟩] + Σ_g [λ‖W_g‖ + ⟨(Aᵀθ)_g, W_g⟩]

bounds objective(W) − p* from above. Both brackets are non-negative and computed without cancellation
(the first is the loss's Fenchel–Young gap, the second a sum of λ‖w‖ − ‖a‖‖w‖cos ≥ 0 terms). The exact ReLU
program adds cone multipliers Γ ≥ 0 to the dual (`relu_duality_gap`) and complementary slackness to the gap.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float, Scalar

from . import _validate, operators, prox
from . import losses as _losses
from ._cone_qp import cone_qp_with_multipliers
from ._mesh import check_sharded
from ._rows import Rows, loss_kwargs, row_max, row_total
from ._units import target_scale
from .problem import Problem, on_shards
from .sharding import RowSharded

_GROUP = prox.GroupL2()

__all__ = [
    "safe_zero",
    "pattern_norms",
    "dual_scale",
    "penalty_gap",
    "duality_gap",
    "relu_duality_gap",
    "relu_violation",
    "ReluRule",
    "lam_max",
    "relu_lam_max",
    "cone_scores",
    "relu_nuclear_lam_max",
    "objective_unit",
]


def dual_scale(AtG: Float[Array, "p d c"], lam: Scalar, penalty: prox.Penalty = _GROUP) -> Scalar:
    """s = min(1, λ / max_g ‖(Aᵀ∇L)_g‖_*): the largest scaling of a loss gradient that is dual feasible."""
    top = jnp.max(penalty.dual_norms(AtG))
    return jnp.where(top > lam, lam / jnp.where(top > 0, top, 1), jnp.ones((), AtG.dtype))


def duality_gap(
    loss: _losses.Loss,
    y: Float[Array, "n c"],
    N: int,
    lam: Scalar,
    W: Float[Array, "p d c"],
    Z: Float[Array, "n c"],
    grad: Float[Array, "n c"],
    AtG: Float[Array, "p d c"],
    rows: Rows | None = None,
    penalty: prox.Penalty = _GROUP,
) -> Scalar:
    """objective(W) − p* ≤ gap, with the dual point θ = s ∇L taken from any gradient of the loss.

    Args:
        loss: the loss.
        y: targets (n, c); N: the loss normaliser.
        lam: λ ≥ 0.
        W: primal weights (P, d, c), and Z = A W their predictions (n, c).
        grad: a loss gradient ∇L(z') at some point z' (n, c), and AtG = Aᵀ grad (P, d, c).
        rows: for row-sharded data, the real rows and the mesh axis (the loss term sums over all shards).
        penalty: the block penalty Ω of λ Ω(W) (default: the group ℓ2 norms).

    Returns:
        the duality gap, a non-negative scalar.
    """
    s = dual_scale(AtG, lam, penalty)
    fy = loss.fenchel_young_gap(Z, s * grad, y, N, **loss_kwargs(rows))
    return fy + penalty_gap(lam, W, AtG, s, penalty)


def pattern_norms(problem: Problem) -> Float[Array, " p"]:
    """‖D_i X‖_F for every pattern (‖Z_i‖_F of the pooled patch sums), added over the shards: one pass over X."""
    if problem.pooled is not None:
        frob2 = jnp.sum(jnp.square(problem.pooled), axis=(0, 2))
    elif problem.gates is not None:  # Σ_j m_ji ‖x_j‖², the patterns recomputed in row blocks
        frob2 = operators.gates_row_sums(problem.X, problem.gates, jnp.sum(jnp.square(problem.X), axis=1))
    else:  # Σ_j m_ji ‖x_j‖² over rows (and positions), in row blocks: no n×P float copy of the masks
        frob2 = operators.mask_row_sums(problem.masks, jnp.sum(jnp.square(problem.X), axis=-1))
    return jnp.sqrt(row_total(frob2, problem.rows))


def safe_zero(
    problem: Problem, lam: Scalar, AtG: Float[Array, "p d c"], gap: Scalar, norms: Float[Array, " p"] | None = None
) -> Bool[Array, " p"]:
    """The patterns proven zero at every optimum by the gap-safe sphere test (Ndiaye et al. 2017):

        s ‖(Aᵀ∇L)_i‖_* + ‖D_i X‖_F · √(2 β gap / N) < λ   ⇒   w_i* = 0,

    with θ = s ∇L the dual point of `duality_gap` (AtG = Aᵀ∇L, `gap` its gap), β the loss's `curvature` and N its
    normaliser: the dual is (N/β)-strongly concave, so ‖θ − θ*‖ ≤ √(2 β gap / N), and ‖A_i‖₂ ≤ ‖D_i X‖_F
    (`pattern_norms`, passed as `norms` when already known)."""
    norms = pattern_norms(problem) if norms is None else norms
    radius = jnp.sqrt(2 * problem.loss.curvature * jnp.maximum(gap, 0) / problem.N)
    s = dual_scale(AtG, lam, problem.penalty)
    return s * problem.penalty.pattern_dual_norms(AtG) + norms * radius < lam


def penalty_gap(
    lam: Scalar, W: Float[Array, "q d c"], H: Float[Array, "q d c"], s: Scalar, penalty: prox.Penalty = _GROUP
) -> Scalar:
    """Σ_g (λ‖W_g‖ + s⟨H_g, W_g⟩)₊: the penalty's part of a gap at a dual point whose Kᵀ-image is sH."""
    return jnp.sum(jnp.maximum(lam * penalty.norms(W) + s * penalty.pairing(H, W), 0))


def relu_violation(R: Float[Array, "n *k c q"], XW: Float[Array, "n *k c q"], rows: Rows | None = None) -> Scalar:
    """max_{i,j} (−s_ij (X w_i)_j)₊ / max |X W|: the constraint violation relative to the scale of X u."""
    scale = row_max(jnp.abs(XW), rows)
    worst = row_max(jnp.maximum(-R, 0), rows)
    return jnp.where(scale > 0, worst / jnp.where(scale > 0, scale, 1), 0)


def relu_duality_gap(problem, lam: Scalar, W: Array, z: Array, R: Array, grad: Array, gamma: Array) -> Scalar:
    """The duality gap of the exact program with each cone constraint relaxed by W's own violation there.

    With E = (−R)₊ (zero where W meets its constraint), W is feasible for the relaxation R ≥ −E, whose dual is
    max_{θ, Γ ≥ 0} −L*(θ) − ⟨Γ, E⟩ s.t. ‖(Kᵀ(θ, −Γ))_g‖ ≤ λ for every block g. With H = Kᵀ(θ, −Γ) and
    s = min(1, λ / max_g ‖H_g‖), (sθ, sΓ) is dual feasible for θ = ∇L(z') and any Γ ≥ 0, and

        gap = [L(z) + L*(sθ) − ⟨sθ, z⟩] + Σ_g [λ‖W_g‖ + s⟨H_g, W_g⟩] + s⟨Γ, R₊⟩,

    a sum of non-negative terms (the last is complementary slackness, R + E = R₊). Hence gap ≥ 0 and

        objective(W) − p* ≤ objective(W) − p*_E ≤ gap,

    p*_E ≤ p* the optimum of the relaxation, a program W is feasible for and within W's own violation of the
    exact one (every constraint relaxed by at most ε = max E, the absolute violation). For a feasible W, E = 0
    and this is the exact program's gap; no point below p* is ever certified with a negative gap.

    Args:
        problem: the `Problem` (its `pullback` and loss); W: stacked weights [U; V]; (z, R) = split(X W).
    """
    H = problem.pullback(grad, -gamma)
    s = dual_scale(H, lam, problem.penalty)
    fy = problem.fenchel_young_gap(z, s * grad)
    return fy + penalty_gap(lam, W, H, s, problem.penalty) + s * problem.row_sum(gamma * jnp.maximum(R, 0))


class ReluRule(NamedTuple):
    """The exact ReLU program's stopping rule, in the solver's units: the relative cone violation within
    `constraint_tol` and the gap within tol · max(1, |objective|)."""

    tol: Scalar
    constraint_tol: Scalar

    def feasible(self, violation: Scalar) -> Array:
        return violation <= self.constraint_tol

    def met(self, objective: Scalar, gap: Scalar, violation: Scalar) -> Array:
        return self.feasible(violation) & (gap <= self.tol * jnp.maximum(1, jnp.abs(objective)))

    def distance(self, objective: Scalar, gap: Scalar, violation: Scalar) -> Array:
        """max(gap / (tol · max(1, |objective|)), violation / constraint_tol): ≤ 1 where the rule is met."""
        tiny = jnp.finfo(jnp.result_type(gap)).tiny  # tol = 0 or constraint_tol = 0: large, not inf
        relative_gap = gap / jnp.maximum(self.tol * jnp.maximum(1, jnp.abs(objective)), tiny)
        return jnp.maximum(relative_gap, violation / jnp.maximum(self.constraint_tol, tiny))


def objective_unit(y: ArrayLike, loss: str | _losses.Loss = "squared") -> Scalar:
    """u in every solver's stopping rule gap ≤ tol · max(u, |objective|): the unit of the objective's values.

    For the squared loss u is the targets' variance averaged over the outputs, (1/c) Σ_k var(y[:, k]) (1 for
    standardized targets; at least eps times their mean square, and 1 for all-zero targets), so that the
    rule reads the same in any units of y; for the logistic and cross-entropy losses, whose values have no
    unit, u = 1.

    Args:
        y: targets (n,) or (n, c), as given to the solvers; loss: the loss name or instance.
    """
    loss = _losses.get_loss(loss)
    if not hasattr(y, "shape"):
        y = np.asarray(y)
    _validate.check_real_dtype("y", y)
    Y = jnp.asarray(loss.prepare_targets(np.asarray(y)))
    y_exp, y_root = target_scale(Y, loss, loss.normaliser(Y))
    return jnp.ldexp(y_root * y_root, 2 * y_exp)


def _unit_lam_max(problem: Problem, model: str) -> Scalar:
    """λ_max computed on the problem brought to unit scale (`convexnn._units`), in the user's units: the
    norms of Xᵀ D_i ∇L(0) then neither underflow nor overflow, whatever the scale of X and y."""
    problem, units = problem.in_units()
    AtG = problem.adjoint(problem.loss_grad(jnp.zeros_like(problem.y)))
    if model == "gated":
        top = jnp.max(problem.penalty.dual_norms(AtG))
    else:  # patches: a cone constraint per position, i.e. the rows of the n·K patches
        rows = operators.patch_rows(problem.X, problem.masks)
        top = (relu_nuclear_lam_max if isinstance(problem.penalty, prox.Nuclear) else relu_lam_max)(*rows, AtG)
    return units.lam_out(top)


@eqx.filter_jit
def _lam_max_sharded(data: RowSharded, loss: _losses.Loss, penalty: prox.Penalty) -> Scalar:
    return on_shards(lambda problem: _unit_lam_max(problem, "gated"), data, loss, penalty=penalty)


def relu_lam_max(X: Float[Array, "n d"], masks: Bool[Array, "n p"], AtG: Float[Array, "p d c"]) -> Scalar:
    """max over blocks i, outputs k and signs ± of ‖Π_{K_i}(∓ Xᵀ D_i ∇L(0))‖, K_i = {u : s_i ⊙ X u ≥ 0}.

    Zero solves the exact ReLU program iff no feasible direction descends: for u ∈ K_i the derivative
    ⟨Xᵀ D_i ∇L, u⟩ + λ‖u‖ ≥ 0 (and with −Xᵀ D_i ∇L for v_i), i.e. λ ≥ max_{u ∈ K_i, ‖u‖ ≤ 1} ⟨∓a, u⟩ =
    ‖Π_{K_i}(∓a)‖ (Moreau). Each projection is a small interior-point QP (`cone_qp`).
    """
    return jnp.max(_cone_projections(X, masks, AtG))


def _cone_projections(X: Float[Array, "n d"], masks: Bool[Array, "n p"], AtG: Float[Array, "p d c"]) -> Array:
    """‖Π_{K_i}(∓ a_ik)‖ for every block i, output k and sign (2, P, c), a_ik = AtG[i, :, k]."""
    return cone_scores(X, masks, AtG)[0]


def cone_scores(
    X: Float[Array, "n d"], masks: Bool[Array, "n p"], AtG: Float[Array, "p d c"]
) -> tuple[Float[Array, "2 p c"], Float[Array, "n c q"]]:
    """The exact program's test of zero blocks: ‖Π_{K_i}(∓a_ik)‖ (2, P, c), a = AtG = Xᵀ D_i ∇L, and multipliers Γ.

    Zero is optimal for u_ik iff ‖Π_{K_i}(−a_ik)‖ ≤ λ, for v_ik iff ‖Π_{K_i}(a_ik)‖ ≤ λ (`relu_lam_max`). With
    B_i = s_i ⊙ X, Π_{K_i}(−a) = −a + B_iᵀ μ for the projection's multipliers μ ≥ 0 (`cone_qp_with_multipliers`),
    so Γ = [μ⁺; μ⁻] (n, c, 2P), blocks as in `Problem.residual_shape`, makes the relaxed dual's
    H = Kᵀ(∇L, −Γ) (`relu_duality_gap`) exactly as long as those projections on every block.
    """
    P, d, c = AtG.shape
    signs = jnp.where(masks, 1.0, -1.0).astype(X.dtype)
    zero = jnp.zeros((X.shape[0],), X.dtype)

    def block(args):
        i, k = args
        a = AtG[i, :, k]
        up, mu_up = cone_qp_with_multipliers(X, signs[:, i], -a, zero)
        down, mu_down = cone_qp_with_multipliers(X, signs[:, i], a, zero)
        return jnp.stack([jnp.linalg.norm(up), jnp.linalg.norm(down)]), jnp.stack([mu_up, mu_down])

    idx_i, idx_k = jnp.meshgrid(jnp.arange(P), jnp.arange(c), indexing="ij")
    norms, mu = lax.map(block, (idx_i.reshape(-1), idx_k.reshape(-1)), batch_size=min(P * c, 16))
    gamma = jnp.transpose(mu.reshape(P, c, 2, -1), (3, 1, 2, 0)).reshape(-1, c, 2 * P)
    return jnp.moveaxis(norms.reshape(P, c, 2), 2, 0), gamma


def relu_nuclear_lam_max(X: Float[Array, "n d"], masks: Bool[Array, "n p"], AtG: Float[Array, "p d c"]) -> Scalar:
    """A λ at which zero solves the nuclear relaxation of the exact ReLU program: an upper bound on its λ_max.

    Zero is optimal iff λ ≥ max_{U ∈ C_i, ‖U‖_* ≤ 1} ⟨∓A_i, U⟩ for every block i and sign, C_i the matrices
    whose columns lie in K_i. That support function is itself a conic program; it is at most ‖A_i‖₂ (drop
    the cone) and at most ‖Π_{C_i}(∓A_i)‖_F = (Σ_k ‖Π_{K_i}(∓a_ik)‖²)^½ (‖U‖_F ≤ ‖U‖_*), so the smaller of
    the two bounds it; at least the largest single column's ‖Π_{K_i}(∓a_ik)‖ (rank-one U = u e_kᵀ).
    """
    frobenius = jnp.sqrt(jnp.sum(jnp.square(_cone_projections(X, masks, AtG)), axis=-1))  # (2, P)
    return jnp.max(jnp.minimum(jnp.max(frobenius, axis=0), prox.spectral_norms(AtG)))


@eqx.filter_jit
def _lam_max(X, Y, masks, loss: _losses.Loss, model: str, rescale_x: bool, penalty: prox.Penalty) -> Scalar:
    problem = Problem(X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y), rescale_x=rescale_x, penalty=penalty)
    return _unit_lam_max(problem, model)


def lam_max(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    loss: str | _losses.Loss = "squared",
    *,
    model: str = "gated",
    penalty: str = "group",
) -> Scalar:
    """The smallest λ whose solution is all zero: λ_max = max_g ‖(Xᵀ D_i ∇L(0))_g‖_* (max over blocks), gated.

    The dual norm is the penalty's: ℓ2 of each column Xᵀ D_i ∇L(0)[:, k] (penalty="group"), the spectral norm
    of each d×c block Xᵀ D_i ∇L(0) (penalty="nuclear").

    For model="relu" the cone constraints shrink it to max_{i,±} ‖Π_{K_i}(∓Xᵀ D_i ∇L(0))‖₂ ≤ the gated
    value, K_i = {u : (2D_i − I) X u ≥ 0}: a projection per block (small interior-point QPs, O(n d²) each),
    so it costs far more than the gated closed form. For model="relu" with penalty="nuclear" the exact
    threshold is a conic program per block; the value returned is an upper bound on it (zero solves the
    relaxation at that λ; `relu_nuclear_lam_max`).

    Args:
        X: data (n, d), or a `RowSharded` from `shard_rows` (then y and masks are left out; gated only).
        y: targets (n,) or (n, c); masks: (n, P) bool.
        loss: the loss name or instance.
        model: "gated" or "relu".
        penalty: "group" or "nuclear", as in `solve_gated`.
    """
    if model not in ("gated", "relu"):
        raise ValueError(f"model must be 'gated' or 'relu'; got {model!r}")
    penalty = prox.get_penalty(penalty)
    loss = _losses.get_loss(loss)
    if isinstance(X, RowSharded):
        check_sharded(X, y, masks, loss)
        if model == "relu":
            raise NotImplementedError("lam_max(model='relu') needs the data on one device; pass X, y, masks")
        return _lam_max_sharded(X, loss, penalty)
    X, Y, masks, _, rescale_x = _validate.check_data(X, y, masks, loss)
    return _lam_max(X, Y, masks, loss, model, rescale_x, penalty)
