"""`ConvexConvClassifier`: a two-layer convolutional network trained to a certified optimum, scikit-learn style.

    f(x) = Σ_j α_j (1/K) Σ_k act(x̃_k · w_j),   x̃_k = [(patch k of the image − mean)/scale, 1]

on images given as flattened rows (n, H·W·C) with `image_shape` (H, W) or (H, W, C). `fit` standardizes the
pixels with one mean and one scale (per-pixel statistics would break the weight sharing of a filter),
extracts the patches (`convexnn.image_patches`), adds a bias to every patch, averages over the K positions
(average pooling: the convex CNN program on X/K), samples `n_gates` Gaussian gates (filters of h values)
from `random_state` and solves the convex program: gated (`solve_gated`) or exact ReLU (`solve_relu`), with
the nuclear penalty (one set of filters shared by the classes) or the group penalty. Rows are padded to
the ladder of `convexnn.estimators` so fits of similar sizes share one compiled program.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from . import losses as _losses
from ._estimator_base import padded_rows, sk_validate_data
from .certificates import lam_max, objective_unit
from .images import patch_grid
from .networks import to_network
from .patterns import activation_masks, sample_gates
from .solution import Status
from .solvers.gated import solve_gated
from .solvers.relu import solve_relu

__all__ = ["ConvexConvMixin", "numpy_patches"]


def numpy_patches(images: np.ndarray, size: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """ "valid" patches (n, K, h) of images (n, H, W, C) in float64, in `image_patches`'s order (NumPy)."""
    windows = np.lib.stride_tricks.sliding_window_view(images, size, axis=(1, 2))  # (n, H', W', C, s1, s2)
    windows = windows[:, :: stride[0], :: stride[1]]
    n, Ho, Wo = windows.shape[:3]
    return np.moveaxis(windows, 3, -1).reshape(n, Ho * Wo, -1)


