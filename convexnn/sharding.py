"""Row-partitioned data: X, y and masks split by rows over a mesh axis; only (P, d)-sized blocks travel.

    A W = Σ_i D_i X w_i  row block by row block (no communication),   Aᵀ r = Σ_shards X_sᵀ (masks_s ⊙ r_s)  (one psum)

`shard_rows` pads the rows to a multiple of the number of devices on the axis (padding rows have X = 0, y = 0,
masks False and are marked invalid, so they add nothing to any sum), places X, y, masks with
`NamedSharding(mesh, P(axis))` and records the true row count. `solve_gated`, `solve_relu`, `solve_path` and
`lam_max` accept the result in place of X (with y and masks left out) and run the whole solver, loop and
all, as one jitted `shard_map` program: weights and every (P, d)-sized quantity are replicated, per-row
quantities (predictions, residuals, AL multipliers) stay with their rows, and every sum over rows ends in a
`psum` over the axis (`convexnn._rows`). With `process_local=True` each process passes only its own rows
(multi-host: one process per host after `jax.distributed.initialize`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float

from . import _validate
from . import losses as _losses
from ._units import rescales_top

__all__ = ["RowSharded", "shard_rows"]


class RowSharded(eqx.Module):
    """X, y and masks with their rows split over one mesh axis, padded to a multiple of its size.

    Attributes:
        X: data (n_pad, d) or patches (n_pad, K, h); y: targets (n_pad, c) in X's dtype; masks: (n_pad, P)
            bool, or (n_pad, K, P) for patches; valid: (n_pad,) bool,
            False on padding rows. All four are placed with `NamedSharding(mesh, P(axis))`.
        n: the number of real rows (static); squeeze: whether y was 1-D (static); loss: the name of the loss
            y was prepared for (static); mesh, axis: where the rows live (static); rescale_x: whether the
            solvers must bring X to unit scale (static; `convexnn._units.rescales_top`).
    """

    X: Float[Array, "n *k d"]
    y: Float[Array, "n c"]
    masks: Bool[Array, "n *k p"]
    valid: Bool[Array, " n"]
    n: int = eqx.field(static=True)
    squeeze: bool = eqx.field(static=True)
    loss: str = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)
    axis: str = eqx.field(static=True)
    rescale_x: bool = eqx.field(static=True, default=True)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(P, d, c): the shape of the weights."""
        return self.masks.shape[-1], self.X.shape[-1], self.y.shape[1]

    def normaliser(self, loss: _losses.Loss) -> int:
        """The loss normaliser N of the real rows (n·c or n), never of the padded shape."""
        return loss.normaliser(jax.ShapeDtypeStruct((self.n, self.y.shape[1]), self.y.dtype))


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if rows == a.shape[0]:
        return a
    return np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)])


def _allgather(values: list[int]) -> np.ndarray:
    """Every process's `values`, stacked (processes, len(values))."""
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(values, np.int32))
    return np.asarray(gathered).reshape(jax.process_count(), len(values))


def shard_rows(
    mesh: Mesh,
    X: ArrayLike,
    y: ArrayLike,
    masks: ArrayLike,
    *,
    loss: str | _losses.Loss = "squared",
    axis: str = "data",
    process_local: bool = False,
) -> RowSharded:
    """Split the rows of (X, y, masks) over the mesh axis `axis`; pass the result to the solvers as X.

    Rows are padded to a multiple of the axis size k with rows that contribute nothing; per device that
    holds n/k rows, the solvers keep X (n/k·d), the bool masks (n/k·P bytes) and a few n/k·P·c float
    buffers (see docs/scaling.md). Values are checked on the host, as `solve_gated` checks them.

    Args:
        mesh: a `jax.sharding.Mesh` with an axis named `axis`; rows are split over it, and replicated over
            any other axes.
        X, y, masks: as in `solve_gated` (host arrays: NumPy or fully addressable JAX arrays). With
            `process_local=True`, this process's rows only.
        loss: the loss y will be solved with (it decides how y is checked and encoded: cross-entropy labels
            become one-hot rows); the solvers check that they are given the same one.
        axis: the mesh axis that splits the rows.
        process_local: each process passes its own rows (after `jax.distributed.initialize`); the rows of
            all processes together are the data. Needs a mesh whose only axis of size > 1 is `axis`.

    Returns:
        a `RowSharded` holding the placed arrays and the true row count.
    """
    loss = _losses.get_loss(loss)
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis must be one of the mesh axes {mesh.axis_names}; got {axis!r}")
    k = mesh.shape[axis]
    c = None
    if process_local and jax.process_count() > 1:
        if mesh.devices.size != k:
            raise ValueError(f"process_local needs the rows split over every device of the mesh; got {mesh.shape}")
        labels = np.asarray(y)
        if isinstance(loss, _losses.CrossEntropy) and labels.ndim == 1:  # every process needs the same c
            c = int(_allgather([int(labels.max()) + 1 if labels.size else 0])[:, 0].max())
    Xh, Yh, Mh, squeeze, top = _validate.check_host_data(X, y, masks, loss, c)
    spec = NamedSharding(mesh, P(axis))
    if not (process_local and jax.process_count() > 1):
        n = Xh.shape[0]
        if n == 0:
            raise ValueError("X must have at least one row (n = 0)")
        n_pad = -(-n // k) * k
        arrays = (Xh, Yh, Mh, np.arange(n_pad) < n)
        placed = [jax.device_put(_pad_rows(a, n_pad), spec) for a in arrays]
        rescale_x = rescales_top(top)
    else:
        sizes = _allgather([Xh.shape[0], *Xh.shape[1:], Mh.shape[-1], Yh.shape[1]])
        if np.any(sizes[:, 1:] != sizes[0, 1:]):
            raise ValueError(f"every process must pass the same d, P and c; got (n, d, P, c) = {sizes.tolist()}")
        n = int(sizes[:, 0].sum())
        if n == 0:
            raise ValueError("X must have at least one row (n = 0)")
        k_local = k // jax.process_count()
        m = -(-int(sizes[:, 0].max()) // k_local) * k_local  # rows per process, padded
        arrays = (Xh, Yh, Mh, np.arange(m) < Xh.shape[0])
        placed = [
            jax.make_array_from_process_local_data(spec, _pad_rows(a, m), (m * jax.process_count(),) + a.shape[1:])
            for a in arrays
        ]
        # Every process's max |X| through its exponent.
        exponent = int(np.frexp(top)[1]) if top > 0 else -(2**30)
        top_exponent = int(_allgather([exponent])[:, 0].max())
        rescale_x = rescales_top(float(np.ldexp(0.5, top_exponent)) if top_exponent > -(2**30) else 0.0)
    return RowSharded(*placed, n=n, squeeze=squeeze, loss=loss.name, mesh=mesh, axis=axis, rescale_x=rescale_x)
