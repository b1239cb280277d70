"""Sums over rows, the one place where row-partitioned data meet: Σ_rows x = psum_shards(Σ_{local rows} x).

Operators and losses are written for one block of rows. Every reduction over rows goes through the helpers
here, which take a `Rows`: which local rows are real (padding rows are not) and the mesh axis the rows are
split over. Without a `Rows` (None) each helper is the plain single-device reduction, unchanged.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Scalar

__all__ = ["Rows", "row_sum", "row_column_sum", "row_total", "row_max", "row_all", "row_kth_largest", "loss_kwargs"]


class Rows(eqx.Module):
    """Where the rows of this block live: `valid` marks real rows (None: all), `axis_name` the mesh axis
    the rows are split over (static; None: one device holds every row)."""

    valid: Bool[Array, " n"] | None = None
    axis_name: str | None = eqx.field(static=True, default=None)

    @property
    def sharded(self) -> bool:
        """Static: whether reductions need a collective."""
        return self.axis_name is not None


def _real(x: Array, rows: Rows | None, fill: float | bool) -> Array:
    if rows is None or rows.valid is None:
        return x
    valid = rows.valid.reshape(rows.valid.shape + (1,) * (x.ndim - 1))
    return jnp.where(valid, x, jnp.asarray(fill, x.dtype))


def row_sum(x: Array, rows: Rows | None) -> Scalar:
    """Σ of every entry of a row-indexed array (rows first), over the real rows of every shard."""
    s = jnp.sum(_real(x, rows, 0.0))
    return s if rows is None or not rows.sharded else lax.psum(s, rows.axis_name)


def row_column_sum(x: Array, rows: Rows | None) -> Array:
    """Σ over the real rows of every shard, per column: x (n, ...) → (...)."""
    return row_total(jnp.sum(_real(x, rows, 0.0), axis=0), rows)


def row_total(x: Array, rows: Rows | None) -> Array:
    """Σ_shards x for a partial result already summed over this shard's rows (an adjoint block Xᵀ r)."""
    return x if rows is None or not rows.sharded else lax.psum(x, rows.axis_name)


def row_max(x: Array, rows: Rows | None) -> Scalar:
    """max of every entry of a row-indexed array of non-negative values, over the real rows of every shard."""
    m = jnp.max(_real(x, rows, 0.0))
    return m if rows is None or not rows.sharded else lax.pmax(m, rows.axis_name)


def row_all(b: Array, rows: Rows | None) -> Array:
    """all() of a row-indexed bool array over the real rows of every shard."""
    a = jnp.all(_real(b, rows, True))
    return a if rows is None or not rows.sharded else lax.pmin(a.astype(jnp.int32), rows.axis_name) > 0


def row_kth_largest(x: Array, k: int, rows: Rows | None) -> Array:
    """The k-th largest entry over the rows (axis 0, real rows of every shard) of each column of x (−inf if fewer)."""
    x = jnp.moveaxis(_real(x, rows, -jnp.inf), 0, -1)
    k_local = min(k, x.shape[-1])
    top = lax.top_k(x, k_local)[0]
    if rows is not None and rows.sharded:  # every shard's top k, then the top k of those
        top = jnp.moveaxis(lax.all_gather(top, rows.axis_name), 0, -2)
        top = lax.top_k(top.reshape(top.shape[:-2] + (-1,)), min(k, top.shape[-2] * top.shape[-1]))[0]
    if top.shape[-1] < k:
        return jnp.full(top.shape[:-1], -jnp.inf, x.dtype)
    return top[..., k - 1]


def loss_kwargs(rows: Rows | None) -> dict:
    """The `rows=` keyword for a loss's reductions, left out on one device (so any `Loss` subclass works there)."""
    return {} if rows is None else {"rows": rows}
