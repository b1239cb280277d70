"""scikit-learn estimators: scikit-learn's own estimator checks, exactness of the padded solve, predictions."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import convexnn as cn  # noqa: E402
from convexnn.estimators import ConvexReLUClassifier, ConvexReLURegressor, padded_columns, padded_rows  # noqa: E402

# Small and unpolished (plain R-FISTA compiles fastest): the checks fit ~120 times on ~8 padded shapes.
# No check is expected to fail.
_CHECKED = [
    ConvexReLURegressor(n_gates=8, solver="fista", max_iter=2000, random_state=0),
    ConvexReLUClassifier(n_gates=8, solver="fista", max_iter=2000, random_state=0),
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
