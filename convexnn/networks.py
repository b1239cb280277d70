"""Two-layer networks read off convex solutions, and their non-convex objective.

From a block u ≠ 0 of a solution, the neuron w = u / √‖u‖ with output weight α = √‖u‖ (α = −√‖v‖ for
a block v of the exact ReLU program) has ‖w‖² + α² = 2‖u‖, so the weight-decay objective

    L(relu(X W1) w2, y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F)

of the network equals the convex objective, and on the training data relu(X w) α = D X u whenever u
satisfies its cone constraint. For gated solutions the network keeps the gates: neuron j computes
1[x·g_j ≥ 0] (x·w_j) α_j.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from . import _validate
from . import losses as _losses
from .solution import Solution

__all__ = ["Network", "to_network", "network_objective"]


class Network(eqx.Module):
    """f(X) = act(X W1) w2, with act = relu, or the gate 1[X G ≥ 0] ⊙ (X W1) when `gates` is set.

    Attributes:
        W1: first layer (d, m); w2: second layer (m, c); gates: (d, m) or None.
        squeeze: return (n,) rather than (n, 1) predictions.
    """

    W1: Float[Array, "d m"]
    w2: Float[Array, "m c"]
    gates: Float[Array, "d m"] | None = None
    squeeze: bool = eqx.field(static=True, default=False)

    def _check_input(self, X: Array) -> None:
        d = self.W1.shape[0]
        if X.ndim not in (1, 2) or X.shape[-1] != d:
            raise ValueError(f"X must be (n, d), or (d,) for one sample, with d = {d}; got shape {X.shape}")

    def hidden(self, X: Float[Array, "*n d"]) -> Float[Array, "*n m"]:
        """act(X W1): the hidden layer's activations, (n, m) for X (n, d) and (m,) for one sample x (d,)."""
        X = jnp.asarray(X)
        self._check_input(X)
        pre = jnp.matmul(X, self.W1, precision=jax.lax.Precision.HIGHEST)
        if self.gates is None:
            return jax.nn.relu(pre)
        on = jnp.matmul(X, self.gates, precision=jax.lax.Precision.HIGHEST) >= 0
        return jnp.where(on, pre, jnp.zeros((), pre.dtype))

    def __call__(self, X: Float[Array, "*n d"]) -> Float[Array, "..."]:
        """f(X) = act(X W1) w2.

        Args:
            X: rows (n, d), or one sample x (d,).

        Returns:
            predictions (n, c), or (n,) when `squeeze`; for one sample (c,), or a scalar when `squeeze`.
        """
        out = jnp.matmul(self.hidden(X), self.w2, precision=jax.lax.Precision.HIGHEST)
        return out[..., 0] if self.squeeze else out

    @property
    def width(self) -> int:
        return self.W1.shape[1]

    def prune(self) -> Network:
        """The same function without its zero neurons (on the host: the width depends on the values)."""
        keep = np.flatnonzero(np.any(np.asarray(self.W1) != 0, axis=0) & np.any(np.asarray(self.w2) != 0, axis=1))
        gates = None if self.gates is None else self.gates[:, keep]
        return Network(W1=self.W1[:, keep], w2=self.w2[keep], gates=gates, squeeze=self.squeeze)


def _neurons(W: Array, sign: float) -> tuple[Array, Array]:
    """Neurons of blocks W (P, d, c): first layer (d, P·c) and second layer (P·c, c)."""
    P, d, c = W.shape
    norms = jnp.sqrt(jnp.sum(W * W, axis=1))  # (P, c)
    root = jnp.sqrt(norms)
    safe = jnp.where(root > 0, root, 1)
    W1 = jnp.moveaxis(W / safe[:, None, :], 1, 0).reshape(d, P * c)  # column (i, k)
    alpha = sign * root.reshape(P * c)
    w2 = alpha[:, None] * jnp.tile(jnp.eye(c, dtype=W.dtype), (P, 1))  # neuron (i, k) feeds output k
    return W1, w2


def to_network(solution: Solution, gates: ArrayLike | None = None) -> Network:
    """The network of a solution: w = u/√‖u‖, α = √‖u‖ per non-zero block (α = −√‖v‖ for the V blocks).

    Args:
        solution: from `solve_relu` (weights (U, V)) or `solve_gated` (weights W; then `gates` is needed), for a
            single λ: of a path from `solve_path`, pass one point, `path[k]`.
        gates: the gate vectors (d, P) a gated solution was solved with.

    Returns:
        a `Network` with one neuron per block and output (zero neurons included, so it jits and vmaps;
        `Network.prune()` drops them). Its non-convex objective equals the solution's convex objective.
    """
    lead = jnp.shape(solution.status)
    if lead:
        raise ValueError(
            f"solution must be for a single λ; got fields with a leading axis of shape {lead} (a path from "
            "solve_path, or a batch of solves): pick one λ with solution[k], as in to_network(path[k], gates)"
        )
    weights = solution.weights
    if isinstance(weights, tuple | list):
        U, V = weights
        squeeze = U.ndim == 2
        U3, V3 = (U[..., None], V[..., None]) if squeeze else (U, V)
        Wu, au = _neurons(U3, 1.0)
        Wv, av = _neurons(V3, -1.0)
        return Network(W1=jnp.concatenate([Wu, Wv], axis=1), w2=jnp.concatenate([au, av]), squeeze=squeeze)
    if gates is None:
        raise ValueError("a gated solution needs its gates: to_network(solution, gates)")
    W = weights
    squeeze = W.ndim == 2
    W3 = W[..., None] if squeeze else W
    G = jnp.asarray(gates, W3.dtype)
    if G.shape != (W3.shape[1], W3.shape[0]):
        raise ValueError(f"gates must be (d, P) = {(W3.shape[1], W3.shape[0])}; got {G.shape}")
    W1, w2 = _neurons(W3, 1.0)
    c = W3.shape[2]
    return Network(W1=W1, w2=w2, gates=jnp.repeat(G, c, axis=1), squeeze=squeeze)


def network_objective(
    net: Network, X: ArrayLike, y: ArrayLike, lam: ArrayLike, loss: str | _losses.Loss = "squared"
) -> jax.Array:
    """L(f(X), y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F): the non-convex training objective of a network."""
    loss = _losses.get_loss(loss)
    X = jnp.asarray(X)
    yv = _validate.concrete(y)
    Y = jnp.asarray(loss.prepare_targets(yv) if yv is not None else y, X.dtype)
    Y = Y.reshape(Y.shape[0], -1)
    pred = net(X)
    pred = pred[:, None] if pred.ndim == 1 else pred
    decay = jnp.sum(net.W1 * net.W1) + jnp.sum(net.w2 * net.w2)
    return loss.value(pred, Y, loss.normaliser(Y)) + 0.5 * lam * decay
