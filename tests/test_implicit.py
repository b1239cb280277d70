"""Implicit differentiation of solutions against central finite differences (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers

TOL = 1e-13


@pytest.fixture(scope="module")
def prob():
    # n > P·d: the restricted Hessian is non-singular, so the solution (and its derivative) is unique.
    return helpers.teacher(n=200, d=5, P=12, seed=11)


def _weights(prob, X=None, y=None, lam=0.02, loss="squared"):
    X = prob.X if X is None else X
    y = prob.y if y is None else y
    return cn.solve_gated(X, y, prob.masks, lam, tol=TOL, loss=loss).weights


def _central(f, x, direction, h):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


def test_support_is_partial(prob):
    W = _weights(prob)
    active = np.asarray(cn.prox.group_norms(W) > 0)
    assert 0 < active.sum() < active.size  # the test below exercises both kinds of groups


def test_grad_in_lam_matches_finite_differences(prob):
    rng = np.random.default_rng(0)
    probe = jnp.asarray(rng.standard_normal(prob.masks.shape[1:] + prob.X.shape[1:]))

    def f(lam):
        return jnp.vdot(probe, _weights(prob, lam=lam))

    lam = 0.02
    np.testing.assert_allclose(jax.grad(f)(lam), _central(f, lam, 1.0, 1e-6), rtol=1e-5)


def test_vjp_in_y_and_X_matches_finite_differences(prob):
    rng = np.random.default_rng(1)
    probe = jnp.asarray(rng.standard_normal(prob.masks.shape[1:] + prob.X.shape[1:]))
    dy = jnp.asarray(rng.standard_normal(prob.y.shape))
    dX = jnp.asarray(rng.standard_normal(prob.X.shape))

    def f_y(y):
        return jnp.vdot(probe, _weights(prob, y=y))

    def f_X(X):
        return jnp.vdot(probe, _weights(prob, X=X))

    np.testing.assert_allclose(jnp.vdot(jax.grad(f_y)(prob.y), dy), _central(f_y, prob.y, dy, 1e-6), rtol=1e-5)
    np.testing.assert_allclose(jnp.vdot(jax.grad(f_X)(prob.X), dX), _central(f_X, prob.X, dX, 1e-6), rtol=1e-5)


def test_objective_gradient_is_the_envelope(prob):
    def objective(lam):
        return cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=TOL).objective

    # d p*(λ)/dλ = Σ_g ‖W*_g‖ (envelope theorem), and finite differences agree.
    lam = 0.02
    expected = float(cn.prox.group_l1(_weights(prob, lam=lam)))
    np.testing.assert_allclose(jax.grad(objective)(lam), expected, rtol=1e-8)
    np.testing.assert_allclose(jax.grad(objective)(lam), _central(objective, lam, 1.0, 1e-6), rtol=1e-6)


def test_logistic_loss_gradient(prob):
    labels = jnp.where(prob.y > jnp.median(prob.y), 1.0, -1.0)
    rng = np.random.default_rng(2)
    probe = jnp.asarray(rng.standard_normal(prob.masks.shape[1:] + prob.X.shape[1:]))

    def f(lam):
        return jnp.vdot(probe, _weights(prob, y=labels, lam=lam, loss="logistic"))

    np.testing.assert_allclose(jax.grad(f)(0.01), _central(f, 0.01, 1.0, 1e-6), rtol=1e-5)


def test_validation_loss_gradient_through_a_path(prob):
    """d(validation loss)/d log λ along a whole path, as used to tune λ by gradient descent."""
    Xv, yv, mv = prob.X[100:], prob.y[100:], prob.masks[100:]
    Xt, yt, mt = prob.X[:100], prob.y[:100], prob.masks[:100]

    def val_loss(log_lams):
        path = cn.solve_path(Xt, yt, mt, jnp.exp(log_lams), tol=TOL, mode="warm")
        preds = jax.vmap(lambda W: cn.operators.gated_forward(Xv, mv, W))(path.weights)
        return jnp.sum(jnp.mean((preds - yv[None, :]) ** 2, axis=1))

    log_lams = jnp.log(jnp.array([0.05, 0.01]))
    direction = jnp.array([1.0, -0.5])
    np.testing.assert_allclose(
        jnp.vdot(jax.grad(val_loss)(log_lams), direction), _central(val_loss, log_lams, direction, 1e-6), rtol=1e-4
    )


def test_solvers_without_derivatives_say_so(prob):
    """jax.grad through an exact-ReLU or a row-sharded solve used to fail inside JAX (reverse-mode through a
    while_loop); each now names itself and what does have derivatives, eagerly and under jit."""
    X, y, masks = prob.X, prob.y, prob.masks
    data = cn.shard_rows(jax.make_mesh((2,), ("data",)), X, y, masks)
    cases = {
        "solve_relu": lambda lam: cn.solve_relu(X, y, masks, lam).objective,
        "solve_relu on row-sharded data": lambda lam: cn.solve_relu(data, lam=lam).objective,
        "solve_gated on row-sharded data": lambda lam: cn.solve_gated(data, lam=lam).objective,
        "solve_path\\(model='relu'\\)": lambda lam: cn.solve_path(X, y, masks, lam[None], model="relu").objective[0],
        "solve_path on row-sharded data": lambda lam: cn.solve_path(data, lams=lam[None]).objective[0],
    }
    for name, f in cases.items():
        for transform in (jax.grad, lambda g: jax.jit(jax.grad(g))):
            with pytest.raises(ValueError, match=f"{name} is not differentiable"):
                transform(f)(jnp.asarray(1e-2))
    assert float(jax.grad(lambda lam: cn.solve_gated(X, y, masks, lam).objective)(jnp.asarray(1e-2))) > 0
