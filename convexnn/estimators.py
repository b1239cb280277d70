"""scikit-learn estimators: fit a two-layer (gated) ReLU network to a certified optimum, predict on new data.

    min_W  L(Σ_i D_i X̃ w_i, y) + λ Σ_i Σ_k ‖W[i, :, k]‖₂,    X̃ = [(X − mean)/std, 1],  D_i = diag(1[X̃ g_i ≥ 0])

`fit` standardizes the columns of X (and, for regression, the targets) with training statistics, adds a
bias column, samples `n_gates` Gaussian gates from `random_state`, and solves the convex program (gated
ReLU by R-FISTA + Newton, or exact ReLU by augmented Lagrangian or ADMM). The gates and the network read
off the solution are kept, so `predict` works on new rows: hidden unit j computes
1[x̃·g_j ≥ 0](x̃·w_j) (gated) or relu(x̃·w_j) (ReLU), and the output is Σ_j α_j · hidden_j.

`ConvexReLURegressorCV` and `ConvexReLUClassifierCV` choose λ by cross-validation, as scikit-learn's
`LassoCV`: one warm-started λ path (`convexnn.solve_path`) per fold, every λ scored on the held-out rows,
then a refit on all rows at the best λ.

Rows are padded (with zero rows that no pattern covers) to a size from a fixed ladder (256, then 2^k or
1.5·2^k), and λ and tol are rescaled by n / n_padded, which leaves the solution unchanged; columns are
padded with zeros to a multiple of 8 (their weights stay zero). Fits of similar sizes (the folds of a
cross-validation, a grid search) then share one compiled program instead of compiling one each.

Needs scikit-learn (`pip install 'convexnn[demo]'`); the rest of convexnn does not.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
    from sklearn.model_selection import check_cv
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
from .certificates import objective_unit
from .networks import to_network
from .path import solve_path
from .patterns import sample_gates
from .solution import Solution, Status
from .solvers.gated import solve_gated
from .solvers.relu import solve_relu

__all__ = ["ConvexReLURegressor", "ConvexReLUClassifier", "ConvexReLURegressorCV", "ConvexReLUClassifierCV"]

_MODELS = ("gated", "relu")
_SOLVERS = {"gated": ("auto", "fista"), "relu": ("auto", "al", "admm")}
_SELECTIONS = ("best", "one_se")


def padded_rows(n: int) -> int:
    """The row count a fit on n rows is solved at: 256, then the next 2^k or 1.5·2^k (a third more at most)."""
    if n <= 256:
        return 256
    k = math.floor(math.log2(n))
    return 2**k if n == 2**k else (3 * 2 ** (k - 1) if n <= 3 * 2 ** (k - 1) else 2 ** (k + 1))


def padded_columns(d: int) -> int:
    """The column count a fit on d features is solved at: the next multiple of 8."""
    return 8 * math.ceil(d / 8)


def _is_real_scalar(x: Any) -> bool:
    return isinstance(x, numbers.Real | np.floating | np.integer) and not isinstance(x, bool)


def _check_lam(lam: Any) -> None:
    """lam must be one real number ≥ 0 or "auto"; a list of them belongs to the CV estimators."""
    if isinstance(lam, str):
        if lam != "auto":
            raise ValueError(f"lam must be a number >= 0 or 'auto'; got {lam!r}")
        return
    if np.ndim(lam) != 0:
        raise ValueError(
            f"lam must be a scalar (one λ per fit); got {type(lam).__name__} of shape {np.shape(lam)}. To choose λ "
            "among several, use ConvexReLURegressorCV / ConvexReLUClassifierCV(lams=...) or GridSearchCV"
        )
    if not _is_real_scalar(lam) and not (isinstance(lam, np.ndarray) and lam.dtype.kind in "fiu"):
        raise ValueError(f"lam must be a real number >= 0 or 'auto'; got {lam!r}")
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0; got {lam!r}")


def _mean_and_scale(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of a finite float64 A (n, k), without overflow or underflow.

    Each column is divided by its largest magnitude first, so squares stay in range at any scale (np.std of
    1e200 is inf; of 1e-200, 0). Columns constant up to rounding (std ≤ 10 eps of their magnitude) get scale 1.
    """
    top = np.max(np.abs(A), axis=0)
    top = np.where(top > 0, top, 1.0)
    B = A / top
    std = B.std(axis=0)
    return B.mean(axis=0) * top, np.where(std > 10 * np.finfo(np.float64).eps, std * top, 1.0)


