"""Row-sharded solves: 1, 2 and 8 devices give the single-device solution, and only (P, d)-sized blocks travel.

conftest.py gives 8 host devices. The reference is the ordinary single-device solve; row counts are chosen
not to divide the device count, so padding rows are always present. The HLO checks read the compiled
program: its collectives are all-reduces of (P, d, c)-sized or scalar arrays, the same for any n.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import losses
from convexnn._mesh import replicate_on_mesh
from convexnn._rows import Rows
from convexnn.options import ALOptions, FistaOptions, GatedOptions
from convexnn.path import _path_sharded, _PathStatic
from convexnn.problem import on_shards
from convexnn.solvers import fista, gated, objectives, relu

from . import helpers

TOL = 1e-10  # solve far below the comparison tolerance, so that agreement to 1e-6 means something
RTOL = 1e-6


def mesh_of(k: int) -> jax.sharding.Mesh:
    return jax.make_mesh((k,), ("data",), devices=jax.devices()[:k])


def rel_err(a, b) -> float:
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def assert_same_solution(sol: cn.Solution, ref: cn.Solution) -> None:
    assert np.all(np.asarray(sol.status) == cn.Status.CONVERGED)
    assert jax.tree.map(jnp.shape, sol.weights) == jax.tree.map(jnp.shape, ref.weights)
    assert rel_err(sol.weights, ref.weights) <= RTOL
    np.testing.assert_allclose(np.asarray(sol.objective), np.asarray(ref.objective), rtol=10 * TOL)


# ---------------------------------------------------------------- solutions on 1, 2 and 8 devices


@pytest.fixture(scope="module")
def teacher():
    prob = helpers.teacher(n=203, d=6, P=12, seed=3)  # 203 rows: padded to 204 on 2 devices, 208 on 8
    lam = 0.05 * float(cn.lam_max(prob.X, prob.y, prob.masks))
    return prob, lam, cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=TOL)


@pytest.mark.parametrize("k", [1, 2, 8])
def test_gated_equals_single_device(teacher, k):
    prob, lam, ref = teacher
    data = cn.shard_rows(mesh_of(k), prob.X, prob.y, prob.masks)
    assert data.n == 203 and data.X.shape[0] == -(-203 // k) * k
    assert data.masks.dtype == jnp.bool_ and data.X.sharding.spec == jax.sharding.PartitionSpec("data")
    assert_same_solution(cn.solve_gated(data, lam=lam, tol=TOL), ref)


@pytest.mark.parametrize(
    "make",
    [lambda: helpers.breast_cancer(n=150, P=8), lambda: helpers.digits(n=100, P=4, loss="cross_entropy")],
    ids=["logistic", "cross_entropy"],
)
def test_padding_rows_add_nothing_to_classification_losses(make):
    """A padding row predicts 0, which would add log 2 (logistic) or log c (cross-entropy) if it counted."""
    prob = make()
    lam = 0.05 * float(cn.lam_max(prob.X, prob.y, prob.masks, loss=prob.loss))
    ref = cn.solve_gated(prob.X, prob.y, prob.masks, lam, loss=prob.loss, tol=TOL)
    data = cn.shard_rows(mesh_of(8), prob.X, prob.y, prob.masks, loss=prob.loss)
    assert data.X.shape[0] > data.n
    np.testing.assert_allclose(
        float(cn.lam_max(data, loss=prob.loss)), float(cn.lam_max(prob.X, prob.y, prob.masks, loss=prob.loss)), 1e-12
    )
    assert_same_solution(cn.solve_gated(data, lam=lam, loss=prob.loss, tol=TOL), ref)


@pytest.fixture(scope="module")
def small_relu():
    prob = helpers.teacher(n=61, d=4, P=6, seed=7)  # 61 rows: padded on 2 and 8 devices
    lam = 0.1 * float(cn.lam_max(prob.X, prob.y, prob.masks))
    return prob, lam


@pytest.mark.parametrize("method,k", [("al", 2), ("al", 8), ("admm", 8)])
def test_relu_equals_single_device(small_relu, method, k):
    prob, lam = small_relu
    kw = dict(method=method, tol=TOL, constraint_tol=TOL)
    ref = cn.solve_relu(prob.X, prob.y, prob.masks, lam, **kw)
    sol = cn.solve_relu(cn.shard_rows(mesh_of(k), prob.X, prob.y, prob.masks), lam=lam, **kw)
    assert_same_solution(sol, ref)
    assert float(sol.violation) <= TOL


@pytest.mark.parametrize(
    "model,mode,k", [("gated", "vmap", 8), ("gated", "warm", 2), ("relu", "vmap", 8), ("relu", "warm", 2)]
)
def test_path_equals_single_device(model, mode, k):
    prob = helpers.teacher(n=150 if model == "gated" else 75, d=5, P=10, seed=5)
    lams = cn.lam_grid(cn.lam_max(prob.X, prob.y, prob.masks), num=4, ratio=1e-2)[jnp.array([2, 0, 3, 1])]
    kw = dict(model=model, mode=mode, tol=TOL, constraint_tol=TOL)
    ref = cn.solve_path(prob.X, prob.y, prob.masks, lams, **kw)
    sol = cn.solve_path(cn.shard_rows(mesh_of(k), prob.X, prob.y, prob.masks), lams=lams, **kw)
    np.testing.assert_array_equal(np.asarray(sol.lam), np.asarray(lams))
    assert_same_solution(sol, ref)


def test_rows_mask_padding_in_every_loss_reduction():
    """value, conjugate, Fenchel–Young gap and Bregman divergence of padded rows = those of the real rows."""
    rng = np.random.default_rng(0)
    n, pad, c = 7, 3, 3
    labels = rng.integers(0, c, n)
    cases = {
        losses.Squared(): rng.standard_normal((n, c)),
        losses.Logistic(): np.where(rng.random((n, c)) < 0.5, -1.0, 1.0),
        losses.CrossEntropy(): np.eye(c)[labels],
    }
    rows = Rows(valid=jnp.arange(n + pad) < n)

    def padded(a):
        return jnp.concatenate([a, jnp.zeros((pad, c), a.dtype)])

    @jax.jit
    def both(loss, Y, Z0, Z1):
        N = loss.normaliser(Y)
        T = loss.grad(Z1, Y, N)
        Yp, Z0p, Z1p, Tp = (padded(a) for a in (Y, Z0, Z1, T))
        want = [loss.value(Z0, Y, N), loss.conjugate(T, Y, N), loss.fenchel_young_gap(Z0, T, Y, N)]
        got = [
            loss.value(Z0p, Yp, N, rows),
            loss.conjugate(Tp, Yp, N, rows),
            loss.fenchel_young_gap(Z0p, Tp, Yp, N, rows),
        ]
        return jnp.stack(want + [loss.bregman(Z1, Z0, Y, N)]), jnp.stack(got + [loss.bregman(Z1p, Z0p, Yp, N, rows)])

    for loss, y in cases.items():
        want, got = both(loss, *(jnp.asarray(a) for a in (y, *rng.standard_normal((2, n, c)))))
        assert np.all(np.isfinite(want)), loss.name
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-13, err_msg=loss.name)


def test_shard_rows_rejects_bad_input(teacher):
    prob, lam, _ = teacher
    mesh = mesh_of(2)
    with pytest.raises(ValueError, match="axis"):
        cn.shard_rows(mesh, prob.X, prob.y, prob.masks, axis="model")
    with pytest.raises(ValueError, match="X must be finite"):
        cn.shard_rows(mesh, np.asarray(prob.X).copy() * np.nan, prob.y, prob.masks)
    with pytest.raises(ValueError, match="masks must be"):
        cn.shard_rows(mesh, prob.X, prob.y, prob.masks[:10])
    data = cn.shard_rows(mesh, prob.X, prob.y, prob.masks)
    with pytest.raises(ValueError, match="left out"):
        cn.solve_gated(data, prob.y, prob.masks, lam)
    with pytest.raises(ValueError, match="sharded for"):
        cn.solve_gated(data, lam=lam, loss="logistic")
    with pytest.raises(ValueError, match="lam must be given"):
        cn.solve_gated(data)


# ---------------------------------------------------------------- what travels: read from the compiled HLO

_COLLECTIVE = re.compile(
    r"= (\(.*?\)|\S+) (all-reduce|all-gather|all-to-all|ragged-all-to-all|collective-permute|collective-broadcast"
    r"|reduce-scatter)(?:-start)?\("
)
_ARRAY = re.compile(r"\b(?:pred|[a-z]+\d+)\[([\d,]*)\]")


def collectives(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """(op, operand shape) for every collective of a compiled HLO module; tuple operands are listed apart."""
    found = []
    for shapes, op in _COLLECTIVE.findall(hlo):
        for dims in _ARRAY.findall(shapes):
            found.append((op, tuple(int(x) for x in dims.split(",") if x)))
    return found


def compiled_text(fn, *args, static_argnums=()) -> str:
    return jax.jit(fn, static_argnums=static_argnums).lower(*args).compile().as_text()


def gated_hlo(n: int, P: int = 12, d: int = 6) -> str:
    prob = helpers.teacher(n=n, d=d, P=P, seed=3)
    data = cn.shard_rows(mesh_of(8), prob.X, prob.y, prob.masks)
    numbers = (jnp.asarray(0.1), jnp.zeros((P, d, 1)), jnp.asarray(1e-8), jnp.asarray(100, jnp.int32))
    static = gated.GatedStatic(cn.Squared(), True, GatedOptions(), None, data.rescale_x)
    return compiled_text(gated.gated_on_shards, data, *replicate_on_mesh(data.mesh, numbers), static, static_argnums=5)


def test_gated_program_communicates_only_small_all_reduces():
    P, d, c = 12, 6, 1
    found = collectives(gated_hlo(203))
    assert found, "a sharded solve must reduce over the devices"
    assert {op for op, _ in found} == {"all-reduce"}  # no all-gather, all-to-all, collective-permute
    # once per solve: (c,), the targets' per-output sums that set the problem's units; (P,), the patterns' norms
    # ‖D_i X‖_F of the gap-safe screening test
    for _, shape in found:
        assert shape in {(), (c,), (P,), (P, d, c)}, shape
    assert sorted(found) == sorted(collectives(gated_hlo(411)))  # the same whatever n is


def test_one_all_reduce_of_the_gradient_per_iteration():
    """k R-FISTA steps add k all-reduces of the (P, d, c) gradient, and only scalars besides."""
    P, d = 12, 6
    prob = helpers.teacher(n=203, d=d, P=P, seed=3)
    data = cn.shard_rows(mesh_of(8), prob.X, prob.y, prob.masks)

    def steps(data, lam, W, k):
        def local(problem, lam, W):
            obj = objectives.GatedObjective(problem=problem)
            s = fista.init_state(obj, lam, W, step0=jnp.ones((), W.dtype))
            for _ in range(k):
                s = fista.fista_step(obj, lam, s, FistaOptions())
            return s.W, s.G_v, s.objective, s.gap, s.step

        return on_shards(local, data, cn.Squared(), lam, W)

    counts = []
    for k in (1, 2):
        found = collectives(compiled_text(steps, data, jnp.asarray(0.1), jnp.zeros((P, d, 1)), k, static_argnums=3))
        assert all(shape in {(), (P, d, 1)} for _, shape in found), found
        counts.append((sum(s == (P, d, 1) for _, s in found), sum(s == () for _, s in found)))
    per_step = (counts[1][0] - counts[0][0], counts[1][1] - counts[0][1])
    assert per_step[0] == 1  # the adjoint Aᵀ∇L: one (P, d, c) psum
    assert 1 <= per_step[1] <= 4  # loss value, certificate, line-search Bregman terms


def test_relu_and_path_programs_communicate_only_parameter_sized_arrays():
    """Exact ReLU (AL): (2P, d, c) blocks, and once per Newton step its (2P, c, d, d) block-Jacobi
    preconditioner; a vmapped path of m λ: the same, most with a leading m. Never anything with n in it."""
    prob = helpers.teacher(n=203, d=5, P=8, seed=3)
    P, d = 8, 5
    data = cn.shard_rows(mesh_of(8), prob.X, prob.y, prob.masks)
    n_shapes = {data.X.shape[0], data.X.shape[0] // 8, 203}
    tol, iters = jnp.asarray(1e-8), jnp.asarray(50, jnp.int32)
    W0 = jnp.zeros((2 * P, d, 1))
    relu_static = relu.ReluStatic(cn.Squared(), "al", True, ALOptions(), None, data.rescale_x)
    relu_hlo = compiled_text(
        relu.relu_on_shards,
        data,
        *replicate_on_mesh(data.mesh, (jnp.asarray(0.1), W0, tol, tol, iters)),
        relu_static,
        static_argnums=6,
    )
    gated_static = gated.GatedStatic(cn.Squared(), True, GatedOptions(), None, data.rescale_x)
    lams = jnp.asarray([0.3, 0.1, 0.03])
    path_hlo, relu_path_hlo = (
        compiled_text(
            _path_sharded,
            data,
            *replicate_on_mesh(data.mesh, (lams, jnp.zeros((q, d, 1)), tol, tol, iters)),
            _PathStatic(model, "vmap", solve),
            static_argnums=6,
        )
        for q, model, solve in [(P, "gated", gated_static), (2 * P, "relu", relu_static)]
    )
    # Once per solve: (1,), the targets' per-output sums (c = 1) that set the problem's units; (P,), the gated
    # patterns' norms of the gap-safe screening test.
    for hlo, allowed in [
        (relu_hlo, {(), (1,), (2 * P, d, 1), (2 * P, 1, d, d)}),
        (path_hlo, {(), (1,), (3,), (P,), (P, d, 1), (3, P, d, 1)}),  # the start W0 is shared by every λ
        (relu_path_hlo, {(), (1,), (3,), (2 * P, d, 1), (3, 2 * P, d, 1), (3, 2 * P, 1, d, d)}),
    ]:
        found = collectives(hlo)
        assert found and {op for op, _ in found} == {"all-reduce"}
        for _, shape in found:
            assert shape in allowed and not n_shapes & set(shape), shape
