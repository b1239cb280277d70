"""Glue between row-sharded data and the solvers: checks, replication, and one `shard_map` per solve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _validate
from . import losses as _losses
from ._rows import Rows

__all__ = ["check_sharded", "replicate_on_mesh", "run_on_shards"]


def check_sharded(data: Any, y: Any, masks: Any, loss: _losses.Loss) -> None:
    """A `RowSharded` stands for X, y and masks at once, and its y was prepared for this loss."""
    if y is not None or masks is not None:
        raise ValueError("y and masks must be left out when X is a RowSharded (it holds them)")
    if data.loss != loss.name:
        raise ValueError(
            f"loss must be the one the data were sharded for: shard_rows(..., loss={data.loss!r}); got {loss.name!r}"
        )


def replicate_on_mesh(mesh: Mesh, x: Any) -> Any:
    """x on every device of `mesh` (works with several processes: every one passes the same x)."""
    sharding = NamedSharding(mesh, P())

    def put(a):
        v = _validate.concrete(a)
        return a if v is None else jax.device_put(v, sharding)  # traced: the caller's jit places it

    return jax.tree.map(put, x)


def run_on_shards(fn: Callable[..., Any], data: Any, *replicated: Any) -> Any:
    """fn(X, Y, masks, rows, *replicated) on every row shard under `shard_map`; its outputs are replicated.

    `fn` sees its shard's rows and a `Rows` naming the axis; it must end every sum over rows in a collective
    (the objectives do, given the `Rows`), so that what it returns is the same on every device.
    """
    rows_spec = P(data.axis)

    def local(X, Y, masks, valid, *args):
        return fn(X, Y, masks, Rows(valid=valid, axis_name=data.axis), *args)

    mapped = jax.shard_map(
        local,
        mesh=data.mesh,
        in_specs=(rows_spec,) * 4 + (P(),) * len(replicated),
        out_specs=P(),
        check_vma=False,  # loops carry replicated and per-row state together; every psum here is explicit
    )
    return mapped(data.X, data.y, data.masks, data.valid, *replicated)
