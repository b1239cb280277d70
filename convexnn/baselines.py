"""The non-convex route, for comparison: the same two-layer network trained by a first-order optimizer.

    min_{W1, w2}  L(act(X W1) w2, y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F)

is the objective `network_objective` evaluates and whose optimum the convex programs certify (the loss
objects are the same, so the numbers are directly comparable). Training is one jitted `lax.scan` over
`steps` optimizer updates; the objective at every step is recorded, so the convex and non-convex routes
can share one plot of objective against time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from . import _validate
from . import losses as _losses
from .networks import Network

__all__ = ["Trained", "init_network", "train_network"]


class Trained(NamedTuple):
    """What `train_network` returns.

    Attributes:
        network: the trained `Network` (W1 (d, m), w2 (m, c)).
        objective: (steps,) the objective L + (λ/2)(‖W1‖² + ‖w2‖²) before each update.
        final_objective: the objective of `network` (after the last update).
        opt_state: the optimizer state, to resume with `train_network(..., init=network, opt_state=...)`.
    """

    network: Network
    objective: Float[Array, " steps"]
    final_objective: Float[Array, ""]
    opt_state: Any


def init_network(
    key: PRNGKeyArray, d: int, width: int, c: int = 1, *, dtype: Any = jnp.float32, gates: ArrayLike | None = None
) -> Network:
    """He initialisation: W1 ~ N(0, 2/d) (d, m), w2 ~ N(0, 1/m) (m, c); a 1-output network predicts (n,)."""
    if int(d) <= 0 or int(width) <= 0 or int(c) <= 0:
        raise ValueError(f"d, width and c must be positive; got d={d}, width={width}, c={c}")
    k1, k2 = jax.random.split(key)
    W1 = jax.random.normal(k1, (d, width), dtype) * jnp.asarray(np.sqrt(2.0 / d), dtype)
    w2 = jax.random.normal(k2, (width, c), dtype) * jnp.asarray(np.sqrt(1.0 / width), dtype)
    G = None if gates is None else jnp.asarray(gates, dtype)
    if G is not None and G.shape != (d, width):
        raise ValueError(f"gates must be (d, width) = {(d, width)}; got {G.shape}")
    return Network(W1=W1, w2=w2, gates=G, squeeze=c == 1)


def _objective(params: tuple[Array, Array], static: Network, mask: Array, X: Array, Y: Array, lam, loss: _losses.Loss):
    W1, w2 = params
    w2 = jnp.where(mask, w2, jnp.zeros((), w2.dtype))
    net = eqx.tree_at(lambda n: (n.W1, n.w2), static, (W1, w2))
    pred = jnp.matmul(net.hidden(X), w2, precision=lax.Precision.HIGHEST)
    decay = jnp.sum(W1 * W1) + jnp.sum(w2 * w2)
    return loss.value(pred, Y, loss.normaliser(Y)) + 0.5 * lam * decay


@eqx.filter_jit
def _train(net: Network, opt_state, mask, X, Y, lam, steps: int, optimizer, loss):
    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(_objective)(params, net, mask, X, Y, lam, loss)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    (params, opt_state), values = lax.scan(step, ((net.W1, net.w2), opt_state), None, length=steps)
    final = _objective(params, net, mask, X, Y, lam, loss)
    W1, w2 = params
    trained = eqx.tree_at(lambda n: (n.W1, n.w2), net, (W1, jnp.where(mask, w2, jnp.zeros((), w2.dtype))))
    return trained, values, final, opt_state


def train_network(
    X: ArrayLike,
    y: ArrayLike,
    width: int,
    lam: ArrayLike,
    *,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    key: PRNGKeyArray | None = None,
    loss: str | _losses.Loss = "squared",
    gates: ArrayLike | None = None,
    w2_mask: ArrayLike | None = None,
    init: Network | None = None,
    opt_state: Any = None,
) -> Trained:
    """Train a two-layer network on min_{W1,w2} L(relu(X W1) w2, y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F) by `optimizer`.

    The `steps` updates run as one `lax.scan` inside one jitted program; the objective before every update
    is recorded. Compiled programs are cached per optimizer object, so pass the same optimizer to resume
    in chunks (`init=`, `opt_state=`) without recompiling.

    Args:
        X: data (n, d), float32 or float64 (the network's dtype); or patches (n, K, d) (`image_patches`): the
            convolutional network Σ_k act(X_k W1) w2 with `width` filters of d values.
        y: targets as for `solve_gated`: (n,) or (n, c); ±1 labels for "logistic"; integer labels (n,) or
            one-hot rows (n, c) for "cross_entropy".
        width: m, the number of hidden neurons.
        lam: λ ≥ 0, the weight decay (λ/2)(‖W1‖² + ‖w2‖²) that makes the objective equal the convex one.
        optimizer: an optax transformation (default `optax.adam(1e-3)`).
        steps: the number of updates.
        key: PRNG key for the He initialisation (needed unless `init` is given).
        loss: "squared", "logistic", "cross_entropy" or a `Loss`.
        gates: (d, width) fixed gates: train the gated network 1[X G ≥ 0] ⊙ (X W1) instead of relu(X W1).
        w2_mask: (width, c) bool: the entries of w2 that may be non-zero (the others stay 0). With the gates
            and mask of `to_network` (neuron (i, k) has gate g_i and feeds output k only) the network is the
            one the gated convex program describes, so its global minimum is the convex optimum.
        init: a `Network` to start from (its width and gates are used); `opt_state` resumes the optimizer.

    Returns:
        `Trained(network, objective (steps,), final_objective, opt_state)`.
    """
    loss = _losses.get_loss(loss)
    X = jnp.asarray(X)
    if X.ndim not in (2, 3) or not jnp.issubdtype(X.dtype, jnp.floating):
        raise ValueError(
            f"X must be a floating (n, d) array or patches (n, K, d); got shape {X.shape}, dtype {X.dtype}"
        )
    _validate.check_data(X, y, jnp.ones(X.shape[:-1] + (1,), bool), loss)  # shapes, labels, finiteness
    Y = jnp.asarray(loss.prepare_targets(np.asarray(y)), X.dtype)
    Y = Y.reshape(Y.shape[0], -1)
    lam = _validate.check_lam(lam, X.dtype)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    if init is None:
        if key is None:
            raise ValueError("train_network needs a PRNG key (key=jax.random.key(0)) or an initial network (init=)")
        init = init_network(key, X.shape[-1], width, Y.shape[1], dtype=X.dtype, gates=gates)
    elif init.W1.shape != (X.shape[-1], width) or init.w2.shape != (width, Y.shape[1]):
        raise ValueError(
            f"init must have W1 {(X.shape[-1], width)} and w2 {(width, Y.shape[1])}; "
            f"got {init.W1.shape} and {init.w2.shape}"
        )
    c = Y.shape[1]
    mask = jnp.ones((width, c), bool) if w2_mask is None else jnp.asarray(w2_mask, bool)
    if mask.shape != (width, c):
        raise ValueError(f"w2_mask must be (width, c) = {(width, c)}; got {mask.shape}")
    init = eqx.tree_at(lambda n: n.w2, init, jnp.where(mask, init.w2, jnp.zeros((), init.w2.dtype)))
    if opt_state is None:
        with jax.numpy_dtype_promotion("standard"):
            opt_state = optimizer.init((init.W1, init.w2))
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with floats
        net, values, final, opt_state = _train(init, opt_state, mask, X, Y, lam, int(steps), optimizer, loss)
    return Trained(network=net, objective=values, final_objective=final, opt_state=opt_state)
