"""Activation patterns: gate vectors, the masks they induce, and mask de-duplication.

A gate g ∈ R^d induces the pattern m = 1[X g ≥ 0] ∈ {0, 1}^n, i.e. D = diag(m). The convex program has one
block of weights per pattern, so the masks (n, P) are the only thing the solvers need from the gates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

__all__ = ["sample_gates", "activation_masks", "deduplicate_masks"]


def sample_gates(
    key: PRNGKeyArray, d: int, num_gates: int, dtype: DTypeLike = jnp.float32
) -> Float[Array, "d p"]:
    """Gate vectors g_1, …, g_P ~ N(0, I_d), stacked as the columns of a (d, P) matrix.

    Args:
        key: a JAX PRNG key.
        d: the number of features (columns of X).
        num_gates: P, the number of gates (patterns) to draw.
        dtype: floating dtype of the gates.

    Returns:
        gates of shape (d, P).
    """
    if int(d) <= 0:
        raise ValueError(f"d must be a positive integer; got {d}")
    if int(num_gates) <= 0:
        raise ValueError(f"num_gates must be a positive integer; got {num_gates}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    return jax.random.normal(key, (int(d), int(num_gates)), dtype=dtype)


def activation_masks(X: ArrayLike, gates: ArrayLike) -> Bool[Array, "n p"]:
    """masks[j, i] = 1[x_j · g_i ≥ 0]: the activation pattern of every gate on every row of X.

    The non-strict inequality is this library's convention (scnn uses > 0); the gates' order is kept.

    Args:
        X: data, (n, d) float.
        gates: gate vectors as columns, (d, P).

    Returns:
        masks, a boolean (n, P) array.
    """
    X = jnp.asarray(X)
    gates = jnp.asarray(gates)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n, d) array; got shape {X.shape}")
    if gates.ndim != 2 or gates.shape[0] != X.shape[1]:
        raise ValueError(f"gates must be (d, P) with d = {X.shape[1]}; got shape {gates.shape}")
    return jnp.matmul(X, gates, precision=jax.lax.Precision.HIGHEST) >= 0


def deduplicate_masks(
    masks: ArrayLike, *, drop_empty: bool = False
) -> tuple[Bool[Array, "n q"], Int[Array, " q"]]:
    """Keep the first occurrence of every distinct column of `masks`, in the original order.

    Duplicate patterns give the convex program identical blocks, which changes nothing in its optimum
    but costs time. This runs on the host (its output shape depends on the values), so call it before
    solving, not inside a jitted function.

    Args:
        masks: (n, P) boolean masks.
        drop_empty: also drop the all-zero pattern (a block that can never affect predictions).

    Returns:
        (unique_masks, kept): the (n, Q) distinct masks and the indices (Q,) of the columns kept, so that
        `gates[:, kept]` are the matching gates.
    """
    m = np.asarray(masks)
    if m.ndim != 2:
        raise ValueError(f"masks must be a 2-D (n, P) array; got shape {m.shape}")
    packed = np.packbits(m.astype(bool), axis=0)
    _, first = np.unique(packed, axis=1, return_index=True)
    kept = np.sort(first)
    if drop_empty:
        kept = kept[m[:, kept].any(axis=0)]
    return jnp.asarray(m[:, kept], dtype=bool), jnp.asarray(kept, dtype=jnp.int32)
