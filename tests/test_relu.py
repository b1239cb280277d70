"""The exact ReLU program against Clarabel, the recovered network, cone decompositions, enumeration."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import convexnn as cn
from convexnn import losses
from convexnn.solvers.admm import ADMMOptions

from . import helpers
from .reference import clarabel_relu

CASES = {
    "teacher": (functools.partial(helpers.teacher, n=200, d=6, P=20, seed=2), (1e-3, 1e-2)),
    "diabetes": (functools.partial(helpers.diabetes, n=200, P=20), (1e-2, 1.0)),
    "breast_cancer": (functools.partial(helpers.breast_cancer, n=200, P=10), (1e-3, 1e-2)),
    "teacher-3": (functools.partial(helpers.teacher, n=120, d=5, P=10, seed=2, outputs=3), (1e-2,)),
    "digits-squared": (functools.partial(helpers.digits, n=100, P=4, loss="squared"), (1e-3,)),
}
AL_PARAMS = [(name, lam) for name, (_, lams) in CASES.items() for lam in lams]
# ADMM certifies a point only once its active-set polish lands on the optimum, i.e. once ADMM has found which
# blocks are non-zero and which cone constraints are tight; these are the problems where it does so within
# 60 000 iterations (teacher at 1e-3, diabetes at 1e-2 and breast_cancer at 1e-3 take longer). Its multi-output
# case is the 3-output teacher: digits (65 features, 10 outputs) certifies too (at 1e-2 after 312 ADMM steps, at
# 1e-3 after 3 618), but its ADMM program alone takes ~15 s to compile, a cost CI pays once per problem shape.
ADMM_PARAMS = [
    ("teacher", 1e-2),
    ("teacher", 3e-3),
    ("teacher-3", 1e-2),
    ("diabetes", 1.0),
    ("breast_cancer", 1e-2),
]


@functools.cache
def problem(name):
    return CASES[name][0]()


@functools.cache
def reference(name, lam):
    return reference_of(problem(name), lam)


def reference_of(p, lam):
    return clarabel_relu(p.X, losses.get_loss(p.loss).prepare_targets(np.asarray(p.y)), p.masks, lam, p.loss)


def _check(sol, p_star):
    assert sol.status == cn.Status.CONVERGED, sol
    assert abs(float(sol.objective) - p_star) <= 1e-6 * abs(p_star), (float(sol.objective), p_star)
    assert float(sol.violation) <= 1e-6


@pytest.mark.parametrize("name,lam", AL_PARAMS, ids=[f"{n}-lam{l:g}" for n, l in AL_PARAMS])
def test_al_matches_clarabel(name, lam):
    p = problem(name)
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, method="al")
    _check(sol, reference(name, lam))
    U, V = sol.weights
    assert U.shape == V.shape == p.masks.shape[1:] + p.X.shape[1:] + (() if p.y.ndim == 1 else p.y.shape[1:])


@pytest.mark.parametrize("name,lam", ADMM_PARAMS, ids=[f"{n}-lam{l:g}" for n, l in ADMM_PARAMS])
def test_admm_matches_clarabel(name, lam):
    p = problem(name)
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, method="admm", max_iters=60_000)
    _check(sol, reference(name, lam))
    assert int(sol.stats["admm_steps"]) > 0 and int(sol.stats["cg_iterations"]) > 0


def test_admm_splitting_the_squared_loss_reaches_the_same_optimum():
    """The prediction split (the loss by its prox, as for logistic) is a second, independent squared-loss path."""
    p = problem("teacher")
    split = cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="admm", admm_options=ADMMOptions(split_loss=True))
    _check(split, reference("teacher", 1e-2))
    with pytest.raises(ValueError, match="needs the squared loss"):
        cn.solve_relu(
            p.X, np.sign(p.y), p.masks, 1e-2, loss="logistic", method="admm", admm_options=ADMMOptions(split_loss=False)
        )


def test_admm_without_polish_is_plain_admm():
    """polish=False leaves ADMM's own iterates: it still converges (slowly) and never polishes."""
    p = problem("diabetes")
    sol = cn.solve_relu(p.X, p.y, p.masks, 1.0, method="admm", polish=False, max_iters=60_000)
    _check(sol, reference("diabetes", 1.0))
    assert int(sol.stats["polishes"]) == 0
    polished = cn.solve_relu(p.X, p.y, p.masks, 1.0, method="admm", max_iters=60_000)
    assert int(polished.stats["polishes"]) > 0
    assert int(polished.iterations) < int(sol.iterations)


@pytest.mark.parametrize("name,lam", [("teacher", 1e-2), ("breast_cancer", 1e-3)])
def test_recovered_network_attains_the_convex_optimum(name, lam):
    p = problem(name)
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-9, constraint_tol=1e-9)
    net = cn.to_network(sol)
    value = float(cn.network_objective(net, p.X, p.y, lam, loss=p.loss))
    np.testing.assert_allclose(value, float(sol.objective), rtol=1e-8)
    np.testing.assert_allclose(value, reference(name, lam), rtol=1e-6)
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


