"""Activation patterns: gate vectors, the masks they induce, and mask de-duplication.

A gate g ∈ R^d induces the pattern m = 1[X g ≥ 0] ∈ {0, 1}^n, i.e. D = diag(m). The convex program has one
block of weights per pattern, so the masks (n, P) are the only thing the solvers need from the gates.
On image patches (n, K, h) a gate g ∈ R^h is a filter and its pattern is one per position, (n, K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from . import operators

__all__ = ["sample_gates", "activation_masks", "deduplicate_masks", "enumerate_masks"]


def sample_gates(key: PRNGKeyArray, d: int, num_gates: int, dtype: DTypeLike = jnp.float32) -> Float[Array, "d p"]:
    """Gate vectors g_1, …, g_P ~ N(0, I_d), stacked as the columns of a (d, P) matrix.

    The draw is always made in float32 and then cast to `dtype`, so one key gives the same gates (the
    float64 gates are exactly the float32 ones) in every precision, and switching precision does not change
    the problem.

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
    return jax.random.normal(key, (int(d), int(num_gates)), dtype=jnp.float32).astype(dtype)


def activation_masks(X: ArrayLike, gates: ArrayLike) -> Bool[Array, "n *k p"]:
    """masks[j, i] = 1[x_j · g_i ≥ 0]: the activation pattern of every gate on every row of X.

    For patches X (n, K, h) (`image_patches`), masks[j, k, i] = 1[x_jk · g_i ≥ 0]: a pattern per position.
    The non-strict inequality is this library's convention (scnn uses > 0); the gates' order is kept.

    Args:
        X: data, (n, d) float, or patches (n, K, h).
        gates: gate vectors as columns, (d, P) (d = h for patches).

    Returns:
        masks, a boolean (n, P) array, or (n, K, P) for patches.
    """
    X = jnp.asarray(X)
    gates = jnp.asarray(gates)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be a 2-D (n, d) array or patches (n, K, h); got shape {X.shape}")
    if gates.ndim != 2 or gates.shape[0] != X.shape[-1]:
        raise ValueError(f"gates must be (d, P) with d = {X.shape[-1]}; got shape {gates.shape}")
    return operators.masks_from_gates(X, gates)


def deduplicate_masks(masks: ArrayLike, *, drop_empty: bool = False) -> tuple[Bool[Array, "n q"], Int[Array, " q"]]:
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


def enumerate_masks(X: ArrayLike) -> Bool[Array, "n q"]:
    """Every distinct activation pattern {1[X g ≥ 0] : g ∈ R^d} of data with d ≤ 3 columns.

    The patterns are the cells of the arrangement of the hyperplanes {g : x_j·g = 0} (a boundary point
    gives the pattern of the cell on its non-negative side), so each is found at a point inside a cell:
    for d = 3, near every vertex x_a × x_b of the arrangement on the sphere; for d = 2, between
    consecutive critical angles; for d = 1, on either side of 0. With a bias column, 2-D points in general
    position give exactly n² − n + 2 patterns. With all of them, the exact ReLU program's optimum is the
    global optimum of the non-convex network (for enough neurons).

    Args:
        X: data (n, d) with d ≤ 3 (include the bias column yourself if you want one).

    Returns:
        bool masks (n, Q), one column per distinct pattern, the all-ones pattern among them.

    Raises:
        ValueError: for d > 3, where the number of patterns grows like O(n^(d−1)) and the enumeration
            here is not implemented; sample gates instead (`sample_gates`, `activation_masks`).
    """
    Xn = np.asarray(X, dtype=np.float64)
    if Xn.ndim != 2 or Xn.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D (n, d) array; got shape {Xn.shape}")
    n, d = Xn.shape
    if d > 3:
        raise ValueError(
            f"enumerate_masks handles d <= 3 columns (e.g. 2 features and a bias); got d = {d}. The number of "
            "patterns grows like n^(d-1): sample gates with sample_gates and activation_masks instead"
        )
    if not np.all(np.isfinite(Xn)):
        raise ValueError("X must be finite")
    scale = np.max(np.abs(Xn)) or 1.0
    Xs = Xn / scale
    if d == 1:
        points = np.array([[1.0], [-1.0]])
    elif d == 2:
        angles = np.arctan2(Xs[:, 1], Xs[:, 0])
        critical = np.sort(np.mod(np.concatenate([angles + np.pi / 2, angles - np.pi / 2]), 2 * np.pi))
        nxt = np.roll(critical, -1)
        nxt[-1] += 2 * np.pi
        mids = (critical + nxt) / 2
        points = np.stack([np.cos(mids), np.sin(mids)], axis=1)
    else:
        rows = Xs[np.linalg.norm(Xs, axis=1) > 0]
        a, b = np.triu_indices(rows.shape[0], k=1)
        vertices = np.cross(rows[a], rows[b])
        norms = np.linalg.norm(vertices, axis=1)
        vertices = vertices[norms > 1e-12] / norms[norms > 1e-12, None]
        # Around each vertex, step off along ±(one plane's normal) ± (the other's): one point per cell.
        na = rows[a][norms > 1e-12]
        nb = rows[b][norms > 1e-12]
        na = na / np.linalg.norm(na, axis=1, keepdims=True)
        nb = nb / np.linalg.norm(nb, axis=1, keepdims=True)
        eps = 1e-6
        offsets = [sa * na + sb * nb for sa in (1, -1) for sb in (1, -1)]
        points = np.concatenate([s * vertices + eps * o for s in (1, -1) for o in offsets])
        points = np.concatenate([points, np.eye(3), -np.eye(3)])  # cells without vertices (tiny n)
    patterns = Xs @ points.T >= 0
    patterns = np.concatenate([patterns, np.ones((n, 1), bool)], axis=1)  # g = 0
    unique = deduplicate_masks(patterns)[0]
    return unique
