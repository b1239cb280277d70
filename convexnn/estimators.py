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
import warnings
from typing import Any

import numpy as np

try:
    from sklearn.base import ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
    from sklearn.model_selection import check_cv
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("convexnn.estimators needs scikit-learn: pip install 'convexnn[demo]'") from err

from . import losses as _losses
from ._conv_estimator import ConvexConvMixin
from ._estimator_base import ConvexReLUBase, is_real_scalar, padded_columns, padded_rows, path_outputs, sk_validate_data
from .solution import Status

__all__ = [
    "ConvexReLURegressor",
    "ConvexReLUClassifier",
    "ConvexReLURegressorCV",
    "ConvexReLUClassifierCV",
    "ConvexConvClassifier",
]
__all__ += ["padded_rows", "padded_columns"]

_SELECTIONS = ("best", "one_se")  # the padding ladder, for tests and benchmarks


class CVMixin:
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
        penalty="nuclear",
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
        self.penalty = penalty
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
        if not (is_real_scalar(self.lam_ratio) and 0 < self.lam_ratio <= 1):
            raise ValueError(f"lam_ratio must be in (0, 1]; got {self.lam_ratio!r}")
        if not (is_real_scalar(self.cv_tol) and np.isfinite(self.cv_tol) and self.cv_tol > 0):
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
            Z = scaling.outputs(path_outputs(path.weights, F, problem.gates[: F.shape[1]]))
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