class _Scaling(NamedTuple):
    """Training statistics: X̃ = [(X − x_mean)/x_scale, 1], outputs ŷ = f·y_scale + y_mean (None: identity)."""

    x_mean: np.ndarray | None
    x_scale: np.ndarray | None
    y_mean: np.ndarray | None
    y_scale: np.ndarray | None
    intercept: bool

    def features(self, X: np.ndarray) -> np.ndarray:
        F = np.asarray(X, dtype=np.float64)
        if self.x_mean is not None:
            F = (F - self.x_mean) / self.x_scale
        if self.intercept:
            F = np.hstack([F, np.ones((F.shape[0], 1))])
        return F

    def targets(self, Y: np.ndarray) -> np.ndarray:
        return Y if self.y_mean is None else (Y - self.y_mean) / self.y_scale

    def outputs(self, Z: np.ndarray) -> np.ndarray:
        return Z if self.y_mean is None else Z * self.y_scale + self.y_mean


class _Problem(NamedTuple):
    """One fit's convex program: float64 features, masks and targets, and their padded copies for the solver."""

    F: np.ndarray  # (n, d̃) float64
    masks: np.ndarray  # (n, P) bool
    Y: np.ndarray  # (n, c) float64, in the loss's form (standardized for regression)
    loss: _losses.Loss
    Fp: np.ndarray  # (n_pad, d_pad) in the solve dtype
    Mp: np.ndarray  # (n_pad, P) bool
    yp: np.ndarray  # (n_pad,) or (n_pad, c) in the solve dtype
    gates: np.ndarray  # (d_pad, P) in the solve dtype
    ratio: float  # n / n_pad: λ is scaled by it
    tol_scale: float  # what tol is scaled by: n / n_pad times u(real rows) / u(padded rows)

    def lam_max(self) -> float:
        """max_i ‖X̃ᵀ D_i ∇L(0)‖₂ over patterns and outputs: the smallest λ with the zero solution."""
        G = np.asarray(self.loss.grad(jnp.zeros(self.Y.shape), jnp.asarray(self.Y), self.loss.normaliser(self.Y)))
        G = G.astype(np.float64)
        norms = [np.linalg.norm(self.F.T @ (self.masks * G[:, [k]]), axis=0) for k in range(G.shape[1])]
        return float(np.max(norms))


def _check_magnitude(name: str, A: np.ndarray, dtype: np.dtype, n_pad: int) -> None:
    """Refuse entries whose squares would overflow the solver's sums in `dtype` (unstandardized data)."""
    top = float(np.max(np.abs(A))) if A.size else 0.0
    limit = math.sqrt(float(np.finfo(dtype).max) / n_pad)
    if top > limit:
        raise ValueError(
            f"{name} has entries of magnitude up to {top:.3g}, too large for a {dtype} solve (sums of squares of "
            f"entries above {limit:.3g} overflow); use standardize=True or dtype='float64'"
        )


