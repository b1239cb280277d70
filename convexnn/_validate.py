"""Checks at the public boundary: shapes and dtypes from static metadata, values on the host or in the program.

Shape and dtype checks read only `.shape`/`.dtype`, so they also run while a caller traces. Value checks
(non-finite entries, λ < 0, label sets, 0/1 masks) run on the host for concrete arrays and raise a
`ValueError` before any work; when the caller is tracing (its `jax.jit` or `jax.vmap`), the same checks are
compiled into the program with `eqx.error_if`, so a bad value stops the run with the same message instead
of yielding a solution: no solver ever starts on values outside its domain.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import losses as _losses
from ._units import rescales_top

__all__ = [
    "concrete",
    "check_data",
    "check_host_data",
    "check_lam",
    "check_lams",
    "check_positive",
    "check_init",
    "check_real_dtype",
    "DEFAULT_TOL",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

DEFAULT_TOL = 1e-6  # every solver's `tol=None`


def concrete(x: Any) -> np.ndarray | None:
    """x as a NumPy array, or None when x is being traced."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _traced(x: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def _fail_if(x: Any, bad: Any, message: str) -> Any:
    """x, carrying a check that stops the program with `message` where `bad` holds (any lane, under vmap)."""
    return eqx.error_if(x, bad, message)


def check_real_dtype(name: str, x: Any) -> None:
    """x must hold real numbers: not strings, objects or complex values."""
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype
    if dtype.kind == "c":
        raise ValueError(f"{name} must be real; got the complex dtype {dtype}")
    if dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric; got dtype {dtype}")


def _finite(name: str, x: Any) -> Any:
    """x unchanged when its values are finite (checked now, or in the program when x is traced)."""
    if _traced(x):
        return _fail_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} must be finite; got NaN or inf entries")
    v = np.asarray(x)
    if v.size and not np.all(np.isfinite(v)):
        bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
        raise ValueError(f"{name} must be finite; got {bad} NaN or inf entries")
    return x


def _check_X(X: Any) -> tuple[Any, bool]:
    """X, finite, and whether the solvers must rescale it (`_units`), from one pass over its values: max |X|
    is finite exactly when every entry is. Traced: the check goes into the program, and X is rescaled."""
    if _traced(X):
        return _finite("X", X), True
    v = np.asarray(X)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if not np.isfinite(top):
        _finite("X", v)  # counts the bad entries and raises
    return X, rescales_top(top)


def _check_X_shape(X: Any) -> int:
    """X (n, d), or patches (n, K, h), with d, K, h ≥ 1, float32 or float64, from its metadata; returns n."""
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be a 2-D (n, d) array, or patches (n, K, h); got shape {tuple(X.shape)}")
    if X.shape[-1] == 0:
        raise ValueError("X must have at least one column (d = 0)")
    if X.ndim == 3 and X.shape[1] == 0:
        raise ValueError("X must have at least one patch per row (K = 0)")
    if np.dtype(X.dtype) not in _FLOATS:
        raise ValueError(f"X must be float32 or float64; got {X.dtype}")
    return X.shape[0]


def _check_shapes(masks: Any, y: Any, X_shape: tuple[int, ...]) -> None:
    """masks (n, P) (or (n, K, P) for patches X (n, K, h)) of bools or integers, y (n,) or (n, c) of real
    numbers: the checks that read metadata only."""
    n = X_shape[0]
    if len(X_shape) == 3:
        if masks.ndim != 3 or tuple(masks.shape[:2]) != tuple(X_shape[:2]):
            raise ValueError(
                f"masks must be (n, K, P) with (n, K) = {tuple(X_shape[:2])} for patches X; "
                f"got shape {tuple(masks.shape)}"
            )
    elif masks.ndim != 2 or masks.shape[0] != n:
        raise ValueError(f"masks must be (n, P) with n = {n}; got shape {tuple(masks.shape)}")
    if masks.shape[-1] == 0:
        raise ValueError("masks must have at least one pattern (P = 0)")
    if masks.dtype != bool and not np.issubdtype(np.dtype(masks.dtype), np.integer):
        raise ValueError(f"masks must be bool or 0/1 integers; got dtype {masks.dtype}")
    check_real_dtype("y", y)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be (n,) or (n, c) with n = {n}; got shape {tuple(y.shape)}")


def check_data(X: Any, y: Any, masks: Any, loss: _losses.Loss) -> tuple[jax.Array, jax.Array, jax.Array, bool, bool]:
    """Validate (X, y, masks) and return X, y as (n, c) in X's dtype, masks as bool, whether y was 1-D and
    whether the solvers must bring X to unit scale (static; `convexnn._units`).

    Raises:
        ValueError: naming the argument, what was expected and what came (for traced values: when the
            program runs, through `eqx.error_if`).
    """
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    n = _check_X_shape(X)
    if n == 0:
        raise ValueError("X must have at least one row (n = 0)")
    X, rescale_x = _check_X(X)
    if not hasattr(y, "shape"):
        y = np.asarray(y)
    if not hasattr(masks, "shape"):
        masks = np.asarray(masks)
    _check_shapes(masks, y, X.shape)
    if masks.dtype != bool:
        if _traced(masks):
            masks = _fail_if(masks, ~jnp.all((masks == 0) | (masks == 1)), "masks must hold only 0 and 1")
        elif not np.isin(np.asarray(masks), (0, 1)).all():
            raise ValueError("masks must hold only 0 and 1")
        masks = jnp.asarray(masks) != 0

    squeeze = y.ndim == 1
    if not _traced(y):
        yv = _finite("y", np.asarray(y))
        Y = loss.prepare_targets(yv)
        squeeze = squeeze and Y.shape[1] == 1
        Y = jnp.asarray(Y, dtype=X.dtype)
    else:
        if isinstance(loss, _losses.CrossEntropy) and y.ndim == 1:
            raise ValueError("y must be one-hot (n, c) for cross_entropy when traced (labels need values)")
        Y = _finite("y", jnp.asarray(y, dtype=X.dtype).reshape(n, -1))
        bad, message = loss.invalid_targets(Y)
        Y = _fail_if(Y, bad, message)
    if Y.shape[1] == 0:
        raise ValueError("y must have at least one output column (c = 0)")
    return jnp.asarray(X), Y, jnp.asarray(masks, dtype=bool), squeeze, rescale_x


