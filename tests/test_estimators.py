"""scikit-learn estimators: scikit-learn's own estimator checks, exactness of the padded solve, predictions."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import log_loss, mean_squared_error  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import convexnn as cn  # noqa: E402
from convexnn import _estimator_base  # noqa: E402
from convexnn.estimators import (  # noqa: E402
    ConvexConvClassifier,
    ConvexReLUClassifier,
    ConvexReLUClassifierCV,
    ConvexReLURegressor,
    ConvexReLURegressorCV,
    padded_columns,
    padded_rows,
)

# Small and unpolished (plain R-FISTA compiles fastest): the checks fit ~120 times on ~8 padded shapes
# (the CV estimators: 3 folds and a refit, each a path of 3 λ).
# No check is expected to fail.
_CHECKED = [
    ConvexReLURegressor(n_gates=8, solver="fista", max_iter=2000, random_state=0),
    ConvexReLUClassifier(n_gates=8, solver="fista", max_iter=2000, random_state=0),
    ConvexReLURegressorCV(n_gates=8, n_lams=3, cv=3, solver="fista", max_iter=2000, random_state=0),
    ConvexReLUClassifierCV(n_gates=8, n_lams=3, cv=3, solver="fista", max_iter=2000, random_state=0),
    ConvexConvClassifier(n_gates=8, patch=2, solver="fista", max_iter=2000, random_state=0),
]


@parametrize_with_checks(_CHECKED)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _features(X):
    mean, std = X.mean(0), X.std(0)
    return np.hstack([(X - mean) / np.where(std > 0, std, 1.0), np.ones((X.shape[0], 1))])


def test_padding_leaves_the_solution_unchanged():
    """The estimator's (padded, λ-rescaled) solve equals solve_gated on the unpadded standardized data."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], y[:150]
    est = ConvexReLURegressor(
        n_gates=12, lam=1e-2, solver="fista", tol=1e-9, max_iter=50_000, dtype="float64", random_state=3
    ).fit(X, y)
    assert padded_rows(150) == 256 and padded_columns(11) == 16
    F = _features(X)
    ys = (y - y.mean()) / y.std()
    masks = jnp.asarray(F @ est.gates_ >= 0)
    sol = cn.solve_gated(jnp.asarray(F), ys, masks, 1e-2, tol=1e-10, max_iters=50_000, polish=False)
    assert est.status_ == "converged"
    assert est.objective_ == pytest.approx(float(sol.objective), rel=1e-7)
    assert 0 <= est.gap_ <= 1e-9 * max(1.0, est.objective_)
    pred = np.asarray(cn.operators.gated_forward(jnp.asarray(F), masks, sol.weights)) * y.std() + y.mean()
    np.testing.assert_allclose(est.predict(X), pred, rtol=1e-6, atol=1e-6 * np.abs(y).max())


@pytest.mark.parametrize("classes", [2, 3])
def test_objective_is_that_of_the_network(classes):
    """objective_ is the training objective of the fitted network (the padding rows' loss taken out), for the
    logistic (2 classes) and cross-entropy (3) losses: L(f(X̃), y) + (λ/2)(‖W1‖² + ‖w2‖²)."""
    X, y = load_iris(return_X_y=True)
    y = y if classes == 3 else (y == 0).astype(int)
    est = ConvexReLUClassifier(n_gates=8, lam=1e-2, dtype="float64", tol=1e-8, random_state=0).fit(X, y)
    net = cn.Network(
        W1=jnp.asarray(est.first_layer_), w2=jnp.asarray(est.second_layer_), gates=jnp.asarray(est.neuron_gates_)
    )
    F = jnp.asarray(_features(X))
    loss, labels = ("cross_entropy", y) if classes == 3 else ("logistic", 2.0 * y - 1.0)
    assert est.objective_ == pytest.approx(float(cn.network_objective(net, F, labels, 1e-2, loss)), rel=1e-7)


