"""Two-layer networks read off convex solutions, and their non-convex objective.

From a block u ≠ 0 of a solution, the neuron w = u / √‖u‖ with output weight α = √‖u‖ (α = −√‖v‖ for
a block v of the exact ReLU program) has ‖w‖² + α² = 2‖u‖, so the weight-decay objective

    L(relu(X W1) w2, y) + (λ/2)(‖W1‖²_F + ‖w2‖²_F)

of the network equals the convex objective, and on the training data relu(X w) α = D X u whenever u
satisfies its cone constraint. For gated solutions the network keeps the gates: neuron j computes
1[x·g_j ≥ 0] (x·w_j) α_j.

Nuclear solutions (one hidden layer shared by the c outputs): block U_i = Σ_j σ_j a_j b_jᵀ gives the neurons
w_j = √σ_j a_j with output weights α_j = √σ_j b_j (c-vectors), Σ_j ‖w_j‖² + ‖α_j‖² = 2‖U_i‖_*: at most
min(d, c) neurons per block, sharing gate g_i. For the exact ReLU relaxation a neuron reproduces D_i X w_j
only when w_j (or −w_j, with −α_j) lies in pattern i's cone; a block whose singular vectors do not is read
off column by column instead (neuron u_k/√‖u_k‖ feeding output k alone, penalty Σ_k ‖u_k‖ ≥ ‖U_i‖_*), so
the network is always a true ReLU network and its objective bounds the non-convex optimum from above
(`relu_interval`).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from . import _validate, operators, prox
from . import losses as _losses
from .solution import Solution

__all__ = ["Network", "to_network", "network_objective", "relu_interval", "ReluInterval"]


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
        if X.ndim not in (1, 2, 3) or X.shape[-1] != d:
            raise ValueError(
                f"X must be (n, d), (d,) for one sample, or patches (n, K, d), with d = {d}; got shape {X.shape}"
            )

    def hidden(self, X: Float[Array, "*n d"]) -> Float[Array, "..."]:
        """act(X W1): the hidden layer's activations, (n, m) for X (n, d) and (m,) for one sample x (d,).

        For patches X (n, K, d) the network is convolutional (W1's columns are filters): Σ_k act(X_k W1), (n, m).
        """
        X = jnp.asarray(X)
        self._check_input(X)
        pre = jnp.matmul(X, self.W1, precision=jax.lax.Precision.HIGHEST)
        if self.gates is None:
            act = jax.nn.relu(pre)
        else:
            on = jnp.matmul(X, self.gates, precision=jax.lax.Precision.HIGHEST) >= 0
            act = jnp.where(on, pre, jnp.zeros((), pre.dtype))
        return jnp.sum(act, axis=1) if X.ndim == 3 else act

    def __call__(self, X: Float[Array, "*n d"]) -> Float[Array, "..."]:
        """f(X) = act(X W1) w2; for patches (n, K, d) the CNN with sum pooling Σ_k act(X_k W1) w2.

        Args:
            X: rows (n, d), one sample x (d,), or patches (n, K, d) (`image_patches`).

        Returns:
            predictions (n, c), or (n,) when `squeeze`; for one sample (c,), or a scalar when `squeeze`.
        """
        out = jnp.matmul(self.hidden(X), self.w2, precision=jax.lax.Precision.HIGHEST)
        return out[..., 0] if self.squeeze else out

    def on_images(
        self, images: ArrayLike, size, stride=1, padding: str = "valid", *, bias: bool = False, scale: float = 1.0
    ) -> Float[Array, "..."]:
        """The convolutional network on images (n, H, W) or (n, H, W, C): self(scale · image_patches(images, ...)).

        Args:
            images: as in `image_patches`; size, stride, padding, bias: the patches the network was trained on.
            scale: what the patches were multiplied by for training (1/K for average pooling).
        """
        from .images import image_patches

        images = jnp.asarray(images)
        return self(scale * image_patches(images.astype(self.W1.dtype), size, stride, padding, bias=bias))

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


def _shared_neurons(W: Array, sign: float) -> tuple[Array, Array]:
    """Neurons of nuclear blocks W (P, d, c): first layer (d, P·r), second (P·r, c), r = min(d, c)."""
    F, G, _ = prox.balanced_factors(W)
    P, d, r = F.shape
    return jnp.moveaxis(F, 1, 0).reshape(d, P * r), sign * jnp.swapaxes(G, 1, 2).reshape(P * r, W.shape[2])


def _in_cones(F: Array, G: Array, X: Array | None, masks: Array | None) -> Array:
    """(P,) whether every factor pair (a_j, b_j) of a block can be a ReLU neuron: ±a_j in the block's cone.

    With the data (X, masks): s_i ⊙ X a_j ≥ 0 or ≤ 0 up to 1e-6 of max |X a_j|. Without: b_j single-signed,
    which suffices (a_j = U_i b_j / σ_j is then a non-negative combination of ± the block's columns, which
    lie in the cone).
    """
    on = jnp.sum(G * G, axis=1) > 0  # (P, r)
    if X is None or masks is None:
        tiny = 1e-6 * jnp.max(jnp.abs(G), axis=1)
        signed = jnp.all(G >= -tiny[:, None, :], axis=1) | jnp.all(G <= tiny[:, None, :], axis=1)
    else:
        X, masks = operators.patch_rows(X, jnp.asarray(masks))  # patches: every position is a row
        XF = jnp.einsum("nd,pdr->npr", X, F, precision=jax.lax.Precision.HIGHEST)
        R = jnp.where(masks[:, :, None], XF, -XF)
        tol = 1e-6 * jnp.max(jnp.abs(XF), axis=0)
        signed = jnp.all(R >= -tol[None], axis=0) | jnp.all(R <= tol[None], axis=0)
    return jnp.all(signed | ~on, axis=1)


def _relu_shared_neurons(W: Array, sign: float, X: Array | None, masks: Array | None) -> tuple[Array, Array]:
    """ReLU neurons of nuclear blocks (P, d, c) of the relaxation: c slots per block, the SVD factors (each
    oriented into the cone) where they all lie in ± the cone, the columns where they do not."""
    P, d, c = W.shape
    F, G, _ = prox.balanced_factors(W)
    r = F.shape[2]
    ok = _in_cones(F, G, X, masks)
    # Orient each factor into the cone: flip (a_j, b_j) → (−a_j, −b_j) where X a_j lies in −K_i.
    if X is None or masks is None:
        flip = jnp.sum(G, axis=1) < 0  # b_j ≤ 0: −a_j is the cone's
    else:
        X, masks = operators.patch_rows(X, jnp.asarray(masks))
        XF = jnp.einsum("nd,pdr->npr", X, F, precision=jax.lax.Precision.HIGHEST)
        flip = jnp.sum(jnp.where(masks[:, :, None], XF, -XF), axis=0) < 0
    orient = jnp.where(flip, -1.0, 1.0).astype(W.dtype)[:, None, :]
    F, G = F * orient, G * orient
    pad = c - r
    F = jnp.concatenate([F, jnp.zeros((P, d, pad), W.dtype)], axis=2)
    G = jnp.concatenate([G, jnp.zeros((P, c, pad), W.dtype)], axis=2)
    cols_W1, cols_w2 = _neurons(W, sign)  # (d, P·c), (P·c, c): column k of block i feeds output k
    svd_W1 = jnp.moveaxis(F, 1, 0).reshape(d, P * c)
    svd_w2 = sign * jnp.swapaxes(G, 1, 2).reshape(P * c, c)
    use = jnp.repeat(ok, c)
    return jnp.where(use[None, :], svd_W1, cols_W1), jnp.where(use[:, None], svd_w2, cols_w2)


def to_network(solution: Solution, gates: ArrayLike | None = None, *, X: ArrayLike | None = None) -> Network:
    """The network of a solution: w = u/√‖u‖, α = √‖u‖ per non-zero block (α = −√‖v‖ for the V blocks).

    Nuclear solutions (`penalty="nuclear"`) give the shared-neuron network: per block the SVD factors
    w_j = √σ_j a_j, α_j = √σ_j b_j, at most min(d, c) neurons sharing gate g_i (see the module docstring;
    exact ReLU: c slots per block, SVD factors where they lie in the cone, columns where they do not).

    Args:
        solution: from `solve_relu` (weights (U, V)) or `solve_gated` (weights W; then `gates` is needed), for a
            single λ: of a path from `solve_path`, pass one point, `path[k]`.
        gates: the gate vectors (d, P) a gated solution was solved with.
        X: for nuclear exact-ReLU solutions, the training data (n, d) or patches: the SVD factors are then checked
            against their cones on it (with the masks the solution carries); without it a factor passes only
            when its output weights share one sign.

    Returns:
        a `Network` (zero neurons included, so it jits and vmaps; `Network.prune()` drops them). Its
        non-convex objective equals the solution's convex objective (nuclear exact ReLU: is at least it).
        A solution on patches (n, K, h) gives the convolutional network: W1's columns are h-pixel filters
        and the network, called on patches, sums its hidden units over the K positions.
    """
    lead = jnp.shape(solution.status)
    if lead:
        raise ValueError(
            f"solution must be for a single λ; got fields with a leading axis of shape {lead} (a path from "
            "solve_path, or a batch of solves): pick one λ with solution[k], as in to_network(path[k], gates)"
        )
    weights = solution.weights
    nuclear = solution.penalty == "nuclear"
    if isinstance(weights, tuple | list):
        U, V = weights
        squeeze = U.ndim == 2
        U3, V3 = (U[..., None], V[..., None]) if squeeze else (U, V)
        if nuclear and not squeeze:
            masks = solution.stats.get("masks")
            Xd = None if X is None else jnp.asarray(X, U3.dtype)
            Wu, au = _relu_shared_neurons(U3, 1.0, Xd, masks)
            Wv, av = _relu_shared_neurons(V3, -1.0, Xd, masks)
        else:
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
    if nuclear:
        W1, w2 = _shared_neurons(W3, 1.0)
        return Network(W1=W1, w2=w2, gates=jnp.repeat(G, W1.shape[1] // W3.shape[0], axis=1), squeeze=squeeze)
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


class ReluInterval(NamedTuple):
    """A certified interval on the optimum of the ReLU network over the solution's activation patterns.

    lower: the relaxation's objective − gap, a dual value (no network with these patterns does better);
    upper: `network`'s objective (a network that attains it); network: the ReLU network read off the solution.
    """

    lower: jax.Array
    upper: jax.Array
    network: Network


def relu_interval(solution: Solution, X: ArrayLike, y: ArrayLike, loss: str | _losses.Loss = "squared") -> ReluInterval:
    """[relaxation optimum − gap, network objective] for a nuclear `solve_relu` solution (or any exact one).

    The vector-output ReLU network's own program is copositive; its convex relaxation (every column of U_i in
    pattern i's cone) bounds it from below, and the network `to_network(solution, X=X)` from above. The width
    upper − lower is how far from the global optimum (over these patterns) the returned network can be; for
    penalty="group" the program is exact and the width is the gap.

    Args:
        solution: one λ of `solve_relu` (weights (U, V)); X, y, loss: its training data and loss.
    """
    if not isinstance(solution.weights, tuple | list):
        raise ValueError("relu_interval needs a solution of solve_relu (weights (U, V))")
    net = to_network(solution, X=X)
    upper = network_objective(net, X, y, solution.lam, loss)
    # objective − gap is the dual point's value exactly (`certificates.relu_duality_gap`), a lower bound
    # on the relaxation's optimum even where the point is slightly infeasible.
    lower = solution.objective - solution.gap
    return ReluInterval(lower=lower, upper=upper, network=net)