class ConvexReLURegressor(RegressorMixin, ConvexReLUBase):
    """Regression by a two-layer (gated) ReLU network trained to a certified global optimum.

    Minimises (1/(2nc)) Σ (f(x̃_j) − ỹ_j)² + λ Ω(W) over the convex reformulation, with ỹ the
    standardized targets (when `standardize`); multi-output y (n, c) is supported, Ω as `penalty` says.

    Args:
        n_gates: P, the number of sampled gates (activation patterns; at most 2P neurons for "relu"). The
            default 64 was chosen by held-out score and fit time (benchmarks/results/n_gates.md): on scikit-learn's
            small data sets more gates did not raise the score; on larger data raise it (MNIST-5k: accuracy
            0.922 at 64 gates, 0.934 at 128, for about twice the fit time).
        lam: λ ≥ 0, the group-lasso weight (equivalently the weight decay λ/2 on both layers), or "auto":
            0.1 · λ_max (classifier: 0.005 · λ_max, any loss), with λ_max the smallest λ whose solution is
            zero on the standardized training problem (`lam_max_`). Chosen from held-out scores on four data
            sets (benchmarks/results/estimators.md): the squared loss on standardized targets fits noise
            below ~0.05 λ_max; classification (any loss) keeps improving down to ~0.005 λ_max.
        model: "gated" (gated ReLU, the faster program) or "relu" (exact ReLU with cone constraints).
        solver: "auto" (gated: R-FISTA + Newton polish; relu: augmented Lagrangian), "fista" (gated, no
            polish), "al" or "admm" (relu).
        loss: only "squared" (or None) for regression.
        penalty: "nuclear" (default: with several outputs or classes, one hidden layer shared by all of them,
            λ Σ_i ‖W_i‖_*, the network people train for multi-output problems) or "group" (λ Σ_i Σ_k ‖W[i,:,k]‖₂:
            one network per output). The same program for one output (then "group" is solved). With
            model="relu" and "nuclear" the fit solves the convex relaxation and reads a true ReLU network off
            it (`convexnn.networks.relu_interval`).
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
        X, y = sk_validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)
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


class ConvexReLUClassifier(ClassifierMixin, ConvexReLUBase):
    """Classification by a two-layer (gated) ReLU network trained to a certified global optimum.

    Two classes: logistic loss (1/n) Σ log(1 + exp(−y_j f(x̃_j))) with labels ±1 and P(class 1) = σ(f).
    More: cross-entropy (1/n) Σ [logsumexp f(x̃_j) − f(x̃_j)_{y_j}] and probabilities softmax(f). With
    loss="squared", least squares on ±1 (binary) or one-hot targets (no `predict_proba`). With more than two
    classes the default penalty="nuclear" shares the hidden layer across classes (λ Σ_i ‖W_i‖_*).

    Args: as for `ConvexReLURegressor`, with loss None (logistic / cross-entropy as above) or "squared";
    standardize applies to X only.

    Attributes: as for `ConvexReLURegressor`, and classes_ (k,).
    """

    _standardize_targets = False
    _auto_lam_fraction = 0.005

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = sk_validate_data(self, X, y, dtype=np.float64)
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


class ConvexReLURegressorCV(CVMixin, ConvexReLURegressor):
    __doc__ = "ConvexReLURegressor with λ chosen by cross-validation." + _CV_DOC.format(
        score='"r2" (R², the default, as `score`) or "neg_mean_squared_error".', strat="", base="ConvexReLURegressor"
    )


class ConvexReLUClassifierCV(CVMixin, ConvexReLUClassifier):
    __doc__ = "ConvexReLUClassifier with λ chosen by cross-validation." + _CV_DOC.format(
        score=(
            '"neg_log_loss" (the default; a proper score that, unlike\n            accuracy, does not tie on '
            'small folds) or "accuracy" (the default with loss="squared", which has\n            no probabilities).'
        ),
        strat=", stratified",
        base="ConvexReLUClassifier",
    )


class ConvexConvClassifier(ConvexConvMixin, ConvexReLUClassifier):
    """Classification of images by a two-layer convolutional network trained to a certified global optimum.

        f(x) = Σ_j α_j (1/K) Σ_k act(x̃_k · w_j):  m filters w_j over the K patches x̃_k of the image,

    the convex CNN program (Pilanci & Ergen, ICLR 2021) on patches (`convexnn.image_patches`) with gates as
    filters (see `convexnn._conv_estimator`). X holds one flattened image per row.

    Args:
        image_shape: (H, W) or (H, W, C), with X's rows the images flattened in that (C-order) layout; None:
            each row is a 1-D signal (an image of one row).
        patch: the filter size, an integer or (s₁, s₂) (clipped to the image: a 1-D signal gets (1, s₂)).
        stride: the step between patches, an integer or (t₁, t₂); patches stay inside the image ("valid").
        n_gates: P, the gate filters sampled (the patterns of the program).
        lam: λ ≥ 0, or "auto": 0.005·λ_max of the training problem.
        model: "gated" or "relu" (the exact ReLU CNN: a cone constraint per patch, far slower).
        penalty: "nuclear" (one set of filters shared by the classes; the default) or "group" (one set of
            filters per class); with two classes both are the group program.
        standardize: subtract the pixels' mean and divide by their standard deviation (one of each, so that a
            filter sees every position alike); fit_intercept: a bias in every filter.
        the rest: as for `ConvexReLUClassifier`.

    Attributes:
        gates_ (h, P), filters_ (h, m) (a filter's last entry is its bias with `fit_intercept`), second_layer_
        (m, c), neuron_gates_ (h, m) for the gated model, n_neurons_, n_positions_ K, x_mean_, x_scale_, and
        lam_, lam_max_, objective_, gap_, status_, n_iter_, classes_ as for `ConvexReLUClassifier`.
    """

    def __init__(
        self,
        image_shape=None,
        patch=3,
        stride=1,
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
        self.image_shape = image_shape
        self.patch = patch
        self.stride = stride
        super().__init__(
            n_gates,
            lam,
            model=model,
            solver=solver,
            loss=loss,
            penalty=penalty,
            tol=tol,
            max_iter=max_iter,
            standardize=standardize,
            fit_intercept=fit_intercept,
            random_state=random_state,
            dtype=dtype,
        )
