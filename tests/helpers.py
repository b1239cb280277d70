"""The problem zoo shared by the tests: small real and planted problems with user-visible shapes."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    name: str
    X: jax.Array  # (n, d)
    y: jax.Array  # (n,) or (n, c) as the user passes it
    masks: jax.Array  # (n, P) bool
    loss: str


def _with_bias(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _standardize(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)


def _masks(X: np.ndarray, P: int, seed: int, dtype) -> jax.Array:
    """Masks from float64 gates and data, so that every dtype of a problem has the same patterns."""
    gates = np.random.default_rng(seed + 1000).standard_normal((X.shape[1], P))
    return jnp.asarray(np.asarray(X, np.float64) @ gates >= 0)


def teacher(n: int = 250, d: int = 8, P: int = 50, seed: int = 0, dtype=jnp.float64, outputs: int = 1) -> Problem:
    """y = relu(X W*) α* + noise from a planted 4-neuron teacher; y is (n,) for one output, else (n, outputs)."""
    rng = np.random.default_rng(seed)
    X = _with_bias(rng.standard_normal((n, d - 1)))
    W_t = rng.standard_normal((d, 4))
    tail = () if outputs == 1 else (outputs,)
    alpha = rng.standard_normal((4, *tail))
    y = np.maximum(X @ W_t, 0) @ alpha + 0.1 * rng.standard_normal((n, *tail))
    name = "teacher" if outputs == 1 else f"teacher-{outputs}"
    return Problem(name, jnp.asarray(X, dtype), jnp.asarray(y, dtype), _masks(X, P, seed, dtype), "squared")


def diabetes(n: int = 300, P: int = 60, seed: int = 0, dtype=jnp.float64) -> Problem:
    """scikit-learn's diabetes (its own scaling, raw targets), as in PEERS.md."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X[:n], y[:n]
    return Problem("diabetes", jnp.asarray(X, dtype), jnp.asarray(y, dtype), _masks(X, P, seed, dtype), "squared")


def breast_cancer(n: int = 300, P: int = 20, seed: int = 0, dtype=jnp.float64) -> Problem:
    """scikit-learn's breast_cancer, standardized with a bias column, labels in {−1, +1}."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = _with_bias(_standardize(X))[:n]
    y = (2.0 * y - 1.0)[:n]
    return Problem("breast_cancer", jnp.asarray(X, dtype), jnp.asarray(y, dtype), _masks(X, P, seed, dtype), "logistic")


def digits(n: int = 300, P: int = 16, seed: int = 0, loss: str = "squared", dtype=jnp.float64) -> Problem:
    """scikit-learn's digits scaled to [0, 1] with a bias column; 10 outputs (one-hot)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = _with_bias(X[:n] / 16.0)
    Y = np.eye(10)[y[:n]]
    return Problem(f"digits-{loss}", jnp.asarray(X, dtype), jnp.asarray(Y, dtype), _masks(X, P, seed, dtype), loss)


def random_operands(seed: int, n: int, d: int, p: int, c: int | None = None, dtype=jnp.float64):
    """Random X (n, d), masks (n, p), W (p, d[, c]) and R (n[, c]) for operator identities."""
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal((n, d)), dtype)
    masks = jnp.asarray(rng.random((n, p)) < 0.5)
    wshape = (p, d) if c is None else (p, d, c)
    rshape = (n,) if c is None else (n, c)
    W = jnp.asarray(rng.standard_normal(wshape), dtype)
    R = jnp.asarray(rng.standard_normal(rshape), dtype)
    return X, masks, W, R


def relu_optimum(p: Problem, lam: float, relax=None) -> float:
    """p* of the exact ReLU program of `p` at λ: cvxpy + Clarabel in float64 on the targets as the solvers see them
    (with relax = (E_U, E_V): p*_E, each cone constraint relaxed by its entry of E; `cone_violations`)."""
    from convexnn import losses

    from .reference import clarabel_relu

    Y = losses.get_loss(p.loss).prepare_targets(np.asarray(p.y))
    return clarabel_relu(p.X, Y, p.masks, lam, p.loss, relax=relax)


def cone_violations(X, masks, weights) -> tuple[np.ndarray, np.ndarray]:
    """E = (−(2D_i − I) X u_ik)₊ for each row j, block i and output k of an exact ReLU solution's U and V, (n, P, c)."""
    S = 2.0 * np.asarray(masks, np.float64) - 1.0
    out = []
    for W in weights:
        W = np.asarray(W, np.float64)
        W = W[..., None] if W.ndim == 2 else W
        out.append(np.maximum(-S[:, :, None] * np.einsum("nd,pdc->npc", np.asarray(X, np.float64), W), 0))
    return out[0], out[1]
