"""Working-set solves of the gated program (`convexnn.solvers.working_set`): the optimum of the whole program,
certified by the whole program's gap, whatever the stage a solve ends in.

Small sets (capacity 4, growth 4: stages of 4, 16 and then all P) so that the stage hand-over and the final
full stage run on problems Clarabel solves.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import losses
from convexnn.solvers.working_set import capacities

from . import helpers
from .reference import clarabel_gated, clarabel_nuclear
from .test_conv import digits_images

SETS = cn.WorkingSetOptions(min_patterns=1, capacity=4, growth=4)
ON = cn.GatedOptions(working_set=SETS)
OFF = cn.GatedOptions(working_set=None)

CASES = {
    "teacher-sparse": (helpers.teacher, 1e-2),
    "teacher-dense": (helpers.teacher, 5e-4),
    "breast_cancer": (helpers.breast_cancer, 1e-3),
    "digits-cross_entropy": (functools.partial(helpers.digits, n=120, P=24, loss="cross_entropy"), 3e-3),
}


@functools.cache
def case(name: str):
    make, lam = CASES[name]
    p = make()
    Y = losses.get_loss(p.loss).prepare_targets(np.asarray(p.y))
    return p, lam, clarabel_gated(p.X, Y, p.masks, lam, p.loss)[0]


def test_capacities_grow_to_all_patterns():
    assert capacities(50, SETS) == (4, 16, 50)
    assert capacities(8192, cn.WorkingSetOptions()) == (128, 256, 512, 1024, 2048, 4096, 8192)
    assert capacities(8192, cn.WorkingSetOptions(growth=4)) == (128, 512, 2048, 8192)
    assert capacities(100, cn.WorkingSetOptions()) == (100,)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_clarabel_and_the_gap_bounds_the_error(name):
    p, lam, p_star = case(name)
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-8, options=ON)
    assert sol.status == cn.Status.CONVERGED, sol.message
    assert abs(float(sol.objective) - p_star) <= 1e-6 * abs(p_star), (float(sol.objective), p_star)
    assert float(sol.gap) <= 1e-8 * max(float(cn.certificates.objective_unit(p.y, p.loss)), abs(float(sol.objective)))
    assert float(sol.gap) >= float(sol.objective) - p_star - 1e-9 * abs(p_star)
    assert int(sol.stats["outer_steps"]) >= 1


def test_a_dense_solution_ends_in_the_full_stage_and_a_sparse_one_does_not():
    p, lam, _ = case("teacher-dense")
    dense = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-8, options=ON)
    active = int(jnp.sum(jnp.linalg.norm(dense.weights, axis=1) > 0))
    assert active > 12 and int(dense.stats["capacity"]) == p.masks.shape[1]
    lam = 0.5 * float(cn.lam_max(p.X, p.y, p.masks))
    sparse = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-8, options=ON)
    active = int(jnp.sum(jnp.linalg.norm(sparse.weights, axis=1) > 0))
    assert sparse.status == cn.Status.CONVERGED
    assert 0 < active <= 12 and int(sparse.stats["capacity"]) < p.masks.shape[1]


@pytest.mark.parametrize("max_iters", [1, 20])
def test_a_budget_that_runs_out_says_so_and_the_gap_still_bounds(max_iters):
    p, lam, p_star = case("teacher-dense")
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-12, max_iters=max_iters, options=ON)
    assert sol.status == cn.Status.MAX_ITERS
    assert float(sol.gap) >= float(sol.objective) - p_star - 1e-9 * abs(p_star)


def test_nuclear_blocks_match_clarabel():
    p = helpers.teacher(outputs=3, P=24)
    lam = 0.05 * float(cn.lam_max(p.X, p.y, p.masks, penalty="nuclear"))
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-9, options=ON)
    p_star = clarabel_nuclear(p.X, p.y, p.masks, lam)
    assert sol.status == cn.Status.CONVERGED, sol.message
    assert abs(float(sol.objective) - p_star) <= 1e-6 * abs(p_star)
    assert float(sol.gap) >= float(sol.objective) - p_star - 1e-9 * abs(p_star)


def test_vmapped_lams_match_one_by_one():
    p, _, _ = case("teacher-sparse")
    lams = jnp.asarray([3e-2, 1e-2, 2e-3])
    batched = jax.vmap(lambda lam: cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-9, options=ON))(lams)
    for k, lam in enumerate(lams):
        one = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-9, options=OFF)
        assert int(batched.status[k]) == cn.Status.CONVERGED
        np.testing.assert_allclose(batched.objective[k], one.objective, rtol=1e-8)


def test_warm_path_matches_the_path_on_every_pattern():
    p, _, _ = case("teacher-sparse")
    lams = cn.lam_grid(cn.lam_max(p.X, p.y, p.masks), 6, 0.01)
    on = cn.solve_path(p.X, p.y, p.masks, lams, tol=1e-9, options=ON)
    off = cn.solve_path(p.X, p.y, p.masks, lams, tol=1e-9, options=OFF)
    assert np.all(np.asarray(on.status) == cn.Status.CONVERGED)
    np.testing.assert_allclose(on.objective, off.objective, rtol=1e-8)


def test_row_shards_give_the_single_device_solution():
    p, lam, _ = case("teacher-sparse")
    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    data = cn.shard_rows(mesh, p.X, p.y, p.masks)
    sharded = cn.solve_gated(data, lam=lam, tol=1e-9, options=ON)
    one = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-9, options=ON)
    assert int(sharded.status) == cn.Status.CONVERGED
    np.testing.assert_allclose(sharded.objective, one.objective, rtol=1e-9)
    np.testing.assert_allclose(sharded.weights, one.weights, rtol=1e-5, atol=1e-8)


def test_patches_from_gates_on_working_sets():
    p = digits_images("cross_entropy", n=60, P=24)
    lam = 0.05 * float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    with_masks = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, penalty="nuclear", tol=1e-10, options=OFF)
    with_gates = cn.solve_gated(p.X, p.y, lam=lam, gates=p.gates, loss=p.loss, penalty="nuclear", tol=1e-10, options=ON)
    assert int(with_gates.status) == cn.Status.CONVERGED
    np.testing.assert_allclose(with_gates.objective, with_masks.objective, rtol=1e-9)


@pytest.mark.parametrize("options", [ON, OFF], ids=["working sets", "all patterns"])
def test_rows_from_gates_give_the_solve_of_stored_masks(options):
    """solve_gated(X, y, lam=..., gates=G) for rows: the patterns recomputed by every product with X (and, on
    working sets, the set's masks built from its gates) give the optimum of the stored masks, certified."""
    p, lam, p_star = case("breast_cancer")
    gates = jnp.asarray(np.random.default_rng(0).standard_normal((p.X.shape[1], 24)))
    masks = cn.activation_masks(p.X, gates)
    with_masks = cn.solve_gated(p.X, p.y, masks, lam, loss=p.loss, tol=1e-9, options=OFF)
    with_gates = cn.solve_gated(p.X, p.y, lam=lam, gates=gates, loss=p.loss, tol=1e-9, options=options)
    assert int(with_gates.status) == cn.Status.CONVERGED, with_gates.message
    np.testing.assert_allclose(with_gates.objective, with_masks.objective, rtol=1e-8)
    assert float(with_gates.gap) >= float(with_gates.objective) - float(with_masks.objective) - 1e-9
    np.testing.assert_array_equal(with_gates.stats["screened"] & np.any(with_masks.weights != 0, axis=1), False)


def test_gradients_match_the_solve_on_every_pattern():
    p, lam, _ = case("teacher-sparse")

    def objective(lam, options):
        return cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10, options=options).objective

    np.testing.assert_allclose(jax.grad(objective)(lam, ON), jax.grad(objective)(lam, OFF), rtol=1e-6)
    W = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10, options=OFF).weights
    # d objective / d λ = Ω(W*) at the optimum (the envelope theorem): an independent value
    np.testing.assert_allclose(jax.grad(objective)(lam, ON), jnp.sum(jnp.linalg.norm(W, axis=1)), rtol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("options", [ON, OFF], ids=["working_sets", "all_patterns"])
def test_screened_patterns_are_zero_at_the_optimum(name, options):
    """Gap-safe screening: every pattern it proves zero is zero in a tightly solved optimum, and near the optimum
    (tol 1e-8) it proves most of the zero patterns."""
    p, lam, _ = case(name)
    tight = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-12, options=OFF)
    W = np.asarray(tight.weights).reshape(p.masks.shape[1], p.X.shape[1], -1)
    zero = np.linalg.norm(W, axis=1).max(axis=1) == 0
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-8, options=options)
    screened = np.asarray(sol.stats["screened"])
    assert screened.shape == zero.shape and screened.dtype == bool
    assert not np.any(screened & ~zero)
    assert screened.sum() >= 0.5 * zero.sum(), (screened.sum(), zero.sum())