class _ConvexReLUBase(BaseEstimator):
    """Shared fit/predict machinery; the subclasses choose the loss and the targets."""

    # Parameters are stored as given and checked in `fit` (scikit-learn's convention), hence no annotations
    # here: a type checker in __init__ would reject what `set_params` must accept.
    def __init__(
        self,
        n_gates=64,
        lam="auto",
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
        if not (_is_real_scalar(self.tol) and np.isfinite(self.tol) and self.tol > 0):
            raise ValueError(f"tol must be a number > 0; got {self.tol!r}")
        if not (isinstance(self.max_iter, int | np.integer) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("dtype='float64' needs jax.config.update('jax_enable_x64', True)")

    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.randint(0, 2**31 - 1))
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2**31 - 1))
        return int(rs)

    def _scaling(self, X: np.ndarray, Y: np.ndarray) -> _Scaling:
        """Statistics of the training rows (targets are standardized by the regressor only)."""
        x_mean = x_scale = y_mean = y_scale = None
        if self.standardize:
            x_mean, x_scale = _mean_and_scale(X)
            if self._standardize_targets:
                y_mean, y_scale = _mean_and_scale(Y)
        return _Scaling(x_mean, x_scale, y_mean, y_scale, bool(self.fit_intercept))

    def _problem(self, scaling: _Scaling, X: np.ndarray, Y: np.ndarray, loss: _losses.Loss, seed: int) -> _Problem:
        """The padded program for rows X, targets Y (n, c) in the loss's form, and gates from `seed`."""
        F = scaling.features(X)
        Y = scaling.targets(Y)
        n, d = F.shape
        dtype = np.dtype(self.dtype)
        gates = np.asarray(sample_gates(jax.random.key(seed), d, int(self.n_gates), dtype=jnp.float32), np.float64)
        masks = F @ gates >= 0

        # Zero columns get zero weights, and zero rows without patterns add nothing the weights can change.
        n_pad, d_pad = padded_rows(n), padded_columns(d)
        _check_magnitude("X" if scaling.x_mean is None else "the standardized X", F, dtype, n_pad)
        _check_magnitude("y" if scaling.y_mean is None else "the standardized y", Y, dtype, n_pad)
        Fp = np.zeros((n_pad, d_pad), dtype)
        Fp[:n, :d] = F
        Mp = np.zeros((n_pad, masks.shape[1]), bool)
        Mp[:n] = masks
        Yp = np.tile(np.asarray(self._fill(loss, Y.shape[1]), dtype), (n_pad, 1))
        Yp[:n] = Y
        Gp = np.zeros((d_pad, gates.shape[1]), dtype)
        Gp[:d] = gates
        # The stopping rule gap ≤ tol·max(u, |objective|) on the padded rows, whose objective and gap are the real
        # rows' times n/n_pad (plus a constant), is the real rows' rule with tol scaled by n/n_pad · u / u_padded.
        unit, unit_padded = (float(objective_unit(T, loss)) for T in (Y, Yp))
        tol_scale = (n / n_pad) * unit / unit_padded
        return _Problem(F, masks, Y, loss, Fp, Mp, Yp[:, 0] if Y.shape[1] == 1 else Yp, Gp, n / n_pad, tol_scale)

    @staticmethod
    def _fill(loss: _losses.Loss, c: int) -> np.ndarray:
        """The target of the padding rows: one whose loss gradient vanishes at ŷ = 0."""
        if isinstance(loss, _losses.Logistic):
            return np.ones(c)
        if isinstance(loss, _losses.CrossEntropy):
            return np.full(c, 1.0 / c)  # softmax(0) = uniform
        return np.zeros(c)

    # -- fitting ---------------------------------------------------------------------------------------------

    def _solve(self, problem: _Problem, lam: float, path_length: int | None = None) -> Solution:
        """The solution at λ: one solve, or (given `path_length` m) the first solve of a path over m copies of λ,
        which is the program the CV folds compiled when the padded shapes agree (the other m − 1 solves start
        at the optimum and stop at once)."""
        # (1/n_pad)·Σ rows = (n/n_pad)·(1/n)·Σ real rows + padding terms, so λ·n/n_pad gives the same minimiser.
        r = problem.ratio
        if path_length is not None:
            path = self._path(problem, np.full(path_length, lam), self.tol)
            return jax.tree.map(lambda a: a[0], path)
        Fp, yp, Mp = problem.Fp, problem.yp, problem.Mp
        if self.model == "gated":
            polish = self.solver != "fista"
            return solve_gated(
                Fp,
                yp,
                Mp,
                lam * r,
                loss=problem.loss,
                tol=self.tol * problem.tol_scale,
                max_iters=self.max_iter,
                polish=polish,
            )
        method = "al" if self.solver == "auto" else self.solver
        return solve_relu(
            Fp,
            yp,
            Mp,
            lam * r,
            loss=problem.loss,
            method=method,
            tol=self.tol * problem.tol_scale,
            max_iters=self.max_iter,
        )

    def _path(self, problem: _Problem, lams: np.ndarray, tol: float) -> Solution:
        """Solutions for every λ in `lams` (largest first) to `tol`: one warm-started `solve_path` program."""
        r = problem.ratio
        return solve_path(
            problem.Fp,
            problem.yp,
            problem.Mp,
            np.asarray(lams, problem.Fp.dtype) * r,
            model=self.model,
            mode="warm",
            loss=problem.loss,
            method="al" if self.solver == "auto" else self.solver,
            tol=tol * problem.tol_scale,
            max_iters=self.max_iter,
            polish=self.model == "relu" or self.solver != "fista",
        )

    def _fit_at(self, X: np.ndarray, Y: np.ndarray, loss: _losses.Loss, seed: int, path_length=None) -> None:
        """Fit on X and targets Y (n, c) in the loss's form at self.lam (the CV estimators: at self.lam_, by a
        path of `path_length` copies of it)."""
        scaling = self._scaling(X, Y)
        problem = self._problem(scaling, X, Y, loss, seed)
        self._store_scaling(scaling)
        self.gates_ = problem.gates[: problem.F.shape[1]].astype(np.float64)
        self.lam_max_ = problem.lam_max()
        if path_length is None:
            auto = isinstance(self.lam, str)
            self.lam_ = self._auto_lam_fraction * self.lam_max_ if auto else float(self.lam)
        sol = self._solve(problem, self.lam_, path_length)

        d = problem.F.shape[1]
        net = (to_network(sol, jnp.asarray(problem.gates)) if self.model == "gated" else to_network(sol)).prune()
        self.first_layer_ = np.asarray(net.W1, np.float64)[:d]  # (d̃, m)
        self.second_layer_ = np.asarray(net.w2, np.float64)  # (m, c)
        self.neuron_gates_ = None if net.gates is None else np.asarray(net.gates, np.float64)[:d]
        self.n_neurons_ = int(self.first_layer_.shape[1])
        n_pad = problem.Fp.shape[0]
        const = self._padding_objective(loss, n_pad - problem.F.shape[0], n_pad, problem.Y.shape[1])
        self.objective_ = float((float(sol.objective) - const) / problem.ratio)
        self.gap_ = float(sol.gap) / problem.ratio
        self.status_ = Status(int(sol.status)).name.lower()
        self.n_iter_ = int(sol.iterations)

        if not np.all(np.isfinite(self._scaling_.outputs(self._network_outputs(problem.F)))):
            raise ValueError(
                "the fitted network's predictions on the training rows are not finite: the targets' scale "
                f"(y_scale_ = {self._scaling_.y_scale}) is beyond float64; rescale y"
            )
        if self.status_ != "converged":
            warnings.warn(self._convergence_message(), ConvergenceWarning, stacklevel=3)

    def _convergence_message(self) -> str:
        head = (
            f"{type(self).__name__} did not converge: status {self.status_!r} after {self.n_iter_} iterations, "
            f"duality gap {self.gap_:.3g} (objective {self.objective_:.6g}, tol={self.tol}). "
        )
        if self.status_ == "max_iters":
            hint = f"Try a larger max_iter (now {self.max_iter}), a larger tol, or dtype='float64'."
        elif self.status_ == "stalled":
            hint = f"Rounding in {self.dtype} stopped the progress: try dtype='float64', a larger tol or a larger lam."
        else:
            hint = "The iterates diverged (the last finite one is kept): try dtype='float64' or a larger lam."
        return head + hint

    def _store_scaling(self, scaling: _Scaling) -> None:
        self._scaling_ = scaling
        for name in ("x_mean", "x_scale", "y_mean", "y_scale"):
            if getattr(scaling, name) is not None:
                setattr(self, name + "_", getattr(scaling, name))

    @staticmethod
    def _padding_objective(loss: _losses.Loss, pad: int, n_pad: int, c: int) -> float:
        """The padding rows' share of the padded loss, at ŷ = 0 with their `_fill` targets: log 2 per entry
        (logistic, over n_pad·c entries), log c per row (cross-entropy, over n_pad rows), 0 (squared)."""
        if isinstance(loss, _losses.Logistic):
            return pad * math.log(2.0) / n_pad
        if isinstance(loss, _losses.CrossEntropy):
            return pad * math.log(c) / n_pad
        return 0.0

    def _network_outputs(self, F: np.ndarray) -> np.ndarray:
        """f(X̃) = Σ_j α_j act_j(x̃) as (n, c) float64, in the standardized units."""
        pre = F @ self.first_layer_
        if self.neuron_gates_ is None:
            hidden = np.maximum(pre, 0.0)
        else:
            hidden = np.where(F @ self.neuron_gates_ >= 0, pre, 0.0)
        return hidden @ self.second_layer_

    def _raw_predict(self, X: Any) -> np.ndarray:
        """The network's outputs on new rows, (n, c) float64 (in the units of y for regression)."""
        check_is_fitted(self)
        X = _sk_validate_data(self, X, reset=False, dtype=np.float64)
        return self._scaling_.outputs(self._network_outputs(self._scaling_.features(X)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    def fit(self, X: Any, y: Any):
        """Fit on X (n, d) and y: targets (n,) or (n, c) for regression, class labels (n,) for classification."""
        X, y = self._validate_fit(X, y)
        Y, loss = self._encode(y)
        self._check_params()
        _check_lam(self.lam)
        self._fit_at(X, Y, loss, self._seed())
        return self


class _CVMixin:
    """λ by K-fold cross-validation: a warm λ path per fold, scored on the held-out rows; refit at the best."""

    # scikit-learn reads the parameters off this signature (the base's `lam` is replaced by the grid).
    def __init__(
        self,
        n_gates=64,
        *,
        lams=None,
        n_lams=10,
        lam_ratio=1e-3,
        cv=5,
        selection="best",
        scoring=None,
        cv_tol=1e-3,
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
        self.lams = lams
        self.n_lams = n_lams
        self.lam_ratio = lam_ratio
        self.cv = cv
        self.selection = selection
        self.scoring = scoring
        self.cv_tol = cv_tol
        self.model = model
        self.solver = solver
        self.loss = loss
        self.tol = tol
        self.max_iter = max_iter
        self.standardize = standardize
        self.fit_intercept = fit_intercept
        self.random_state = random_state
        self.dtype = dtype

    def _check_cv_params(self) -> None:
        if self.lams is not None:
            lams = np.asarray(self.lams)
            if lams.ndim != 1 or lams.size == 0 or lams.dtype.kind not in "fiu":
                raise ValueError(f"lams must be a non-empty 1-D array of numbers; got {self.lams!r}")
            if not (np.all(np.isfinite(lams)) and np.all(lams >= 0)):
                raise ValueError(f"lams must be finite and >= 0; got {self.lams!r}")
        if not (isinstance(self.n_lams, int | np.integer) and self.n_lams >= 1):
            raise ValueError(f"n_lams must be a positive integer; got {self.n_lams!r}")
        if not (_is_real_scalar(self.lam_ratio) and 0 < self.lam_ratio <= 1):
            raise ValueError(f"lam_ratio must be in (0, 1]; got {self.lam_ratio!r}")
        if not (_is_real_scalar(self.cv_tol) and np.isfinite(self.cv_tol) and self.cv_tol > 0):
            raise ValueError(f"cv_tol must be a number > 0; got {self.cv_tol!r}")
        if self.selection not in _SELECTIONS:
            raise ValueError(f"selection must be one of {_SELECTIONS}; got {self.selection!r}")
        if self.scoring is not None and self.scoring not in self._scorings():
            raise ValueError(f"scoring must be None or one of {self._scorings()}; got {self.scoring!r}")

    def fit(self, X: Any, y: Any):
        """Choose λ by cross-validation on X (n, d) and y, then refit on all rows at that λ."""
        X, y = self._validate_fit(X, y)
        Y, loss = self._encode(y)
        self._check_params()
        self._check_cv_params()
        seed = self._seed()
        if self.lams is None:
            full = self._problem(self._scaling(X, Y), X, Y, loss, seed)
            # Below λ_max, whose solution (zero) needs no fold to tell how it scores.
            lams = full.lam_max() * np.logspace(0, np.log10(self.lam_ratio), int(self.n_lams) + 1)[1:]
        else:
            lams = np.sort(np.asarray(self.lams, np.float64))[::-1]
        scoring = self._scorings()[0] if self.scoring is None else self.scoring
        splits = list(check_cv(self.cv, y, classifier=is_classifier(self)).split(X, y))
        scores = np.empty((len(lams), len(splits)))
        iterations = np.empty((len(lams), len(splits)), int)
        failed = 0
        for k, (train, test) in enumerate(splits):
            scaling = self._scaling(X[train], Y[train])
            problem = self._problem(scaling, X[train], Y[train], loss, seed)
            path = self._path(problem, lams, self.cv_tol)
            failed += int(np.sum(np.asarray(path.status) != Status.CONVERGED))
            iterations[:, k] = np.asarray(path.iterations)
            F = scaling.features(X[test])
            Z = scaling.outputs(_path_outputs(path.weights, F, problem.gates[: F.shape[1]]))
            scores[:, k] = [self._score_outputs(z, y[test], scoring) for z in Z]
        if failed:
            warnings.warn(
                f"{type(self).__name__}: {failed} of {scores.size} path solves (λ × fold) did not converge; their "
                "validation scores may be off. Try a larger max_iter, a larger tol, dtype='float64' or a larger "
                "lam_ratio.",
                ConvergenceWarning,
                stacklevel=2,
            )
        mean = scores.mean(axis=1)
        best = int(np.argmax(mean))  # lams are in decreasing order: ties go to the larger λ
        if self.selection == "one_se" and len(splits) > 1:
            se = scores[best].std(ddof=1) / math.sqrt(len(splits))
            best = int(np.flatnonzero(mean >= mean[best] - se)[0])
        self.lams_ = lams
        self.cv_scores_ = scores
        self.cv_n_iter_ = iterations
        self.lam_ = float(lams[best])
        self._fit_at(X, Y, loss, seed, path_length=len(lams))
        return self


def _path_outputs(weights: Any, F: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """The predictions f(X̃) (m, n, c) of every solution of a path, from its weights (m, P, d_pad[, c])."""
    d = F.shape[1]

    def blocks(W):
        W = np.asarray(W, np.float64)
        return (W if W.ndim == 4 else W[..., None])[:, :, :d]  # (m, P, d, c)

    if isinstance(weights, tuple | list):  # exact ReLU: relu(X̃ u_i) − relu(X̃ v_i)
        U, V = blocks(weights[0]), blocks(weights[1])
        UV = np.maximum(np.einsum("nd,mpdc->mnpc", F, np.concatenate([U, V], axis=1)), 0.0)
        return np.sum(UV[:, :, : U.shape[1]] - UV[:, :, U.shape[1] :], axis=2)
    on = F @ gates >= 0  # (n, P)
    return np.einsum("np,mnpc->mnc", on, np.einsum("nd,mpdc->mnpc", F, blocks(weights)))


class ConvexReLURegressor(RegressorMixin, _ConvexReLUBase):
    """Regression by a two-layer (gated) ReLU network trained to a certified global optimum.

    Minimises (1/(2nc)) Σ (f(x̃_j) − ỹ_j)² + λ Σ_i ‖w_i‖₂ over the convex reformulation, with ỹ the
    standardized targets (when `standardize`); multi-output y (n, c) is supported.

    Args:
        n_gates: P, the number of sampled gates (activation patterns; at most 2P neurons for "relu").
        lam: λ ≥ 0, the group-lasso weight (equivalently the weight decay λ/2 on both layers), or "auto":
            0.1 · λ_max (classifier: 0.005 · λ_max, any loss), with λ_max the smallest λ whose solution is
            zero on the standardized training problem (`lam_max_`). Chosen from held-out scores on four data
            sets (benchmarks/results/estimators.md): the squared loss on standardized targets fits noise
            below ~0.05 λ_max; classification (any loss) keeps improving down to ~0.005 λ_max.
        model: "gated" (gated ReLU, the faster program) or "relu" (exact ReLU with cone constraints).
        solver: "auto" (gated: R-FISTA + Newton polish; relu: augmented Lagrangian), "fista" (gated, no
            polish), "al" or "admm" (relu).
        loss: only "squared" (or None) for regression.
        tol: the solver's relative tolerance: stop when the duality gap ≤ tol · max(u, |objective|) on the
            training rows (u = 1 for standardized targets and for classification; the rule of `solve_gated`).
        max_iter: iteration budget of the solver.
        standardize: center and scale the columns of X and the targets with training statistics.
        fit_intercept: add a constant column (a bias for every neuron).
        random_state: seed of the gates (int, RandomState or None).
        dtype: "float32" (fast) or "float64" (needs jax_enable_x64) for the solve.

    A fit that does not end "converged" warns with scikit-learn's `ConvergenceWarning` (its status, gap,
    iterations and what to try) and keeps the last certified point.

    Attributes:
        gates_ (d̃, P), first_layer_ (d̃, m), second_layer_ (m, c) with d̃ = d (+1 with the intercept);
        n_neurons_ m (non-zero neurons), lam_ (the λ solved for), lam_max_ (λ_max of the standardized
        training problem), objective_, gap_ (certified objective − optimum ≤ gap_, in the standardized
        units), status_ ("converged", "max_iters", "stalled", "nonfinite"), n_iter_; x_mean_, x_scale_,
        y_mean_, y_scale_ with `standardize`.
    """

    _standardize_targets = True
    _auto_lam_fraction = 0.1

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = _sk_validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
        if self.loss not in (None, "squared"):
            raise ValueError(f"loss must be 'squared' for regression; got {self.loss!r}")
        # float64 before any statistics: a float32 y of scale 1e20 has squares beyond float32.
        return X, np.asarray(y, dtype=np.float64)

    def _encode(self, y: np.ndarray) -> tuple[np.ndarray, _losses.Loss]:
        self._one_output = y.ndim == 1
        return y.reshape(y.shape[0], -1), _losses.Squared()

    def _scorings(self) -> tuple[str, ...]:
        """The CV scores this estimator can rank λ by, the default first."""
        return ("r2", "neg_mean_squared_error")

    def _score_outputs(self, Z: np.ndarray, y: np.ndarray, scoring: str) -> float:
        pred = Z[:, 0] if y.ndim == 1 else Z
        return r2_score(y, pred) if scoring == "r2" else -mean_squared_error(y, pred)

    def predict(self, X: Any) -> np.ndarray:
        """ŷ = f(x̃) (mapped back to the units of y): (n,) or (n, c)."""
        out = self._raw_predict(X)
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

    _standardize_targets = False
    _auto_lam_fraction = 0.005

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = _sk_validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if self.loss not in (None, "squared"):
            raise ValueError(f"loss must be None (logistic / cross-entropy) or 'squared'; got {self.loss!r}")
        return X, y

    def _encode(self, y: np.ndarray) -> tuple[np.ndarray, _losses.Loss]:
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"the classifier needs samples of at least 2 classes; got 1 class ({self.classes_[0]!r})")
        codes = encoder.transform(y)
        squared = self.loss == "squared"
        if k == 2:  # labels ±1, one output
            return (2.0 * codes - 1.0)[:, None], _losses.Squared() if squared else _losses.Logistic()
        return np.eye(k)[codes], _losses.Squared() if squared else _losses.CrossEntropy()

    def _scorings(self) -> tuple[str, ...]:
        """The CV scores this estimator can rank λ by, the default first (log loss needs probabilities)."""
        return ("neg_log_loss", "accuracy") if self._has_probabilities() else ("accuracy",)

    def _score_outputs(self, Z: np.ndarray, y: np.ndarray, scoring: str) -> float:
        if scoring == "accuracy":
            index = (Z[:, 0] > 0).astype(int) if Z.shape[1] == 1 else np.argmax(Z, axis=1)
            return accuracy_score(y, self.classes_[index])
        codes = np.searchsorted(self.classes_, y)  # −(1/n) Σ_j −log p(y_j | x_j), computed stably
        if Z.shape[1] == 1:
            return -float(np.mean(np.logaddexp(0.0, -(2.0 * codes - 1.0) * Z[:, 0])))
        z = Z - Z.max(axis=1, keepdims=True)
        return float(np.mean(z[np.arange(len(codes)), codes] - np.log(np.exp(z).sum(axis=1))))

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


_CV_DOC = """

    λ is chosen by K-fold cross-validation, as scikit-learn's `LassoCV`: on each fold's training rows
    (standardized with their own statistics, the gates shared by all folds) one warm-started λ path
    (`convexnn.solve_path`: every λ started at the previous solution), every λ scored on the fold's
    held-out rows by `scoring`; the best mean score wins (ties: the larger λ), and the estimator is refit
    on all rows at that λ. The folds' padded problems have one shape, so they share one compiled program.

    Args:
        lams: the λ values to try (any order; `lams_` holds them largest first), or None: `n_lams` values
            log-spaced below λ_max (the smallest λ whose solution is zero, on the standardized problem of all
            rows) down to `lam_ratio` · λ_max: λ_max · lam_ratio^(k/n_lams), k = 1 … n_lams.
        n_lams, lam_ratio: the default grid (ignored when `lams` is given).
        cv: folds: an int (K-fold{strat}), a scikit-learn splitter or an iterable of (train, test) indices.
        selection: "best" (the λ of best mean score) or "one_se" (the largest λ whose mean score is within
            one standard error, over folds, of the best one: a sparser network).
        scoring: the held-out score: {score}
        cv_tol: the folds' tolerance (gap ≤ cv_tol · max(u, |objective|)); looser than the refit's `tol`,
            since ranking held-out scores needs less than a certificate: on the four data sets of
            benchmarks/results/estimators.md, 1e-3 chose the λ that 1e-5 chose, with 1.5–5× fewer iterations.
        the rest: as for `{base}`.

    Attributes: as for `{base}` (fitted at `lam_`), and lam_ (the chosen λ), lams_ (m,) the λ tried,
    largest first, cv_scores_ (m, K) the held-out score of every λ on every fold, cv_n_iter_ (m, K) the
    iterations each of those solves took.
    """


class ConvexReLURegressorCV(_CVMixin, ConvexReLURegressor):
    __doc__ = "ConvexReLURegressor with λ chosen by cross-validation." + _CV_DOC.format(
        score='"r2" (R², the default, as `score`) or "neg_mean_squared_error".', strat="", base="ConvexReLURegressor"
    )


class ConvexReLUClassifierCV(_CVMixin, ConvexReLUClassifier):
    __doc__ = "ConvexReLUClassifier with λ chosen by cross-validation." + _CV_DOC.format(
        score=(
            '"neg_log_loss" (the default; a proper score that, unlike\n            accuracy, does not tie on '
            'small folds) or "accuracy" (the default with loss="squared", which has\n            no probabilities).'
        ),
        strat=", stratified",
        base="ConvexReLUClassifier",
    )
