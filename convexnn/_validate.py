"""Checks at the public boundary: shapes and dtypes from static metadata, values on the host.

Shape and dtype checks read only `.shape`/`.dtype`, so they also run while a caller traces. Value checks
(non-finite entries, λ < 0, label sets) need concrete arrays; when the caller is tracing they are skipped
here and the solver reports a non-finite run through its status instead.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import losses as _losses

__all__ = ["concrete", "check_data", "check_host_data", "check_lam", "check_lams", "check_positive", "check_init"]


def concrete(x: Any) -> np.ndarray | None:
    """x as a NumPy array, or None when x is being traced."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _finite_or_raise(name: str, x: Any) -> None:
    v = concrete(x)
    if v is not None and v.size and not np.all(np.isfinite(v)):
        bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
        raise ValueError(f"{name} must be finite; got {bad} NaN or inf entries")


def check_data(X: Any, y: Any, masks: Any, loss: _losses.Loss) -> tuple[jax.Array, jax.Array, jax.Array, bool]:
    """Validate (X, y, masks) and return X, y as (n, c) in X's dtype, masks as bool, and whether y was 1-D.

    Raises:
        ValueError: naming the argument, what was expected and what came.
    """
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n, d) array; got shape {tuple(X.shape)}")
    n, d = X.shape
    if n == 0:
        raise ValueError("X must have at least one row (n = 0)")
    if d == 0:
        raise ValueError("X must have at least one column (d = 0)")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        raise ValueError(f"X must have a floating dtype (float32 or float64); got {X.dtype}")
    _finite_or_raise("X", X)

    if not hasattr(masks, "shape"):
        masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[0] != n:
        raise ValueError(f"masks must be (n, P) with n = {n}; got shape {tuple(masks.shape)}")
    if masks.shape[1] == 0:
        raise ValueError("masks must have at least one pattern (P = 0)")
    if masks.dtype != bool:
        if not jnp.issubdtype(masks.dtype, jnp.integer):
            raise ValueError(f"masks must be bool or 0/1 integers; got dtype {masks.dtype}")
        m = concrete(masks)
        if m is not None and not np.isin(m, (0, 1)).all():
            raise ValueError("masks must hold only 0 and 1")
        masks = jnp.asarray(masks) != 0

    if not hasattr(y, "shape"):
        y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be (n,) or (n, c) with n = {n}; got shape {tuple(y.shape)}")
    squeeze = y.ndim == 1
    yv = concrete(y)
    if yv is not None:
        _finite_or_raise("y", yv)
        Y = loss.prepare_targets(yv)
        squeeze = squeeze and Y.shape[1] == 1
        Y = jnp.asarray(Y, dtype=X.dtype)
    else:
        if isinstance(loss, _losses.CrossEntropy) and y.ndim == 1:
            raise ValueError("y must be one-hot (n, c) for cross_entropy when traced (labels need values)")
        Y = jnp.asarray(y, dtype=X.dtype).reshape(n, -1)
    if Y.shape[1] == 0:
        raise ValueError("y must have at least one output column (c = 0)")
    return jnp.asarray(X), Y, jnp.asarray(masks, dtype=bool), squeeze


def check_host_data(
    X: Any, y: Any, masks: Any, loss: _losses.Loss, c: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """As `check_data`, on the host: NumPy X (n, d), y (n, c) in X's dtype, bool masks, and whether y was 1-D.

    Nothing is placed on a device (for data that will be split over many). `c`: the number of classes for
    integer cross-entropy labels, when these rows are only part of the data.

    Raises:
        ValueError: naming the argument, what was expected and what came.
    """
    X, y, masks = np.asarray(X), np.asarray(y), np.asarray(masks)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n, d) array; got shape {X.shape}")
    n, d = X.shape
    if d == 0:
        raise ValueError("X must have at least one column (d = 0)")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"X must have a floating dtype (float32 or float64); got {X.dtype}")
    _finite_or_raise("X", X)
    if masks.ndim != 2 or masks.shape[0] != n:
        raise ValueError(f"masks must be (n, P) with n = {n}; got shape {masks.shape}")
    if masks.shape[1] == 0:
        raise ValueError("masks must have at least one pattern (P = 0)")
    if masks.dtype != bool:
        if not np.issubdtype(masks.dtype, np.integer):
            raise ValueError(f"masks must be bool or 0/1 integers; got dtype {masks.dtype}")
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must hold only 0 and 1")
        masks = masks != 0
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be (n,) or (n, c) with n = {n}; got shape {y.shape}")
    _finite_or_raise("y", y)
    Y = loss.prepare_targets(y, c) if n else y.reshape(0, c or (y.shape[1] if y.ndim == 2 else 1))
    if Y.shape[1] == 0:
        raise ValueError("y must have at least one output column (c = 0)")
    return X, np.asarray(Y, dtype=X.dtype), masks, y.ndim == 1 and Y.shape[1] == 1


def check_lam(lam: Any, dtype: Any) -> jax.Array:
    """λ as a scalar array of `dtype`; must be finite and ≥ 0."""
    lam_arr = jnp.asarray(lam)
    if lam_arr.ndim != 0:
        raise ValueError(f"lam must be a scalar; got shape {lam_arr.shape} (use solve_path or vmap for many)")
    v = concrete(lam)
    if v is not None:
        if not np.isfinite(v):
            raise ValueError(f"lam must be finite; got {float(v)}")
        if v < 0:
            raise ValueError(f"lam must be >= 0; got {float(v)}")
    return lam_arr.astype(dtype)


def check_lams(lams: Any, dtype: Any) -> jax.Array:
    """λ values for a path: a non-empty 1-D array of finite values ≥ 0, in `dtype`."""
    arr = jnp.asarray(lams)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"lams must be a non-empty 1-D array; got shape {arr.shape}")
    v = concrete(lams)
    if v is not None:
        if not np.all(np.isfinite(v)):
            raise ValueError("lams must be finite")
        if np.any(v < 0):
            raise ValueError(f"lams must be >= 0; got min {float(np.min(v))}")
    return arr.astype(dtype)


def check_positive(name: str, value: Any, dtype: Any, integer: bool = False) -> jax.Array:
    """A positive scalar option (tol, max_iters) as an array, so that changing it never recompiles."""
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {arr.shape}")
    v = concrete(value)
    if v is not None and not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0; got {v}")
    return arr.astype(jnp.int32 if integer else dtype)


def check_init(init: Any, P: int, d: int, c: int, squeeze: bool, dtype: Any) -> jax.Array:
    """Initial weights as (P, d, c); accepts (P, d) for a single output."""
    expected = (P, d) if squeeze else (P, d, c)
    shape = tuple(init.shape) if hasattr(init, "shape") else np.shape(init)
    if shape != expected:
        raise ValueError(f"init must have shape {expected}; got {shape}")
    _finite_or_raise("init", init)
    W0 = jnp.asarray(init, dtype=dtype)
    return W0[..., None] if squeeze else W0