def test_cone_decomposition_is_feasible_with_the_same_predictions():
    p = problem("teacher")
    gated = cn.solve_gated(p.X, p.y, p.masks, 1e-2, tol=1e-10)
    dec = cn.cone_decompose(gated, p.X, p.masks)
    U, V = dec.weights
    assert float(dec.violation) <= 1e-9
    np.testing.assert_allclose(
        cn.operators.gated_forward(p.X, p.masks, U - V),
        cn.operators.gated_forward(p.X, p.masks, gated.weights),
        atol=1e-9,
    )
    assert float(dec.growth) >= 1.0
    np.testing.assert_allclose(float(dec.penalty_gated), float(cn.prox.group_l1(gated.weights)), rtol=1e-12)
    # The public two-argument form takes the masks solve_gated recorded.
    again = cn.cone_decompose(gated, p.X)
    np.testing.assert_array_equal(np.asarray(again.weights[0]), np.asarray(U))
    with pytest.raises(ValueError, match="masks must be given"):
        cn.cone_decompose(gated.weights, p.X)
    # The decomposed point is feasible for the exact program, so it cannot beat its optimum.
    relu_value = float(gated.objective) - 1e-2 * float(dec.penalty_gated) + 1e-2 * float(dec.penalty_relu)
    assert relu_value >= reference("teacher", 1e-2) * (1 - 1e-9)


def _toy(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.uniform(-1, 1, (n, 2)), np.ones((n, 1))])
    y = np.sin(3 * X[:, 0]) * X[:, 1] + 0.1 * rng.standard_normal(n)
    return jnp.asarray(X), jnp.asarray(y)


@pytest.mark.parametrize("n", [5, 12, 30])
def test_enumeration_counts_every_pattern_of_2d_points(n):
    X, _ = _toy(n, seed=n)
    masks = cn.enumerate_masks(X)
    assert masks.shape == (n, n * n - n + 2)  # the arrangement bound, exact in general position
    assert np.unique(np.asarray(masks), axis=1).shape[1] == masks.shape[1]
    sampled = np.unique(np.asarray(X) @ np.random.default_rng(0).standard_normal((3, 20_000)) >= 0, axis=1)
    assert set(map(bytes, np.asarray(masks).T)) >= set(map(bytes, sampled.T))


def test_enumeration_refuses_high_dimensions():
    with pytest.raises(ValueError, match="d <= 3"):
        cn.enumerate_masks(jnp.ones((10, 4)))


def test_no_adam_run_beats_the_global_optimum():
    """With every pattern enumerated, the convex optimum is the non-convex network's global optimum."""
    X, y = _toy(20, seed=4)  # 382 patterns
    lam = 3e-3
    masks = cn.enumerate_masks(X)
    sol = cn.solve_relu(X, y, masks, lam, tol=1e-9, constraint_tol=1e-9, max_iters=100_000)
    assert sol.status == cn.Status.CONVERGED
    net = cn.to_network(sol).prune()
    optimum = float(sol.objective)
    np.testing.assert_allclose(float(cn.network_objective(net, X, y, lam)), optimum, rtol=1e-7)

    width = max(net.width, 8)

    def objective(params):
        return cn.network_objective(cn.Network(W1=params[0], w2=params[1], squeeze=True), X, y, lam)

    opt = optax.adam(1e-2)

    def train(key):
        k1, k2 = jax.random.split(key)
        params = (jax.random.normal(k1, (3, width)) / np.sqrt(3), jax.random.normal(k2, (width, 1)) / np.sqrt(width))

        def step(carry, _):
            params, state = carry
            grads = jax.grad(objective)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=4000)
        return objective(params)

    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction mixes int and float
        finals = jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 10))
    assert np.all(np.asarray(finals) >= optimum * (1 - 1e-6)), (np.asarray(finals), optimum)


class _NoProx(losses.Squared):
    """A user's loss that leaves out `prox`: the AL can use it, ADMM cannot."""

    name = "no_prox"
    prox = losses.Loss.prox


def test_bad_options_are_refused():
    p = problem("teacher")
    with pytest.raises(ValueError, match="method must be one of"):
        cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="sgd")
    with pytest.raises(ValueError, match="needs a loss with a prox"):
        cn.solve_relu(p.X, p.y, p.masks, 1e-2, loss=_NoProx(), method="admm")
    with pytest.raises(ValueError, match="needs a loss with a prox"):
        cn.solve_relu(p.X, np.eye(3)[np.arange(p.X.shape[0]) % 3], p.masks, 1e-2, loss="cross_entropy", method="admm")
    with pytest.raises(ValueError, match="init must be a pair"):
        cn.solve_relu(p.X, p.y, p.masks, 1e-2, init=jnp.zeros((20, 6)))


def test_float32_al_stalls_with_its_best_point_instead_of_running_on():
    """In float32 the AL's multipliers carry ρ × the rounding of X W: on this 60×5 problem its gap used to grow
    with the budget (ρ up to 1.7e5, always MAX_ITERS; max_iters=1e10 ran for minutes). It must stop on its
    own (STALLED) with ρ bounded, and hand back its best point within constraint_tol, whose objective is the
    float64 optimum's to float32 accuracy and whose gap is honest (objective − p* ≤ gap)."""
    p64 = helpers.teacher(n=60, d=5, P=10, seed=0)
    p_star = reference_of(p64, 1e-3)
    p = helpers.teacher(n=60, d=5, P=10, seed=0, dtype=jnp.float32)
    sol = cn.solve_relu(p.X, p.y, p.masks, 1e-3, max_iters=10**9)
    assert int(sol.status) in (cn.Status.STALLED, cn.Status.CONVERGED), sol
    assert int(sol.iterations) < 100_000
    N, eps = p.X.shape[0], float(jnp.finfo(jnp.float32).eps)
    assert float(sol.stats["rho"]) <= 1e-3 / (N * eps) * (1 + 1e-6)
    assert float(sol.violation) <= 1e-6
    assert abs(float(sol.objective) - p_star) <= 1e-5 * p_star
    assert float(sol.objective) - p_star <= float(sol.gap)
