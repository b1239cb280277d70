"""Networks read off solutions: the convex optimum recovered, one λ of a path, single samples, save/load round trips."""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers

TOL = 1e-10


@pytest.fixture(scope="module")
def gated_problem():
    p = helpers.teacher(n=80, d=4, P=1, seed=2)
    gates = cn.sample_gates(jax.random.key(3), 4, 10, dtype=jnp.float64)
    return p.X, p.y, gates, cn.activation_masks(p.X, gates)


def _network(rng, d, m, c, gated, squeeze, dtype=jnp.float64):
    W1 = jnp.asarray(rng.standard_normal((d, m)), dtype)
    w2 = jnp.asarray(rng.standard_normal((m, c)), dtype)
    gates = jnp.asarray(rng.standard_normal((d, m)), dtype) if gated else None
    return cn.Network(W1=W1, w2=w2, gates=gates, squeeze=squeeze)


def _lams(num=3):
    return cn.lam_grid(0.5, num=num, ratio=1e-2)


# -------------------------------------------------------------------------------------- the recovered network

RECOVERY = {  # test_relu.py's problems
    "teacher": functools.partial(helpers.teacher, n=200, d=6, P=20, seed=2),
    "breast_cancer": functools.partial(helpers.breast_cancer, n=200, P=10),
}


@pytest.mark.parametrize("name,lam", [("teacher", 1e-2), ("breast_cancer", 1e-3)])
def test_recovered_network_attains_the_convex_optimum(name, lam):
    p = RECOVERY[name]()
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-9, constraint_tol=1e-9)
    net = cn.to_network(sol)
    value = float(cn.network_objective(net, p.X, p.y, lam, loss=p.loss))
    np.testing.assert_allclose(value, float(sol.objective), rtol=1e-8)
    np.testing.assert_allclose(value, helpers.relu_optimum(p, lam), rtol=1e-6)
    U, V = sol.weights
    convex_pred = cn.operators.gated_forward(p.X, p.masks, U - V)
    np.testing.assert_allclose(net(p.X), convex_pred, atol=1e-6 * float(jnp.max(jnp.abs(convex_pred))))
    pruned = net.prune()
    assert pruned.width == int(jnp.sum(cn.prox.group_norms(U) > 0) + jnp.sum(cn.prox.group_norms(V) > 0))
    np.testing.assert_allclose(pruned(p.X), net(p.X), rtol=1e-12, atol=1e-12)


def test_gated_network_keeps_its_gates():
    rng = np.random.default_rng(0)
    X = jnp.asarray(np.hstack([rng.standard_normal((80, 4)), np.ones((80, 1))]))
    y = jnp.sin(X[:, 0]) + X[:, 1]
    gates = cn.sample_gates(jax.random.key(1), 5, 12, dtype=jnp.float64)
    masks = cn.activation_masks(X, gates)
    sol = cn.solve_gated(X, y, masks, 1e-3, tol=1e-10)
    net = cn.to_network(sol, gates)
    np.testing.assert_allclose(net(X), cn.operators.gated_forward(X, masks, sol.weights), atol=1e-10)
    np.testing.assert_allclose(float(cn.network_objective(net, X, y, 1e-3)), float(sol.objective), rtol=1e-10)
    with pytest.raises(ValueError, match="needs its gates"):
        cn.to_network(sol)


# ----------------------------------------------------------------------------------------------- one λ of a path


def test_to_network_refuses_a_path_and_says_how_to_pick_one_lam(gated_problem):
    X, y, gates, masks = gated_problem
    path = cn.solve_path(X, y, masks, _lams(), tol=1e-6)
    with pytest.raises(ValueError, match=r"solution must be for a single λ.*path\[k\]"):
        cn.to_network(path, gates)
    relu = cn.solve_path(X, y, masks[:, :4], _lams(num=2), model="relu", max_iters=20)
    with pytest.raises(ValueError, match=r"solution must be for a single λ.*path\[k\]"):
        cn.to_network(relu)


def test_one_lam_of_a_gated_path_is_the_network_of_a_single_solve(gated_problem):
    X, y, gates, masks = gated_problem
    lams = _lams()
    path = cn.solve_path(X, y, masks, lams, tol=TOL)
    for k in range(lams.shape[0]):
        point = path[k]
        assert point.weights.shape == path.weights.shape[1:] and point.objective.shape == ()
        assert float(point.lam) == float(lams[k])
        net = cn.to_network(point, gates)
        single = cn.to_network(cn.solve_gated(X, y, masks, lams[k], tol=TOL), gates)
        np.testing.assert_allclose(net(X), single(X), rtol=1e-6, atol=1e-8)
        objective = float(cn.network_objective(net, X, y, lams[k]))
        np.testing.assert_allclose(objective, float(path.objective[k]), rtol=1e-10)


def test_one_lam_of_a_relu_path_is_its_network(gated_problem):
    X, y, _, masks = gated_problem
    masks = masks[:, :4]
    lams = _lams(num=2)
    path = cn.solve_path(X, y, masks, lams, model="relu", tol=1e-9, constraint_tol=1e-9)
    for k in range(lams.shape[0]):
        point = path[k]
        assert all(w.shape == path.weights[0].shape[1:] for w in point.weights)
        assert all(np.shape(v) == () for v in point.stats.values())
        net = cn.to_network(point)
        assert net.gates is None and net.width == 2 * masks.shape[1]
        objective = float(cn.network_objective(net, X, y, lams[k]))
        np.testing.assert_allclose(objective, float(path.objective[k]), rtol=1e-7)


