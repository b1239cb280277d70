"""Units: the scales that bring a problem to unit size before it is solved, and the way back.

    X = 2^e X̃,   y = σ ỹ,   W = (σ / 2^e) W̃,   λ = 2^e σ λ̃,   objective = σ² õbjective,   gap = σ² g̃ap

For the squared loss σ² = u, the objective's unit: the targets' variance averaged over outputs (kept above
eps times their mean square; 1 for all-zero targets), so ỹ has unit variance; for the label losses
(logistic, cross-entropy) σ = 1 and u = 1, their values having no unit. 2^e = 1 while max |X| lies within
[2^-16, 2^16], where no norm the solvers form comes near the dtype's limits, and otherwise the power of two
just above max |X| (max |X̃| ∈ [1/2, 1)); X̃ is exact either way. The gated and augmented-Lagrangian solvers
do the same on X and on 2^k X, but ADMM's penalty heuristics do not: leaving ordinary data as it comes keeps
ADMM's behaviour on it.

The solvers thus see a well-scaled problem whatever units the user measures X, y and λ in: no squared norm
underflows or overflows, and their stopping rule gap ≤ tol·max(1, |õbjective|) reads
gap ≤ tol·max(u, |objective|) in the user's units. σ is held as 2^f·√v with v ∈ (0, 1], so that neither it
nor u need be representable on their own.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Scalar

from . import losses as _losses
from ._rows import Rows, row_column_sum, row_max
from .solution import Status

__all__ = ["Units", "units_of", "target_scale", "rescales_top"]


_X_RANGE = 16  # max |X| within [2^-16, 2^16] is left as it is


def rescales_top(top: float) -> bool:
    """Static: whether a solve must bring an X whose max |X| is `top` to unit scale: False within
    [2^-16, 2^16] (the solvers then leave X as it is and compile no copy of it). A traced X is rescaled."""
    e = int(np.frexp(top)[1]) if top > 0 and np.isfinite(top) else 0
    return abs(e) > _X_RANGE


def _exponent(v: Scalar) -> Int[Array, ""]:
    """e with v ∈ [2^(e−1), 2^e) for finite v > 0; 0 otherwise."""
    _, e = jnp.frexp(v)
    return jnp.where((v > 0) & jnp.isfinite(v), e, 0).astype(jnp.int32)


def _x_exponent(top: Scalar) -> Int[Array, ""]:
    e = _exponent(top)
    return jnp.where(jnp.abs(e) <= _X_RANGE, 0, e).astype(jnp.int32)


class Units(eqx.Module):
    """The scales of one problem (see the module docstring); every method maps between user and solver units."""

    x_exp: Int[Array, ""]  # e: X = 2^e X̃ (0 for ordinary data)
    y_exp: Int[Array, ""]  # f and
    y_root: Scalar  # √v: y = 2^f √v ỹ, u = 4^f v
    rescale_x: bool = eqx.field(static=True, default=True)  # False: e = 0 is known, X̃ is X (no copy)

    def data(self, X: Float[Array, "n *k d"], Y: Float[Array, "n c"]) -> tuple[Array, Array]:
        """(X̃, ỹ)."""
        X = jnp.ldexp(X, -self.x_exp) if self.rescale_x else X
        return X, jnp.ldexp(Y, -self.y_exp) / self.y_root

    def lam_in(self, lam: Scalar) -> Scalar:
        """λ̃ = λ / (2^e σ), kept finite (a λ̃ beyond the dtype's range zeroes every group as surely)."""
        scaled = jnp.ldexp(lam / self.y_root, -self.x_exp - self.y_exp)
        return jnp.minimum(scaled, jnp.finfo(scaled.dtype).max)

    def lam_out(self, lam: Scalar) -> Scalar:
        return jnp.ldexp(lam * self.y_root, self.x_exp + self.y_exp)

    def weights_in(self, W: Array) -> Array:
        """W̃ = (2^e / σ) W."""
        return jnp.ldexp(W, self.x_exp - self.y_exp) / self.y_root

    def weights_out(self, W: Array) -> Array:
        return jnp.ldexp(W * self.y_root, self.y_exp - self.x_exp)

    def objective_out(self, value: Scalar) -> Scalar:
        """σ² õbjective: objectives and gaps in the user's units."""
        return jnp.ldexp(value * (self.y_root * self.y_root), 2 * self.y_exp)

    def step_out(self, step: Scalar) -> Scalar:
        """A proximal-gradient step η̃ in W̃ as a step in W: η = η̃ / 4^e."""
        return jnp.ldexp(step, -2 * self.x_exp)

    def weight_penalty_out(self, rho: Scalar) -> Scalar:
        """A penalty ρ̃ on ‖W̃ − Ṽ‖² (ADMM's) as one on ‖W − V‖²: ρ = 4^e ρ̃."""
        return jnp.ldexp(rho, 2 * self.x_exp)

    def status_out(self, status: Int[Array, ""], objective: Scalar, gap: Scalar, weights: Array) -> Int[Array, ""]:
        """NONFINITE where the answer in the user's units does not fit the dtype (an objective past its
        largest value, say), else the solver's status."""
        fits = jnp.isfinite(objective) & jnp.isfinite(gap) & jnp.all(jnp.isfinite(weights))
        return jnp.where(fits, status, Status.NONFINITE).astype(jnp.int32)


def target_scale(Y: Float[Array, "n c"], loss: _losses.Loss, N: int, rows: Rows | None = None) -> tuple[Array, Array]:
    """(f, √v) with σ = 2^f √v, σ² = u the objective's unit: for the squared loss the targets' variance
    averaged over outputs (at least eps times their mean square; 1 for all-zero targets), else 1."""
    if not isinstance(loss, _losses.Squared):
        return jnp.zeros((), jnp.int32), jnp.ones((), Y.dtype)
    n = N // Y.shape[1]  # the squared loss's N is n·c, over the real rows of every shard
    y_exp = _exponent(row_max(jnp.abs(Y), rows))
    Yhat = jnp.ldexp(Y, -y_exp)  # |ŷ| < 1: its squares cannot overflow
    mean = row_column_sum(Yhat, rows) / n
    variance = row_column_sum(jnp.square(Yhat - mean[None]), rows) / n
    mean_square = row_column_sum(jnp.square(Yhat), rows) / n
    v = jnp.maximum(jnp.mean(variance), jnp.finfo(Y.dtype).eps * jnp.mean(mean_square))
    return y_exp, jnp.where(v > 0, jnp.sqrt(v), 1).astype(Y.dtype)


def units_of(
    X: Float[Array, "n *k d"],
    Y: Float[Array, "n c"],
    loss: _losses.Loss,
    N: int,
    rows: Rows | None = None,
    rescale_x: bool = True,
) -> Units:
    """The `Units` of a problem: X (n, d), targets Y (n, c) as the loss takes them and its normaliser N.

    On row-sharded data (`rows` set) every maximum and sum covers all shards. `rescale_x` (static; see
    `rescales_top`) False: X is known to need no scaling.
    """
    y_exp, y_root = target_scale(Y, loss, N, rows)
    x_exp = _x_exponent(row_max(jnp.abs(X), rows)) if rescale_x else jnp.zeros((), jnp.int32)
    return Units(x_exp=x_exp, y_exp=y_exp, y_root=y_root, rescale_x=rescale_x)