def test_gates_are_kept_for_new_rows():
    """Predictions on new rows use the training gates: the same rows predict the same, alone or in a batch."""
    X, y = load_diabetes(return_X_y=True)
    est = ConvexReLURegressor(n_gates=16, lam=1e-2, random_state=0).fit(X[:300], y[:300])
    new = X[300:]
    batch = est.predict(new)
    one_by_one = np.array([est.predict(row[None])[0] for row in new[:5]])
    np.testing.assert_allclose(batch[:5], one_by_one, rtol=1e-12)
    assert est.gates_.shape == (11, 16)
    assert est.score(new, y[300:]) > 0.2  # generalises (held-out R²)


def test_classifier_binary_and_multiclass():
    X, y = load_iris(return_X_y=True)
    multi = ConvexReLUClassifier(n_gates=16, lam=1e-3, random_state=0).fit(X, y)
    assert multi.status_ == "converged" and multi.score(X, y) > 0.95
    proba = multi.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(multi.classes_[proba.argmax(axis=1)], multi.predict(X))

    labels = np.where(y == 0, "setosa", "other")
    binary = ConvexReLUClassifier(n_gates=16, lam=1e-3, random_state=0).fit(X, labels)
    assert binary.status_ == "converged" and binary.score(X, labels) == 1.0
    scores = binary.decision_function(X)
    assert scores.shape == (150,)
    np.testing.assert_array_equal(binary.predict(X), binary.classes_[(scores > 0).astype(int)])
    np.testing.assert_allclose(np.exp(binary.predict_log_proba(X)), binary.predict_proba(X), rtol=1e-10)

    squares = ConvexReLUClassifier(n_gates=16, loss="squared", solver="fista", random_state=0).fit(X, y)
    assert not hasattr(squares, "predict_proba") and squares.score(X, y) > 0.9


def test_relu_model_and_options():
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:100], y[:100]
    relu = ConvexReLURegressor(n_gates=4, lam=1e-2, model="relu", max_iter=3000, random_state=0).fit(X, y)
    assert relu.neuron_gates_ is None and relu.n_neurons_ <= 8  # ReLU neurons: at most 2 per gate
    assert relu.score(X, y) > 0.2
    raw = ConvexReLURegressor(n_gates=8, lam=1e-2, standardize=False, fit_intercept=False, random_state=0)
    raw.fit(X, (y - y.mean()) / y.std())
    assert raw.first_layer_.shape[0] == 10 and not hasattr(raw, "x_mean_")
    for bad in ({"model": "cnn"}, {"solver": "admm"}, {"lam": -1.0}, {"n_gates": 0}, {"loss": "logistic"}):
        with pytest.raises(ValueError):
            ConvexReLURegressor(**bad).fit(X, y)


# -- honest fits: warnings, finite predictions, clear errors ---------------------------------------------------


def test_a_fit_that_does_not_converge_warns():
    """A fit that ends short of its tolerance says so (status, gap, iterations, what to try); one that
    converges says nothing."""
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[:200], y[:200]
    relu = ConvexReLUClassifier(model="relu", max_iter=200, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"status 'max_iters' after 200 iterations, duality gap") as record:
        relu.fit(X, y)
    assert relu.status_ == "max_iters" and relu.gap_ > 1e-3
    message = str(record[0].message)
    assert f"{relu.gap_:.3g}" in message and "max_iter" in message and "float64" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gated = ConvexReLUClassifier(n_gates=8, lam=1e-2, random_state=0).fit(X, y)
    assert gated.status_ == "converged"


@pytest.mark.parametrize("scale", [1e20, 1e300, 1e-300])
def test_targets_of_any_scale_give_the_same_fit(scale):
    """Regression is equivariant in the scale of y: float32 y of 1e20 (whose squares overflow float32) and
    float64 y of 1e±300 (whose squares overflow or underflow float64) give the unit-scale fit, scaled."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], (y[:150] - 150.0) / 80.0
    params = dict(n_gates=8, lam=1e-2, solver="fista", tol=1e-6, max_iter=20_000, random_state=0)
    unit = ConvexReLURegressor(**params).fit(X, y)
    target = (y.astype(np.float32) * np.float32(scale)) if scale == 1e20 else y * scale
    big = ConvexReLURegressor(**params).fit(X, target)
    assert np.isfinite(big.y_scale_).all() and big.status_ == "converged"
    pred = big.predict(X)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred / scale, unit.predict(X), rtol=1e-4, atol=1e-4 * np.abs(y).max())


def test_features_of_any_scale_give_the_same_fit():
    """Standardization undoes any scale of X: columns of 1e200 (squares beyond float64) or 1e-200 fit as at 1."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], y[:150]
    params = dict(n_gates=8, lam=1e-2, solver="fista", tol=1e-6, max_iter=20_000, random_state=0)
    unit = ConvexReLURegressor(**params).fit(X, y)
    for scale in (1e200, 1e-200):
        scaled = ConvexReLURegressor(**params).fit(X * scale, y)
        np.testing.assert_allclose(scaled.predict(X * scale), unit.predict(X), rtol=1e-5, atol=1e-5 * y.std())


