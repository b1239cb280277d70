"""The machinery of the scikit-learn estimators (`convexnn.estimators`): scaling, padding, solving, predicting.

Rows are padded (with zero rows that no pattern covers) to a size from a fixed ladder (256, then 2^k or
1.5·2^k), and λ and tol are rescaled by n / n_padded, which leaves the solution unchanged; columns are
padded with zeros to a multiple of 8 (their weights stay zero). Fits of similar sizes (the folds of a
cross-validation, a grid search) then share one compiled program instead of compiling one each.
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
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import check_is_fitted
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("convexnn.estimators needs scikit-learn: pip install 'convexnn[demo]'") from err

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def sk_validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


from . import losses as _losses
from .certificates import objective_unit
from .networks import to_network
from .path import solve_path
from .patterns import sample_gates
from .solution import Solution, Status
from .solvers.gated import solve_gated
from .solvers.relu import solve_relu

__all__ = ["ConvexReLUBase", "is_real_scalar", "padded_rows", "padded_columns", "path_outputs", "sk_validate_data"]


_MODELS = ("gated", "relu")
_PENALTIES = ("nuclear", "group")
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


def is_real_scalar(x: Any) -> bool:
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
    if not is_real_scalar(lam) and not (isinstance(lam, np.ndarray) and lam.dtype.kind in "fiu"):
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
    penalty: str  # "group" or "nuclear" (the same program for one output; "group" is then used)

    def lam_max(self) -> float:
        """The smallest λ with the zero solution (gated): max_i of the dual norm of X̃ᵀ D_i ∇L(0), ℓ2 per
        output ("group") or spectral per pattern ("nuclear")."""
        G = np.asarray(self.loss.grad(jnp.zeros(self.Y.shape), jnp.asarray(self.Y), self.loss.normaliser(self.Y)))
        G = G.astype(np.float64)
        if self.penalty == "nuclear":
            blocks = np.einsum("nd,np,nc->pdc", self.F, self.masks.astype(np.float64), G)
            return float(np.max(np.linalg.norm(blocks, ord=2, axis=(1, 2))))
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


class ConvexReLUBase(BaseEstimator):
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
        penalty="nuclear",
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
        self.penalty = penalty
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
        if self.penalty not in _PENALTIES:
            raise ValueError(f"penalty must be one of {_PENALTIES}; got {self.penalty!r}")
        if not (isinstance(self.n_gates, int | np.integer) and self.n_gates >= 1):
            raise ValueError(f"n_gates must be a positive integer; got {self.n_gates!r}")
        if not (is_real_scalar(self.tol) and np.isfinite(self.tol) and self.tol > 0):
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
        penalty = self.penalty if Y.shape[1] > 1 else "group"
        yp = Yp[:, 0] if Y.shape[1] == 1 else Yp
        return _Problem(F, masks, Y, loss, Fp, Mp, yp, Gp, n / n_pad, tol_scale, penalty)

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
                penalty=problem.penalty,
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
            penalty=problem.penalty,
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
            penalty=problem.penalty,
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
        gates = jnp.asarray(problem.gates)
        net = (to_network(sol, gates) if self.model == "gated" else to_network(sol, X=problem.Fp)).prune()
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
        elif self.status_ == "slow":
            hint = "ADMM stopped early: at its measured rate tol lay far past max_iter. Try method='al' or larger tol."
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
        X = sk_validate_data(self, X, reset=False, dtype=np.float64)
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


def path_outputs(weights: Any, F: np.ndarray, gates: np.ndarray) -> np.ndarray:
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