class ConvexConvMixin:
    """The convolutional fit and forward pass, mixed into `ConvexReLUClassifier` (which supplies the labels,
    losses, `predict`, `predict_proba` and the parameter checks)."""

    _auto_lam_fraction = 0.005

    def _geometry(self, d: int) -> tuple[tuple[int, int, int], tuple[int, int], tuple[int, int]]:
        """((H, W, C), window, stride) from the parameters and the number of features d."""
        shape = (1, d) if self.image_shape is None else tuple(int(s) for s in np.atleast_1d(self.image_shape))
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W) or (H, W, C) of positive integers; got {self.image_shape!r}")
        if int(np.prod(shape)) != d:
            raise ValueError(f"image_shape {self.image_shape!r} has {int(np.prod(shape))} pixels; X has {d} features")
        pairs = []
        for name, value in (("patch", self.patch), ("stride", self.stride)):
            pair = (value, value) if np.ndim(value) == 0 else tuple(value)
            if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in pair):
                raise ValueError(f"{name} must be a positive integer or a pair of them; got {value!r}")
            pairs.append(pair)
        # A window never exceeds the image (a 1-D signal, image_shape=None, gets windows of one row).
        window = (min(pairs[0][0], shape[0]), min(pairs[0][1], shape[1]))
        return shape, window, (int(pairs[1][0]), int(pairs[1][1]))

    def _features(self, X: np.ndarray) -> np.ndarray:
        """x̃_k/K for every image and position: (n, K, h) float64 (h counts the bias with `fit_intercept`)."""
        shape, window, stride = self._geometry_
        images = ((X - self.x_mean_) / self.x_scale_).reshape((X.shape[0], *shape))
        patches = numpy_patches(images, window, stride)
        if self.fit_intercept:
            patches = np.concatenate([patches, np.ones(patches.shape[:2] + (1,))], axis=2)
        return patches / patches.shape[1]

    def _fit_at(self, X: np.ndarray, Y: np.ndarray, loss: _losses.Loss, seed: int, path_length=None) -> None:
        self._geometry_ = self._geometry(X.shape[1])
        shape, window, stride = self._geometry_
        self.n_positions_ = int(np.prod(patch_grid(shape, window, stride)))
        mean, scale = (float(X.mean()), float(X.std())) if self.standardize else (0.0, 1.0)
        constant = scale <= 10 * np.finfo(np.float64).eps * max(1.0, abs(mean))
        self.x_mean_, self.x_scale_ = mean, 1.0 if constant else scale
        F = self._features(X)  # (n, K, h)
        n, K, h = F.shape
        dtype = np.dtype(self.dtype)
        gates = sample_gates(jax.random.key(seed), h, int(self.n_gates), dtype=jnp.float32)
        self.gates_ = np.asarray(gates, np.float64)

        n_pad = padded_rows(n)
        Fp = np.zeros((n_pad, K, h), dtype)
        Fp[:n] = F
        masks = np.zeros((n_pad, K, gates.shape[1]), bool)
        masks[:n] = np.asarray(activation_masks(jnp.asarray(F, jnp.float32), gates))
        Yp = np.tile(np.asarray(self._fill(loss, Y.shape[1]), dtype), (n_pad, 1))
        Yp[:n] = Y
        ratio = n / n_pad  # λ·n/n_pad on the padded rows gives the real rows' minimiser
        unit, unit_padded = (float(objective_unit(T, loss)) for T in (Y, Yp))
        tol = self.tol * ratio * unit / unit_padded
        penalty = self.penalty if Y.shape[1] > 1 else "group"
        yp = Yp[:, 0] if Y.shape[1] == 1 else Yp
        Fj, Mj = jnp.asarray(Fp), jnp.asarray(masks)

        self.lam_max_ = float(lam_max(Fj, yp, Mj, loss, penalty=penalty)) / ratio
        self.lam_ = self._auto_lam_fraction * self.lam_max_ if isinstance(self.lam, str) else float(self.lam)
        if self.model == "gated":
            polish = self.solver != "fista"
            sol = solve_gated(
                Fj,
                yp,
                Mj,
                self.lam_ * ratio,
                loss=loss,
                penalty=penalty,
                tol=tol,
                max_iters=self.max_iter,
                polish=polish,
            )
            net = to_network(sol, jnp.asarray(gates, Fj.dtype))
        else:
            method = "al" if self.solver == "auto" else self.solver
            sol = solve_relu(
                Fj,
                yp,
                Mj,
                self.lam_ * ratio,
                loss=loss,
                penalty=penalty,
                method=method,
                tol=tol,
                max_iters=self.max_iter,
            )
            net = to_network(sol, X=Fj)
        net = net.prune()
        self.filters_ = np.asarray(net.W1, np.float64)  # (h, m): the last entry of each filter is its bias
        self.second_layer_ = np.asarray(net.w2, np.float64)  # (m, c)
        self.neuron_gates_ = None if net.gates is None else np.asarray(net.gates, np.float64)
        self.n_neurons_ = int(self.filters_.shape[1])
        padding = self._padding_objective(loss, n_pad - n, n_pad, Y.shape[1])
        self.objective_ = float((float(sol.objective) - padding) / ratio)
        self.gap_ = float(sol.gap) / ratio
        self.status_ = Status(int(sol.status)).name.lower()
        self.n_iter_ = int(sol.iterations)
        if self.status_ != "converged":
            warnings.warn(self._convergence_message(), ConvergenceWarning, stacklevel=3)

    def _network_outputs(self, F: np.ndarray) -> np.ndarray:
        """Σ_k act(x̃_k W1) w2 on features (n, K, h): (n, c) float64."""
        pre = F @ self.filters_
        gates = self.neuron_gates_
        hidden = np.maximum(pre, 0.0) if gates is None else np.where(F @ gates >= 0, pre, 0.0)
        return hidden.sum(axis=1) @ self.second_layer_

    def _raw_predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = sk_validate_data(self, X, reset=False, dtype=np.float64)
        return self._network_outputs(self._features(X))