def test_unstandardized_data_beyond_the_dtype_is_refused():
    """Without standardization, entries whose squares overflow the float32 solve raise a ValueError that
    says what to do, instead of a NaN fit."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:100], y[:100]
    with pytest.raises(ValueError, match=r"y has entries .* standardize=True or dtype='float64'"):
        ConvexReLURegressor(n_gates=8, standardize=False, random_state=0).fit(X, y * 1e20)
    with pytest.raises(ValueError, match=r"X has entries .* standardize=True or dtype='float64'"):
        ConvexReLUClassifier(n_gates=8, standardize=False, random_state=0).fit(X * 1e20, y > y.mean())


@pytest.mark.parametrize("lam", [[0.1, 1.0], np.array([0.1]), (0.1,)])
def test_several_lams_point_to_the_cv_estimators(lam):
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match=r"lam must be a scalar .* ConvexReLURegressorCV"):
        ConvexReLURegressor(lam=lam).fit(X[:50], y[:50])


@pytest.mark.parametrize("lam", ["big", 1j, None, float("nan"), -1.0])
def test_bad_lams_are_named(lam):
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match="lam must be"):
        ConvexReLURegressor(lam=lam).fit(X[:50], y[:50])


# -- λ by cross-validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", [None, "neg_mean_squared_error"])
def test_regressor_cv_scores_are_those_of_separate_fits(monkeypatch, scoring):
    """Every cv_scores_ entry is the held-out R² (or −MSE) of a ConvexReLURegressor fit on that fold at that λ;
    the folds share one padded shape (one compiled program), and the refit is the plain fit at lam_."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], y[:150]
    shapes = []
    real_solve_path = _estimator_base.solve_path

    def recording(X, *args, **kwargs):
        shapes.append(X.shape)
        return real_solve_path(X, *args, **kwargs)

    monkeypatch.setattr(_estimator_base, "solve_path", recording)
    common = dict(n_gates=8, tol=1e-9, max_iter=50_000, dtype="float64", random_state=0)
    cv = KFold(3, shuffle=True, random_state=0)
    est = ConvexReLURegressorCV(lams=[0.01, 0.3, 0.1], cv=cv, cv_tol=1e-9, scoring=scoring, **common).fit(X, y)
    np.testing.assert_array_equal(est.lams_, [0.3, 0.1, 0.01])
    assert est.cv_scores_.shape == (3, 3) and shapes == [(256, 16)] * 4  # 3 folds and the refit
    for k, (train, test) in enumerate(cv.split(X)):
        for i, lam in enumerate(est.lams_):
            single = ConvexReLURegressor(lam=lam, **common).fit(X[train], y[train])
            r2, mse = single.score(X[test], y[test]), mean_squared_error(y[test], single.predict(X[test]))
            assert est.cv_scores_[i, k] == pytest.approx(-mse if scoring else r2, rel=1e-6, abs=1e-6)
    assert est.lam_ == est.lams_[np.argmax(est.cv_scores_.mean(axis=1))]
    refit = ConvexReLURegressor(lam=est.lam_, **common).fit(X, y)
    assert est.status_ == "converged"
    np.testing.assert_allclose(est.predict(X), refit.predict(X), rtol=1e-6, atol=1e-6 * y.std())


