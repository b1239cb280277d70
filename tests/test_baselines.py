"""The non-convex baseline: its objective is convexnn's, it decreases, and it never beats a certified optimum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import convexnn as cn
from convexnn.baselines import init_network, train_network


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, -1] = 1.0
    y = np.sin(2 * X[:, 0]) + 0.3 * X[:, 1]
    return jnp.asarray(X), jnp.asarray(y)


def test_recorded_objective_is_network_objective():
    X, y = _data()
    out = train_network(X, y, 8, 1e-2, optimizer=optax.adam(1e-2), steps=50, key=jax.random.key(0))
    start = init_network(jax.random.key(0), 3, 8, 1, dtype=X.dtype)
    assert out.objective.shape == (50,)
    assert float(out.objective[0]) == pytest.approx(float(cn.network_objective(start, X, y, 1e-2)), rel=1e-12)
    assert float(out.final_objective) == pytest.approx(float(cn.network_objective(out.network, X, y, 1e-2)), rel=1e-12)
    assert float(out.final_objective) < 0.5 * float(out.objective[0])


def test_resume_continues_the_same_run():
    X, y = _data()
    opt = optax.adam(1e-2)
    whole = train_network(X, y, 8, 1e-2, optimizer=opt, steps=40, key=jax.random.key(1))
    half = train_network(X, y, 8, 1e-2, optimizer=opt, steps=20, key=jax.random.key(1))
    rest = train_network(X, y, 8, 1e-2, optimizer=opt, steps=20, init=half.network, opt_state=half.opt_state)
    np.testing.assert_allclose(np.asarray(rest.objective), np.asarray(whole.objective[20:]), rtol=1e-10)


@pytest.mark.parametrize("loss", ["logistic", "cross_entropy"])
def test_classification_losses(loss):
    X, y = _data()
    labels = np.where(np.asarray(y) > 0, 1, -1) if loss == "logistic" else (np.asarray(y) > 0).astype(int)
    out = train_network(X, labels, 6, 1e-3, optimizer=optax.adam(1e-2), steps=100, key=jax.random.key(0), loss=loss)
    assert float(out.final_objective) == pytest.approx(
        float(cn.network_objective(out.network, X, labels, 1e-3, loss)), rel=1e-12
    )
    assert float(out.final_objective) < float(out.objective[0])


def test_adam_on_the_gated_network_never_beats_the_certified_optimum():
    """With the gates and output structure of `to_network`, the non-convex minimum is the convex optimum."""
    X, y = _data(n=60)
    Y = jnp.stack([y, jnp.cos(X[:, 1])], axis=1)
    P, lam = 10, 1e-2
    gates = cn.sample_gates(jax.random.key(0), 3, P, dtype=X.dtype)
    sol = cn.solve_gated(X, Y, cn.activation_masks(X, gates), lam, tol=1e-10)
    net = cn.to_network(sol, gates)
    lower = float(sol.objective - sol.gap)
    mask = np.tile(np.eye(2, dtype=bool), (P, 1))
    adam = optax.adam(3e-2)  # one optimizer object: one compilation for every seed
    for seed in range(3):
        out = train_network(
            X,
            Y,
            net.width,
            lam,
            optimizer=adam,
            steps=1500,
            key=jax.random.key(seed),
            gates=net.gates,
            w2_mask=mask,
        )
        assert float(out.final_objective) >= lower
        assert not np.any(np.asarray(out.network.w2)[~mask])
        assert float(out.final_objective) < 1.1 * float(sol.objective)  # and gets close
    # The convex solution's network is a stationary point of the non-convex objective.
    still = train_network(X, Y, net.width, lam, optimizer=optax.sgd(1e-3), steps=20, init=net, w2_mask=mask)
    assert float(still.final_objective) == pytest.approx(float(sol.objective), rel=1e-6)


def test_bad_inputs():
    X, y = _data()
    with pytest.raises(ValueError, match="key"):
        train_network(X, y, 4, 1e-2)
    with pytest.raises(ValueError, match="finite"):
        train_network(X.at[0, 0].set(jnp.nan), y, 4, 1e-2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="w2_mask"):
        train_network(X, y, 4, 1e-2, key=jax.random.key(0), w2_mask=np.ones((3, 1), bool))
