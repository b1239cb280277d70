"""Benchmark problems: the planted teacher, the gated benchmarks' `Problem`, sharded rows, scikit-learn data.

`make_problem` builds data in float64 and float32 and compares masks computed in both, so call
`machine.enable_x64()` first (the scripts do, in their main()).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import convexnn as cn


def teacher_data(n: int, d: int, seed: int = 0, outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """float64 X (n, d), bias column last, and y = relu(X W*) α* + noise from a planted 4-neuron teacher.

    The same draws as `teacher` in tests/helpers.py, so the same arrays: y is (n,) for one output, else
    (n, outputs).
    """
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.standard_normal((n, d - 1)), np.ones((n, 1))])
    W_t = rng.standard_normal((d, 4))
    tail = () if outputs == 1 else (outputs,)
    alpha = rng.standard_normal((4, *tail))
    y = np.maximum(X @ W_t, 0) @ alpha + 0.1 * rng.standard_normal((n, *tail))
    return X, y


def planted_rows(n: int, d: int, P: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sharding benchmark's host arrays: planted teacher y = relu(X W*) α* + noise in `dtype`, with a bias
    column, and masks from Gaussian gates, computed in blocks of rows (no n×P float temporary)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype)
    X[:, :-1] = rng.standard_normal((n, d - 1), dtype=np.float32)
    X[:, -1] = 1
    W_t = rng.standard_normal((d, 4)).astype(dtype)
    y = (np.maximum(X @ W_t, 0) @ rng.standard_normal(4).astype(dtype)).astype(dtype)
    y += 0.1 * rng.standard_normal(n).astype(dtype)
    gates = rng.standard_normal((d, P)).astype(dtype)
    masks = np.empty((n, P), bool)
    block = 1 << 16
    for start in range(0, n, block):
        masks[start : start + block] = X[start : start + block] @ gates >= 0
    return X, y, masks


def distinct_patterns(X: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pyscnn's `compute_activation_patterns(X, G)`: patterns 1[X g > 0], de-duplicated by `np.unique` over
    columns (which sorts them), the all-zero pattern dropped; returns (patterns, the gates kept).

    pyscnn's own function when pyscnn is installed; otherwise the same steps here, so that the problems (and
    the convexnn rows of the reports) do not depend on whether pyscnn is there.
    """
    try:
        from scnn.activations import compute_activation_patterns
    except ImportError:
        XG = np.matmul(X, G)
        D, index = np.unique((XG > 0).astype(XG.dtype), axis=1, return_index=True)
        keep = np.any(D != 0, axis=0)
        return D[:, keep], G[:, index][:, keep]
    return compute_activation_patterns(X, G)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One planted-teacher problem, in the forms convexnn and its peers need.

    Attributes:
        n, d: rows and columns of X (d counts the bias column).
        P_sampled: gates drawn; P: patterns kept (pyscnn's de-duplication, all-zero pattern dropped).
        X32, y32: the float32 data every timed run sees (NumPy).
        X64, y64: the same values upcast to float64 (exactly representable): the problem p* refers to.
        gates: (d, P) float64 gates kept (float32-representable values).
        masks: (n, P) bool, 1[X g ≥ 0] from those gates; equal to pyscnn's 1[X g > 0].
        min_margin: min |x_j · g_i| over all entries: how far the masks are from a ≥/> tie.
        device: the same X32, y32, X64, y64, masks as JAX arrays, placed once (not re-sent per solve).
    """

    n: int
    d: int
    P_sampled: int
    P: int
    X32: np.ndarray
    y32: np.ndarray
    X64: np.ndarray
    y64: np.ndarray
    gates: np.ndarray
    masks: np.ndarray
    min_margin: float
    device: dict = dataclasses.field(repr=False)

    def data(self, dtype=np.float32) -> tuple[jax.Array, jax.Array]:
        """(X, y) on the device: the float32 timed data, or its float64 upcast."""
        if np.dtype(dtype) == np.float32:
            return self.device["X32"], self.device["y32"]
        return self.device["X64"], self.device["y64"]


def make_problem(n: int, d: int, P: int, seed: int) -> Problem:
    """Planted-teacher data (`teacher_data`) and gates shared by every method, with the masks checked to agree.

    Gates are drawn here (float32 values), passed through `distinct_patterns` (what pyscnn's `optimize_model`
    does internally: strict > 0, np.unique over patterns, all-zero pattern dropped), and convexnn's masks are
    computed from the gates it keeps, in float64 and float32, and checked equal to pyscnn's patterns.
    """
    X, y = teacher_data(n, d, seed)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    X64, y64 = X32.astype(np.float64), y32.astype(np.float64)

    g32 = cn.sample_gates(jax.random.key(seed), d, P, dtype=jnp.float32)
    D_scnn, G_kept = distinct_patterns(X32, np.asarray(g32, np.float64))
    G_kept = np.ascontiguousarray(G_kept)

    masks = np.asarray(cn.activation_masks(jnp.asarray(X64), jnp.asarray(G_kept)))
    if not np.array_equal(masks, D_scnn > 0):
        raise RuntimeError("convexnn's masks (X g >= 0, float64) differ from pyscnn's (X g > 0)")
    masks32 = np.asarray(cn.activation_masks(jnp.asarray(X32), jnp.asarray(G_kept, np.float32)))
    if not np.array_equal(masks, masks32):
        raise RuntimeError("masks computed in float32 and float64 differ: a pattern sits on a tie")
    margin = float(np.min(np.abs(X64 @ G_kept)))
    device = {k: jnp.asarray(v) for k, v in dict(X32=X32, y32=y32, X64=X64, y64=y64, masks=masks).items()}
    return Problem(n, d, P, G_kept.shape[1], X32, y32, X64, y64, G_kept, masks, margin, device)


def make_objective64(prob: Problem, lams64: np.ndarray) -> Callable[[Any], np.ndarray]:
    """obj64(W_k) = ½ mean((Σ_i D_i X w_i − y)²) + λ_k Σ_i ‖w_i‖₂ in float64 for stacked (m, P, d) weights, one
    per λ of `lams64` (a lax.map over λ, so that large sizes do not hold m residuals at once)."""
    X, y, masks = prob.device["X64"], prob.device["y64"], prob.device["masks"]
    lams = jnp.asarray(lams64, jnp.float64)
    shape = (len(lams64), prob.P, prob.d)

    @jax.jit
    def f(Ws):
        def one(args):
            W, lam = args
            r = cn.operators.gated_forward(X, masks, W) - y
            return 0.5 * jnp.mean(r * r) + lam * jnp.sum(jnp.linalg.norm(W, axis=1))

        return jax.lax.map(one, (Ws, lams))

    def objective64(Ws) -> np.ndarray:
        Ws = np.asarray(Ws, np.float64)
        if Ws.shape != shape:
            raise ValueError(f"weights must be {shape}; got {Ws.shape}")
        return np.asarray(f(jnp.asarray(Ws)))

    return objective64


def make_single_objective64(prob: Problem, lam: float) -> Callable[[Any], float]:
    """`make_objective64` for one λ and one (P, d) weight matrix: obj64(W) as a Python float."""
    many = make_objective64(prob, np.array([lam]))
    return lambda W: float(many(np.asarray(W, np.float64)[None])[0])


def rel_subopt(objective: Any, p_star: Any) -> Any:
    """(objective − p*) / |p*|, for floats or per-λ arrays."""
    return (objective - p_star) / np.abs(p_star)


SKLEARN_DATASETS = ("breast_cancer", "wine", "digits", "diabetes")
REGRESSION = {"diabetes"}


def sklearn_split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, X_test, y_train, y_test) of one of scikit-learn's bundled data sets (`SKLEARN_DATASETS`),
    split once by train_test_split(test_size=0.25, random_state=0)."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0)
