"""scikit-learn estimators: fit a two-layer (gated) ReLU network to a certified optimum, predict on new data.

    min_W  L(Σ_i D_i X̃ w_i, y) + λ Σ_i Σ_k ‖W[i, :, k]‖₂,    X̃ = [(X − mean)/std, 1],  D_i = diag(1[X̃ g_i ≥ 0])

`fit` standardizes the columns of X (and, for regression, the targets) with training statistics, adds a
bias column, samples `n_gates` Gaussian gates from `random_state`, and solves the convex program (gated
ReLU by R-FISTA + Newton, or exact ReLU by augmented Lagrangian or ADMM). The gates and the network read
off the solution are kept, so `predict` works on new rows: hidden unit j computes
1[x̃·g_j ≥ 0](x̃·w_j) (gated) or relu(x̃·w_j) (ReLU), and the output is Σ_j α_j · hidden_j.

Rows are padded (with zero rows that no pattern covers) to a size from a fixed ladder (256, then 2^k or
1.5·2^k), and λ and tol are rescaled by n / n_padded, which leaves the solution unchanged; columns are
padded with zeros to a multiple of 8 (their weights stay zero). Fits of similar sizes (the folds of a
cross-validation, a grid search) then share one compiled program instead of compiling one each.

Needs scikit-learn (`pip install 'convexnn[demo]'`); the rest of convexnn does not.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("convexnn.estimators needs scikit-learn: pip install 'convexnn[demo]'") from err

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _sk_validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from . import losses as _losses
from .networks import to_network
from .patterns import sample_gates
from .solution import Status
from .solvers.gated import solve_gated
from .solvers.relu import solve_relu

__all__ = ["ConvexReLURegressor", "ConvexReLUClassifier"]

_MODELS = ("gated", "relu")
_SOLVERS = {"gated": ("auto", "fista"), "relu": ("auto", "al", "admm")}


def padded_rows(n: int) -> int:
    """The row count a fit on n rows is solved at: 256, then the next 2^k or 1.5·2^k (a third more at most)."""
    if n <= 256:
        return 256
    k = math.floor(math.log2(n))
    return 2**k if n == 2**k else (3 * 2 ** (k - 1) if n <= 3 * 2 ** (k - 1) else 2 ** (k + 1))


def padded_columns(d: int) -> int:
    """The column count a fit on d features is solved at: the next multiple of 8."""
    return 8 * math.ceil(d / 8)


class _ConvexReLUBase(BaseEstimator):
    """Shared fit/predict machinery; the subclasses choose the loss and the targets."""

    # Parameters are stored as given and checked in `fit` (scikit-learn's convention), hence no annotations
    # here: a type checker in __init__ would reject what `set_params` must accept.
    def __init__(
        self,
        n_gates=64,
        lam=1e-3,
        *,
        model="gated",
        solver="auto",
        loss=None,
        tol=1e-5,
        max_iter=10_000,
        standardize=True,
        fit_intercept=True,
        random_state=None,
        dtype="float32",
    ):
        self.n_gates = n_gates
        self.lam = lam
        self.model = model
        self.solver = solver
        self.loss = loss
        self.tol = tol
        self.max_iter = max_iter
        self.standardize = standardize
        self.fit_intercept = fit_intercept
        self.random_state = random_state
        self.dtype = dtype

    # -- parameters and inputs -------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.model not in _MODELS:
            raise ValueError(f"model must be one of {_MODELS}; got {self.model!r}")
        if self.solver not in _SOLVERS[self.model]:
            options = _SOLVERS[self.model]
            raise ValueError(f"solver must be one of {options} for model={self.model!r}; got {self.solver!r}")
        if not (isinstance(self.n_gates, int | np.integer) and self.n_gates >= 1):
            raise ValueError(f"n_gates must be a positive integer; got {self.n_gates!r}")
        if not (np.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be finite and >= 0; got {self.lam!r}")
        if not (np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be > 0; got {self.tol!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("dtype='float64' needs jax.config.update('jax_enable_x64', True)")

    def _features(self, X: np.ndarray) -> np.ndarray:
        """X̃ = [(X − mean)/std, 1] in float64, with the training statistics."""
        Xf = np.asarray(X, dtype=np.float64)
        if self.standardize:
            Xf = (Xf - self.x_mean_) / self.x_scale_
        if self.fit_intercept:
            Xf = np.hstack([Xf, np.ones((Xf.shape[0], 1))])
        return Xf

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2**31 - 1))
        return int(rs)

    # -- fitting ---------------------------------------------------------------------------------------------

    def _fit_targets(self, X: np.ndarray, Y: np.ndarray, loss: _losses.Loss, fill: np.ndarray) -> None:
        """Solve the convex program on features of X for targets Y (n, c) in the loss's form.

        `fill` (c,) is the target of the padding rows: one whose loss gradient vanishes at ŷ = 0.
        """
        self._check_params()
        if self.standardize:
            self.x_mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.x_scale_ = np.where(scale > 0, scale, 1.0)
        F = self._features(X)
        n, d = F.shape
        dtype = np.dtype(self.dtype)
        gates = sample_gates(jax.random.key(self._seed()), d, int(self.n_gates), dtype=jnp.float32)
        self.gates_ = np.asarray(gates, np.float64)
        masks = F @ self.gates_ >= 0

        # Zero columns get zero weights, and zero rows without patterns add nothing the weights can change.
        n_pad, d_pad = padded_rows(n), padded_columns(d)
        ratio = n / n_pad
        Fp = np.zeros((n_pad, d_pad), dtype)
        Fp[:n, :d] = F
        Mp = np.zeros((n_pad, masks.shape[1]), bool)
        Mp[:n] = masks
        Yp = np.tile(np.asarray(fill, dtype), (n_pad, 1))
        Yp[:n] = Y
        y_arg = Yp[:, 0] if Y.shape[1] == 1 else Yp
        # (1/n_pad)·Σ rows = (n/n_pad)·(1/n)·Σ real rows + padding terms, so λ·n/n_pad gives the same minimiser.
        lam, tol = self.lam * ratio, self.tol * ratio
        if self.model == "gated":
            sol = solve_gated(
                Fp, y_arg, Mp, lam, loss=loss, tol=tol, max_iters=self.max_iter, polish=self.solver != "fista"
            )
            net = to_network(sol, jnp.asarray(np.pad(self.gates_, ((0, d_pad - d), (0, 0))), dtype))
        else:
            method = "al" if self.solver == "auto" else self.solver
            sol = solve_relu(Fp, y_arg, Mp, lam, loss=loss, method=method, tol=tol, max_iters=self.max_iter)
            net = to_network(sol)
        net = net.prune()
        self.first_layer_ = np.asarray(net.W1, np.float64)[:d]  # (d̃, m)
        self.second_layer_ = np.asarray(net.w2, np.float64)  # (m, c)
        self.neuron_gates_ = None if net.gates is None else np.asarray(net.gates, np.float64)[:d]
        self.n_neurons_ = int(self.first_layer_.shape[1])
        const = self._padding_objective(loss, n_pad - n, n_pad, Y.shape[1])
        self.objective_ = float((float(sol.objective) - const) / ratio)
        self.gap_ = float(sol.gap) / ratio
        self.status_ = Status(int(sol.status)).name.lower()
        self.n_iter_ = int(sol.iterations)

    @staticmethod
    def _padding_objective(loss: _losses.Loss, pad: int, n_pad: int, c: int) -> float:
        """The padding rows' share of the padded loss at ŷ = 0 (log 2 per entry for logistic, else 0)."""
        if isinstance(loss, _losses.Logistic):
            return pad * math.log(2.0) / n_pad
        return 0.0

    def _raw_predict(self, X: Any) -> np.ndarray:
        """f(X) = Σ_j α_j act_j(x̃) as (n, c) float64."""
        check_is_fitted(self)
        X = _sk_validate_data(self, X, reset=False, dtype=np.float64)
        F = self._features(X)
        pre = F @ self.first_layer_
        if self.neuron_gates_ is None:
            hidden = np.maximum(pre, 0.0)
        else:
            hidden = np.where(F @ self.neuron_gates_ >= 0, pre, 0.0)
        return hidden @ self.second_layer_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class ConvexReLURegressor(RegressorMixin, _ConvexReLUBase):
    """Regression by a two-layer (gated) ReLU network trained to a certified global optimum.

    Minimises (1/(2nc)) Σ (f(x̃_j) − ỹ_j)² + λ Σ_i ‖w_i‖₂ over the convex reformulation, with ỹ the
    standardized targets (when `standardize`); multi-output y (n, c) is supported.

    Args:
        n_gates: P, the number of sampled gates (activation patterns; at most 2P neurons for "relu").
        lam: λ ≥ 0, the group-lasso weight (equivalently the weight decay λ/2 on both layers).
        model: "gated" (gated ReLU, the faster program) or "relu" (exact ReLU with cone constraints).
        solver: "auto" (gated: R-FISTA + Newton polish; relu: augmented Lagrangian), "fista" (gated, no
            polish), "al" or "admm" (relu).
        loss: only "squared" (or None) for regression.
        tol: stop when the duality gap ≤ tol · max(1, |objective|).
        max_iter: iteration budget of the solver.
        standardize: center and scale the columns of X and the targets with training statistics.
        fit_intercept: add a constant column (a bias for every neuron).
        random_state: seed of the gates (int, RandomState or None).
        dtype: "float32" (fast) or "float64" (needs jax_enable_x64) for the solve.

    Attributes:
        gates_ (d̃, P), first_layer_ (d̃, m), second_layer_ (m, c) with d̃ = d (+1 with the intercept);
        n_neurons_ m (non-zero neurons), objective_, gap_ (certified objective − optimum ≤ gap_, in the
        standardized units), status_ ("converged", "max_iters", "stalled", "nonfinite"), n_iter_.
    """

    def fit(self, X: Any, y: Any) -> ConvexReLURegressor:
        """Fit on X (n, d) and y (n,) or (n, c)."""
        X, y = _sk_validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        if self.loss not in (None, "squared"):
            raise ValueError(f"loss must be 'squared' for regression; got {self.loss!r}")
        Y = y.reshape(y.shape[0], -1)
        self._one_output = y.ndim == 1
        if self.standardize:
            self.y_mean_ = Y.mean(axis=0)
            scale = Y.std(axis=0)
            self.y_scale_ = np.where(scale > 0, scale, 1.0)
            Y = (Y - self.y_mean_) / self.y_scale_
        self._fit_targets(X, Y, _losses.Squared(), np.zeros(Y.shape[1]))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """ŷ = f(x̃) (mapped back to the units of y): (n,) or (n, c)."""
        out = self._raw_predict(X)
        if self.standardize:
            out = out * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._one_output else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class ConvexReLUClassifier(ClassifierMixin, _ConvexReLUBase):
    """Classification by a two-layer (gated) ReLU network trained to a certified global optimum.

    Two classes: logistic loss (1/n) Σ log(1 + exp(−y_j f(x̃_j))) with labels ±1 and P(class 1) = σ(f).
    More: cross-entropy (1/n) Σ [logsumexp f(x̃_j) − f(x̃_j)_{y_j}] and probabilities softmax(f). With
    loss="squared", least squares on ±1 (binary) or one-hot targets (no `predict_proba`). The penalty is
    λ Σ_i Σ_k ‖W[i, :, k]‖₂ in every case.

    Args: as for `ConvexReLURegressor`, with loss None (logistic / cross-entropy as above) or "squared";
    standardize applies to X only.

    Attributes: as for `ConvexReLURegressor`, and classes_ (k,).
    """

    def fit(self, X: Any, y: Any) -> ConvexReLUClassifier:
        """Fit on X (n, d) and class labels y (n,)."""
        X, y = _sk_validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if self.loss not in (None, "squared"):
            raise ValueError(f"loss must be None (logistic / cross-entropy) or 'squared'; got {self.loss!r}")
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"the classifier needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})")
        codes = encoder.transform(y)
        if k == 2:
            Y = (2.0 * codes - 1.0)[:, None]  # labels ±1, one output
            loss = _losses.Squared() if self.loss == "squared" else _losses.Logistic()
            fill = np.zeros(1) if self.loss == "squared" else np.ones(1)
        else:
            Y = np.eye(k)[codes]
            loss = _losses.Squared() if self.loss == "squared" else _losses.CrossEntropy()
            fill = np.zeros(k) if self.loss == "squared" else np.full(k, 1.0 / k)  # softmax(0) = uniform
        self._fit_targets(X, Y, loss, fill)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """f(x̃): (n,) for two classes (positive favours classes_[1]), (n, k) otherwise."""
        out = self._raw_predict(X)
        return out[:, 0] if len(self.classes_) == 2 else out

    def predict(self, X: Any) -> np.ndarray:
        """The class of largest score: classes_[f > 0] (two classes), classes_[argmax f] (more)."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[index]

    def _has_probabilities(self) -> bool:
        return self.loss != "squared"

    @available_if(_has_probabilities)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, k): [1 − σ(f), σ(f)] (two classes) or softmax(f) (more)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.stack([1.0 - p, p], axis=1)
        z = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @available_if(_has_probabilities)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """log of `predict_proba`, computed stably."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return np.stack([-np.logaddexp(0.0, scores), -np.logaddexp(0.0, -scores)], axis=1)
        z = scores - scores.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