def check_host_data(
    X: Any, y: Any, masks: Any, loss: _losses.Loss, c: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, float]:
    """As `check_data`, on the host: NumPy X (n, d), y (n, c) in X's dtype, bool masks, whether y was 1-D and
    max |X| (0 for no rows), from which the caller decides whether the solvers rescale X.

    Nothing is placed on a device (for data that will be split over many). `c`: the number of classes for
    integer cross-entropy labels, when these rows are only part of the data.

    Raises:
        ValueError: naming the argument, what was expected and what came.
    """
    X, y, masks = np.asarray(X), np.asarray(y), np.asarray(masks)
    n = _check_X_shape(X)
    top = float(np.max(np.abs(X))) if X.size else 0.0
    if not np.isfinite(top):
        _finite("X", X)  # counts the bad entries and raises
    _check_shapes(masks, y, X.shape)
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must hold only 0 and 1")
        masks = masks != 0
    _finite("y", y)
    Y = loss.prepare_targets(y, c) if n else y.reshape(0, c or (y.shape[1] if y.ndim == 2 else 1))
    if Y.shape[1] == 0:
        raise ValueError("y must have at least one output column (c = 0)")
    return X, np.asarray(Y, dtype=X.dtype), masks, y.ndim == 1 and Y.shape[1] == 1, top


def _number(name: str, value: Any) -> jax.Array:
    """A real-valued option as an array: a clear error for None, strings and complex values."""
    if value is None:
        raise ValueError(f"{name} must be a number; got None")
    check_real_dtype(name, value)
    return jnp.asarray(value)


def check_lam(lam: Any, dtype: Any) -> jax.Array:
    """λ as a scalar array of `dtype`; must be finite and ≥ 0 (checked in the program when traced)."""
    lam_arr = _number("lam", lam)
    if lam_arr.ndim != 0:
        raise ValueError(f"lam must be a scalar; got shape {lam_arr.shape} (use solve_path or vmap for many)")
    if _traced(lam):
        return _fail_if(lam_arr, ~(jnp.isfinite(lam_arr) & (lam_arr >= 0)), "lam must be finite and >= 0").astype(dtype)
    v = np.asarray(lam)
    if not np.isfinite(v):
        raise ValueError(f"lam must be finite; got {float(v)}")
    if v < 0:
        raise ValueError(f"lam must be >= 0; got {float(v)}")
    return lam_arr.astype(dtype)


def check_lams(lams: Any, dtype: Any) -> jax.Array:
    """λ values for a path: a non-empty 1-D array of finite values ≥ 0, in `dtype`."""
    arr = _number("lams", lams)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"lams must be a non-empty 1-D array; got shape {arr.shape}")
    if _traced(lams):
        return _fail_if(arr, ~jnp.all(jnp.isfinite(arr) & (arr >= 0)), "lams must be finite and >= 0").astype(dtype)
    v = np.asarray(lams)
    if not np.all(np.isfinite(v)):
        raise ValueError("lams must be finite")
    if np.any(v < 0):
        raise ValueError(f"lams must be >= 0; got min {float(np.min(v))}")
    return arr.astype(dtype)


def check_positive(name: str, value: Any, dtype: Any, integer: bool = False) -> jax.Array:
    """A positive scalar option (tol, max_iters) as an array, so that changing it never recompiles.

    An integer option beyond int32 (max_iters=1e10) is clipped to its largest value.
    """
    arr = _number(name, value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {arr.shape}")
    if _traced(value):
        arr = _fail_if(arr, ~(jnp.isfinite(arr) & (arr > 0)), f"{name} must be finite and > 0")
    else:
        v = np.asarray(value)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0 and finite; got {v}")
    if integer:
        top = 2**31 - 2**7  # the largest int32 that float32 holds exactly
        if not _traced(value):
            return jnp.asarray(min(int(np.floor(np.asarray(value))), top), jnp.int32)
        return jnp.clip(jnp.floor(arr.astype(jnp.float32)), 1, top).astype(jnp.int32)
    return arr.astype(dtype)


def check_init(init: Any, P: int, d: int, c: int, squeeze: bool, dtype: Any) -> jax.Array:
    """Initial weights as (P, d, c); accepts (P, d) for a single output."""
    expected = (P, d) if squeeze else (P, d, c)
    shape = tuple(init.shape) if hasattr(init, "shape") else np.shape(init)
    if shape != expected:
        raise ValueError(f"init must have shape {expected}; got {shape}")
    check_real_dtype("init", init)
    W0 = _finite("init", jnp.asarray(init, dtype=dtype))
    return W0[..., None] if squeeze else W0