def test_indexing_a_solution(gated_problem):
    X, y, _, masks = gated_problem
    lams = _lams()
    path = cn.solve_path(X, y, masks, lams, tol=1e-6)
    np.testing.assert_array_equal(path[1:].lam, lams[1:])
    np.testing.assert_array_equal(path[np.array([2, 0])].objective, path.objective[np.array([2, 0])])
    np.testing.assert_array_equal(path[-1].weights, path.weights[-1])
    with pytest.raises(IndexError):
        path[3]  # JAX indexing would clamp to the last λ
    with pytest.raises(ValueError, match="picks one λ of a path"):
        path[0][0]


# ----------------------------------------------------------------------------------------------- single samples


@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("squeeze", [True, False])
def test_a_single_sample_gives_the_row_of_the_batched_call(gated, squeeze):
    net = _network(np.random.default_rng(0), d=4, m=6, c=1 if squeeze else 3, gated=gated, squeeze=squeeze)
    X = jnp.asarray(np.random.default_rng(1).standard_normal((5, 4)))
    batched = net(X)
    for i in range(X.shape[0]):
        one = net(X[i])
        assert one.shape == batched.shape[1:]
        np.testing.assert_allclose(one, batched[i], rtol=1e-13, atol=1e-15)  # a matvec may round differently
    with pytest.raises((ValueError, TypeError)):
        net(X[:, :3])


# -------------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("squeeze", [True, False])
def test_save_and_load_rebuild_the_network_exactly(tmp_path, dtype, gated, squeeze):
    net = _network(np.random.default_rng(4), d=5, m=7, c=1 if squeeze else 3, gated=gated, squeeze=squeeze, dtype=dtype)
    path = tmp_path / "net.npz"
    net.save(path)
    back = cn.Network.load(path)
    assert (back.gates is None) == (not gated) and back.squeeze == squeeze
    for a, b in [(net.W1, back.W1), (net.w2, back.w2)] + ([(net.gates, back.gates)] if gated else []):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    X = jnp.asarray(np.random.default_rng(5).standard_normal((9, 5)), dtype)
    np.testing.assert_array_equal(np.asarray(back(X)), np.asarray(net(X)))
    # A file object works too, and the name is used exactly as given (no suffix added).
    buffer = io.BytesIO()
    net.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(np.asarray(cn.Network.load(buffer)(X)), np.asarray(net(X)))
    net.save(tmp_path / "plain")
    assert (tmp_path / "plain").exists() and not (tmp_path / "plain.npz").exists()


def test_a_gated_network_from_a_solve_loads_with_its_gates(tmp_path, gated_problem):
    X, y, gates, masks = gated_problem
    net = cn.to_network(cn.solve_gated(X, y, masks, 1e-2, tol=1e-8), gates)
    net.save(tmp_path / "gated.npz")
    back = cn.Network.load(tmp_path / "gated.npz")
    assert back.gates is not None
    np.testing.assert_array_equal(np.asarray(back(X)), np.asarray(net(X)))
    # The gates change the function: a plain ReLU net with the same weights predicts otherwise.
    assert not np.allclose(np.asarray(cn.Network(W1=back.W1, w2=back.w2, squeeze=True)(X)), np.asarray(net(X)))


def test_bfloat16_networks_round_trip(tmp_path):
    net = _network(np.random.default_rng(6), d=3, m=4, c=2, gated=True, squeeze=False, dtype=jnp.bfloat16)
    net.save(tmp_path / "bf16.npz")
    back = cn.Network.load(tmp_path / "bf16.npz")
    assert back.W1.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(back.W1, np.float32), np.asarray(net.W1, np.float32))


def test_load_refuses_what_is_not_a_saved_network(tmp_path):
    def refused(path, match="is not a Network saved by Network.save"):
        with pytest.raises(ValueError, match=match):
            cn.Network.load(path)

    (tmp_path / "text").write_text("hello")
    refused(tmp_path / "text")
    (tmp_path / "empty").write_bytes(b"")
    refused(tmp_path / "empty")
    np.save(tmp_path / "array.npy", np.ones(3))
    refused(tmp_path / "array.npy")
    np.savez(tmp_path / "arrays.npz", W1=np.ones((2, 3)), w2=np.ones((3, 1)))
    refused(tmp_path / "arrays.npz", match="no 'header' entry")

    net = _network(np.random.default_rng(7), d=2, m=3, c=1, gated=True, squeeze=True)
    net.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz") as data:
        saved = dict(data)
    header = str(saved["header"][()])
    for old, new, match in [
        ('"convexnn.Network"', '"other"', "header is not a convexnn.Network header"),
        ('"version": 1', '"version": 99', "format version 99"),
        ('"gated": true', '"gated": false', "expected"),
        ('"W1": [2, 3]', '"W1": [2, 4]', "inconsistent shapes"),
    ]:
        assert old in header
        np.savez(tmp_path / "bad.npz", **(saved | {"header": np.array(header.replace(old, new))}))
        refused(tmp_path / "bad.npz", match=match)
    np.savez(tmp_path / "bad.npz", **(saved | {"gates": saved["gates"].astype(np.float32)}))
    refused(tmp_path / "bad.npz", match="gates is float32")
