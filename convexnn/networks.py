"""Two-layer networks read off convex solutions, and their non-convex objective.

From a block u ≠ 0 of a solution, the neuron w = u / √‖u‖ with output weight α = √‖u‖ (α = −√‖v‖ for
a block v of the exact ReLU program) has ‖w‖² + α² = 2‖u‖, so the weight-decay objective

    L(relu(X W1) w2, y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F)

of the network equals the convex objective, and on the training data relu(X w) α = D X u whenever u
satisfies its cone constraint. For gated solutions the network keeps the gates: neuron j computes
1[x·g_j ≥ 0] (x·w_j) α_j.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from . import _validate
from . import losses as _losses
from .solution import Solution

__all__ = ["Network", "to_network", "network_objective"]


_FORMAT = "convexnn.Network"
_VERSION = 1
_HEADER = "header"


class Network(eqx.Module):
    """f(X) = act(X W1) w2, with act = relu, or the gate 1[X G ≥ 0] ⊙ (X W1) when `gates` is set.

    `net.save(path)` writes it to one file and `Network.load(path)` rebuilds it exactly, gates and all.

    Attributes:
        W1: first layer (d, m); w2: second layer (m, c); gates: (d, m) or None.
        squeeze: return (n,) rather than (n, 1) predictions.
    """

    W1: Float[Array, "d m"]
    w2: Float[Array, "m c"]
    gates: Float[Array, "d m"] | None = None
    squeeze: bool = eqx.field(static=True, default=False)

    def _check_input(self, X: Array) -> None:
        d = self.W1.shape[0]
        if X.ndim not in (1, 2) or X.shape[-1] != d:
            raise ValueError(f"X must be (n, d), or (d,) for one sample, with d = {d}; got shape {X.shape}")

    def hidden(self, X: Float[Array, "*n d"]) -> Float[Array, "*n m"]:
        """act(X W1): the hidden layer's activations, (n, m) for X (n, d) and (m,) for one sample x (d,)."""
        X = jnp.asarray(X)
        self._check_input(X)
        pre = jnp.matmul(X, self.W1, precision=jax.lax.Precision.HIGHEST)
        if self.gates is None:
            return jax.nn.relu(pre)
        on = jnp.matmul(X, self.gates, precision=jax.lax.Precision.HIGHEST) >= 0
        return jnp.where(on, pre, jnp.zeros((), pre.dtype))

    def __call__(self, X: Float[Array, "*n d"]) -> Float[Array, "..."]:
        """f(X) = act(X W1) w2.

        Args:
            X: rows (n, d), or one sample x (d,).

        Returns:
            predictions (n, c), or (n,) when `squeeze`; for one sample (c,), or a scalar when `squeeze`.
        """
        out = jnp.matmul(self.hidden(X), self.w2, precision=jax.lax.Precision.HIGHEST)
        return out[..., 0] if self.squeeze else out

    @property
    def width(self) -> int:
        return self.W1.shape[1]

    def prune(self) -> Network:
        """The same function without its zero neurons (on the host: the width depends on the values)."""
        keep = np.flatnonzero(np.any(np.asarray(self.W1) != 0, axis=0) & np.any(np.asarray(self.w2) != 0, axis=1))
        gates = None if self.gates is None else self.gates[:, keep]
        return Network(W1=self.W1[:, keep], w2=self.w2[keep], gates=gates, squeeze=self.squeeze)

    def save(self, path: str | os.PathLike | io.IOBase) -> None:
        """Write the network to one .npz file: its arrays and a JSON header with what rebuilds it.

        The header records the format, gated or not, `squeeze`, and every array's shape and dtype, so
        `Network.load` needs nothing but the file. Arrays are stored bit for bit, in their own dtype.

        Args:
            path: a file name (written as given: no suffix is added) or a binary file object.
        """
        arrays = {"W1": self.W1, "w2": self.w2} | ({} if self.gates is None else {"gates": self.gates})
        host = {name: np.asarray(a) for name, a in arrays.items()}
        header = {
            "format": _FORMAT,
            "version": _VERSION,
            "gated": self.gates is not None,
            "squeeze": self.squeeze,
            "shapes": {name: list(a.shape) for name, a in host.items()},
            "dtypes": {name: jnp.dtype(a.dtype).name for name, a in host.items()},
        }
        host[_HEADER] = np.array(json.dumps(header))
        if isinstance(path, str | os.PathLike):
            with open(path, "wb") as f:
                np.savez(f, **host)
        else:
            np.savez(path, **host)

    @classmethod
    def load(cls, path: str | os.PathLike | io.IOBase) -> Network:
        """The network that `Network.save` wrote to `path`, rebuilt exactly (arrays, dtypes, gates, squeeze).

        Args:
            path: a file name or a binary file object.

        Returns:
            the `Network`; its predictions equal the saved network's bit for bit.

        Raises:
            ValueError: when the file is not a network written by `Network.save`, or holds float64 arrays
                while JAX runs without x64 (they would be rounded to float32).
        """
        where = os.fspath(path) if isinstance(path, str | os.PathLike) else getattr(path, "name", "the file")

        def refuse(why: str) -> ValueError:
            return ValueError(f"{where} is not a Network saved by Network.save: {why}")

        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile) as err:
            raise refuse(f"not an .npz file ({err})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise refuse("a single .npy array, not an .npz archive")
        with data:
            if _HEADER not in data.files:
                raise refuse(f"no {_HEADER!r} entry; it holds {sorted(data.files)}")
            names, shapes, dtypes, squeeze = _read_header(data, refuse)
            if sorted(data.files) != sorted([*names, _HEADER]):
                raise refuse(f"it holds {sorted(data.files)}; expected {sorted([*names, _HEADER])}")
            arrays = {}
            for name in names:
                try:
                    a = data[name]
                except ValueError as err:
                    raise refuse(f"{name} is unreadable ({err})") from None
                dtype = dtypes[name]
                if a.dtype != dtype and a.dtype.kind == "V" and a.dtype.itemsize == dtype.itemsize:
                    a = a.view(dtype)  # NumPy stores dtypes it does not know (bfloat16) as raw bytes
                if a.dtype != dtype or a.shape != shapes[name]:
                    raise refuse(f"{name} is {a.dtype}{list(a.shape)}; its header says {dtype}{list(shapes[name])}")
                arrays[name] = a
        if any(jax.dtypes.canonicalize_dtype(a.dtype) != a.dtype for a in arrays.values()):
            raise ValueError(
                f"{where} holds float64 arrays: enable float64 first (jax.config.update('jax_enable_x64', True)) "
                "to load them without rounding"
            )
        return cls(
            W1=jnp.asarray(arrays["W1"]),
            w2=jnp.asarray(arrays["w2"]),
            gates=jnp.asarray(arrays["gates"]) if "gates" in arrays else None,
            squeeze=squeeze,
        )


def _read_header(data: np.lib.npyio.NpzFile, refuse: Callable[[str], ValueError]) -> tuple[list, dict, dict, bool]:
    """The array names, shapes, dtypes and `squeeze` that a saved network's JSON header records, checked."""
    try:
        header = json.loads(str(data[_HEADER][()]))
    except (ValueError, TypeError, IndexError) as err:
        raise refuse(f"unreadable header ({err})") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise refuse(f"its header is not a {_FORMAT} header")
    if header.get("version") != _VERSION:
        raise refuse(f"format version {header.get('version')!r}; this convexnn reads version {_VERSION}")
    gated, squeeze = header.get("gated"), header.get("squeeze")
    if not isinstance(gated, bool) or not isinstance(squeeze, bool):
        raise refuse(f"the header's gated and squeeze must be booleans; got {gated!r}, {squeeze!r}")
    names = ["W1", "w2"] + (["gates"] if gated else [])
    try:
        shapes = {name: tuple(int(n) for n in header["shapes"][name]) for name in names}
        dtypes = {name: np.dtype(jnp.dtype(header["dtypes"][name])) for name in names}
    except (KeyError, TypeError, ValueError) as err:
        raise refuse(f"the header lacks the shape or dtype of an array ({err!r})") from None
    W1, w2 = shapes["W1"], shapes["w2"]
    if len(W1) != 2 or len(w2) != 2 or w2[0] != W1[1] or (gated and shapes["gates"] != W1):
        raise refuse(f"inconsistent shapes {shapes}: expected W1 (d, m), w2 (m, c), gates (d, m)")
    return names, shapes, dtypes, squeeze


def _neurons(W: Array, sign: float) -> tuple[Array, Array]:
    """Neurons of blocks W (P, d, c): first layer (d, P·c) and second layer (P·c, c)."""
    P, d, c = W.shape
    norms = jnp.sqrt(jnp.sum(W * W, axis=1))  # (P, c)
    root = jnp.sqrt(norms)
    safe = jnp.where(root > 0, root, 1)
    W1 = jnp.moveaxis(W / safe[:, None, :], 1, 0).reshape(d, P * c)  # column (i, k)
    alpha = sign * root.reshape(P * c)
    w2 = alpha[:, None] * jnp.tile(jnp.eye(c, dtype=W.dtype), (P, 1))  # neuron (i, k) feeds output k
    return W1, w2


def to_network(solution: Solution, gates: ArrayLike | None = None) -> Network:
    """The network of a solution: w = u/√‖u‖, α = √‖u‖ per non-zero block (α = −√‖v‖ for the V blocks).

    Args:
        solution: from `solve_relu` (weights (U, V)) or `solve_gated` (weights W; then `gates` is needed), for a
            single λ: of a path from `solve_path`, pass one point, `path[k]`.
        gates: the gate vectors (d, P) a gated solution was solved with.

    Returns:
        a `Network` with one neuron per block and output (zero neurons included, so it jits and vmaps;
        `Network.prune()` drops them). Its non-convex objective equals the solution's convex objective.
    """
    lead = jnp.shape(solution.status)
    if lead:
        raise ValueError(
            f"solution must be for a single λ; got fields with a leading axis of shape {lead} (a path from "
            "solve_path, or a batch of solves): pick one λ with solution[k], as in to_network(path[k], gates)"
        )
    weights = solution.weights
    if isinstance(weights, tuple | list):
        U, V = weights
        squeeze = U.ndim == 2
        U3, V3 = (U[..., None], V[..., None]) if squeeze else (U, V)
        Wu, au = _neurons(U3, 1.0)
        Wv, av = _neurons(V3, -1.0)
        return Network(W1=jnp.concatenate([Wu, Wv], axis=1), w2=jnp.concatenate([au, av]), squeeze=squeeze)
    if gates is None:
        raise ValueError("a gated solution needs its gates: to_network(solution, gates)")
    W = weights
    squeeze = W.ndim == 2
    W3 = W[..., None] if squeeze else W
    G = jnp.asarray(gates, W3.dtype)
    if G.shape != (W3.shape[1], W3.shape[0]):
        raise ValueError(f"gates must be (d, P) = {(W3.shape[1], W3.shape[0])}; got {G.shape}")
    W1, w2 = _neurons(W3, 1.0)
    c = W3.shape[2]
    return Network(W1=W1, w2=w2, gates=jnp.repeat(G, c, axis=1), squeeze=squeeze)


def network_objective(
    net: Network, X: ArrayLike, y: ArrayLike, lam: ArrayLike, loss: str | _losses.Loss = "squared"
) -> jax.Array:
    """L(f(X), y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F): the non-convex training objective of a network."""
    loss = _losses.get_loss(loss)
    X = jnp.asarray(X)
    yv = _validate.concrete(y)
    Y = jnp.asarray(loss.prepare_targets(yv) if yv is not None else y, X.dtype)
    Y = Y.reshape(Y.shape[0], -1)
    pred = net(X)
    pred = pred[:, None] if pred.ndim == 1 else pred
    decay = jnp.sum(net.W1 * net.W1) + jnp.sum(net.w2 * net.w2)
    return loss.value(pred, Y, loss.normaliser(Y)) + 0.5 * lam * decay
