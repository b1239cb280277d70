"""Images as patches: the data of a convolutional network, X (n, K, h) for the convex program.

A two-layer CNN with m filters w_j of size s₁×s₂ over C channels and global sum pooling computes
f(x) = Σ_j α_j Σ_k relu(x_k · w_j), x_k the k-th patch of the image flattened to h = s₁·s₂·C values.
`image_patches` extracts those patches, in row-major order of their top-left corners and, within a patch,
in (row, column, channel) order, so a filter is a (s₁, s₂, C) array flattened the same way.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float

__all__ = ["image_patches", "patch_grid"]


def _pair(name: str, value: Any) -> tuple[int, int]:
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be a positive integer or a pair of them; got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive; got {value!r}")
    return int(pair[0]), int(pair[1])


def _geometry(shape: tuple[int, ...], size: Any, stride: Any, padding: str) -> tuple[tuple, tuple, tuple]:
    if len(shape) not in (3, 4):
        raise ValueError(f"images must be (n, H, W) or (n, H, W, C); got shape {tuple(shape)}")
    size, stride = _pair("size", size), _pair("stride", stride)
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'; got {padding!r}")
    H, W = shape[1], shape[2]
    if padding == "valid" and (size[0] > H or size[1] > W):
        raise ValueError(f"size {size} is larger than the images ({H}, {W}) with padding='valid'")
    return size, stride, (H, W)


def patch_grid(image_shape: Any, size: Any, stride: Any = 1, padding: str = "valid") -> tuple[int, int]:
    """The positions (rows, columns) of the patches `image_patches` extracts: K is their product.

    Args:
        image_shape: (H, W) or (H, W, C).
        size, stride, padding: as in `image_patches`.
    """
    size, stride, (H, W) = _geometry((1, *tuple(image_shape)), size, stride, padding)
    if padding == "same":
        return -(-H // stride[0]), -(-W // stride[1])
    return (H - size[0]) // stride[0] + 1, (W - size[1]) // stride[1] + 1


def image_patches(
    images: ArrayLike, size: Any, stride: Any = 1, padding: str = "valid", *, bias: bool = False
) -> Float[Array, "n k h"]:
    """The patches of every image: x_k ∈ R^h, h = s₁·s₂·C, for the K positions of an s₁×s₂ window.

    "valid" keeps windows inside the image, K = ((H − s₁) // t₁ + 1)·((W − s₂) // t₂ + 1) for strides t;
    "same" pads with zeros as TensorFlow does (K = ⌈H/t₁⌉·⌈W/t₂⌉). One XLA patch extraction
    (`lax.conv_general_dilated_patches`), jit- and vmap-safe.

    Args:
        images: (n, H, W) or (n, H, W, C), float32 or float64 (other real dtypes become float32).
        size: the window, an integer or (s₁, s₂).
        stride: the step between windows, an integer or (t₁, t₂).
        padding: "valid" or "same".
        bias: append a constant 1 to every patch (h = s₁·s₂·C + 1), so that filters and gates have a bias.

    Returns:
        patches (n, K, h), positions in row-major order, each patch flattened in (row, column, channel) order.
    """
    images = jnp.asarray(images)
    size, stride, _ = _geometry(images.shape, size, stride, padding)
    if not jnp.issubdtype(images.dtype, jnp.floating):
        images = images.astype(jnp.float32)
    x = images[..., None] if images.ndim == 3 else images  # (n, H, W, C)
    C = x.shape[-1]
    out = lax.conv_general_dilated_patches(
        x,
        filter_shape=size,
        window_strides=stride,
        padding=padding.upper(),
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )  # (n, H', W', C·s₁·s₂), features ordered (channel, row, column)
    n, Ho, Wo, _ = out.shape
    out = out.reshape(n, Ho, Wo, C, size[0], size[1])
    out = jnp.moveaxis(out, 3, -1)  # (n, H', W', s₁, s₂, C)
    out = out.reshape(n, Ho * Wo, size[0] * size[1] * C)
    return jnp.concatenate([out, jnp.ones((n, Ho * Wo, 1), out.dtype)], axis=2) if bias else out