@pytest.mark.parametrize("scoring", [None, "accuracy"])
def test_classifier_cv_scores_are_those_of_separate_fits(scoring):
    """The classifier ranks λ by held-out log loss (default) or accuracy of separate fits on each fold."""
    X, y = load_iris(return_X_y=True)
    common = dict(n_gates=8, tol=1e-9, max_iter=50_000, dtype="float64", random_state=0)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    est = ConvexReLUClassifierCV(lams=[0.1, 0.01], cv=cv, cv_tol=1e-9, scoring=scoring, **common).fit(X, y)
    for k, (train, test) in enumerate(cv.split(X, y)):
        for i, lam in enumerate(est.lams_):
            single = ConvexReLUClassifier(lam=lam, **common).fit(X[train], y[train])
            expected = single.score(X[test], y[test]) if scoring else -log_loss(y[test], single.predict_proba(X[test]))
            assert est.cv_scores_[i, k] == pytest.approx(expected, abs=1e-6)


def test_default_grid_is_below_lam_max():
    """lams_ runs from below λ_max (the smallest λ with the zero network) down to lam_ratio·λ_max."""
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:150], y[:150]
    est = ConvexReLURegressorCV(n_gates=8, n_lams=4, lam_ratio=1e-2, cv=3, random_state=0).fit(X, y)
    np.testing.assert_allclose(est.lams_, est.lam_max_ * np.logspace(0, -2, 5)[1:], rtol=1e-12)
    params = dict(n_gates=8, solver="fista", random_state=0)
    assert ConvexReLURegressor(lam=1.001 * est.lam_max_, **params).fit(X, y).n_neurons_ == 0
    assert ConvexReLURegressor(lam=0.99 * est.lam_max_, **params).fit(X, y).n_neurons_ > 0


def test_classifier_cv_and_the_one_se_rule():
    X, y = load_iris(return_X_y=True)
    params = dict(n_gates=8, lams=[1e-1, 3e-2, 1e-2, 1e-3], solver="fista", random_state=0)
    best = ConvexReLUClassifierCV(**params).fit(X, y)
    assert best.cv_scores_.shape == (4, 5) and best.score(X, y) > 0.9
    mean = best.cv_scores_.mean(axis=1)
    assert best.lam_ == best.lams_[np.argmax(mean)]  # the first maximum: ties go to the larger λ
    np.testing.assert_allclose(best.predict_proba(X).sum(axis=1), 1.0)
    one_se = ConvexReLUClassifierCV(selection="one_se", **params).fit(X, y)
    np.testing.assert_array_equal(one_se.cv_scores_, best.cv_scores_)
    top = np.argmax(mean)
    se = best.cv_scores_[top].std(ddof=1) / np.sqrt(5)
    assert one_se.lam_ == best.lams_[np.flatnonzero(mean >= mean[top] - se)[0]] >= best.lam_


@pytest.mark.parametrize(
    "bad",
    [
        {"lams": [[0.1]]},
        {"lams": [-1.0]},
        {"lams": []},
        {"n_lams": 0},
        {"lam_ratio": 0.0},
        {"selection": "x"},
        {"scoring": "roc_auc"},
        {"cv_tol": 0.0},
    ],
)
def test_cv_options_are_checked(bad):
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match=next(iter(bad))):
        ConvexReLURegressorCV(**bad).fit(X[:50], y[:50])


# -- defaults ------------------------------------------------------------------------------------------------


def test_default_classifier_converges_on_digits():
    """The default fit (float32, lam="auto") on digits' 1347 training rows ends CONVERGED, without a warning."""
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = ConvexReLUClassifier(random_state=0).fit(Xtr, ytr)
    assert est.status_ == "converged" and est.gap_ <= 1e-5 * max(1.0, est.objective_)
    assert est.score(Xte, yte) > 0.95 and est.lam_ == pytest.approx(0.005 * est.lam_max_)


def test_default_regressor_does_not_overfit_diabetes():
    """The default λ is relative to the problem (0.1·λ_max for regression): held-out R² on diabetes is that
    of a tuned λ (0.34), where a fixed λ = 1e-3 interpolated the noise (R² −0.82)."""
    X, y = load_diabetes(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    est = ConvexReLURegressor(random_state=0).fit(Xtr, ytr)
    assert est.score(Xte, yte) > 0.3 and est.lam_ == pytest.approx(0.1 * est.lam_max_)
