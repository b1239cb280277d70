"""solve_gated as a pure function of arrays: jit = eager, vmap = a loop, no recompiles for new λ."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers

TOL = 1e-9


@pytest.fixture(scope="module")
def prob():
    return helpers.teacher(n=120, d=6, P=20, seed=3)


def _solve(X, y, masks, lam):
    return cn.solve_gated(X, y, masks, lam, tol=TOL)


def _close(a, b, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(a.objective), np.asarray(b.objective), rtol=rtol)


def test_jit_equals_eager(prob):
    eager = _solve(prob.X, prob.y, prob.masks, 1e-2)
    jitted = jax.jit(_solve)(prob.X, prob.y, prob.masks, 1e-2)
    assert int(jitted.status) == cn.Status.CONVERGED
    _close(eager, jitted, rtol=1e-10)
    np.testing.assert_allclose(eager.weights, jitted.weights, atol=1e-6)


def test_vmap_over_lam_equals_a_loop(prob):
    lams = jnp.array([3e-3, 1e-2, 3e-2, 1e-1])
    batched = jax.vmap(lambda lam: _solve(prob.X, prob.y, prob.masks, lam))(lams)
    assert batched.weights.shape == (4,) + prob.masks.shape[1:] + prob.X.shape[1:]
    assert np.all(np.asarray(batched.status) == cn.Status.CONVERGED)
    for k, lam in enumerate(lams):
        single = _solve(prob.X, prob.y, prob.masks, lam)
        np.testing.assert_allclose(batched.objective[k], single.objective, rtol=1e-7)
        unit = float(cn.certificates.objective_unit(prob.y))
        assert float(batched.gap[k]) <= TOL * max(unit, abs(float(batched.objective[k])))
    np.testing.assert_allclose(np.asarray(batched.lam), np.asarray(lams))


def test_vmap_over_y_equals_a_loop(prob):
    ys = jnp.stack([prob.y, -prob.y, 2 * prob.y])
    batched = jax.vmap(lambda y: _solve(prob.X, y, prob.masks, 1e-2))(ys)
    for k in range(3):
        _close(jax.tree.map(lambda a: a[k], batched), _solve(prob.X, ys[k], prob.masks, 1e-2))


def test_vmap_over_masks_equals_a_loop(prob):
    rng = np.random.default_rng(0)
    stack = jnp.stack([prob.masks, jnp.asarray(rng.random(prob.masks.shape) < 0.5)])
    batched = jax.vmap(lambda m: _solve(prob.X, prob.y, m, 1e-2))(stack)
    for k in range(2):
        _close(jax.tree.map(lambda a: a[k], batched), _solve(prob.X, prob.y, stack[k], 1e-2))


def test_multi_output_equals_outputs_solved_apart(prob):
    """Groups are per (pattern, output), so with the squared loss the outputs decouple up to the 1/c."""
    Y = jnp.stack([prob.y, jnp.sin(prob.y)], axis=1)
    joint = cn.solve_gated(prob.X, Y, prob.masks, 1e-2, tol=TOL)
    assert joint.weights.shape == prob.masks.shape[1:] + prob.X.shape[1:] + (2,)
    total = 0.0
    for k in range(2):
        # (1/(2n·2)) Σ over both outputs = ½ · each single-output loss, so λ halves per output.
        part = cn.solve_gated(prob.X, Y[:, k], prob.masks, 2e-2, tol=TOL)
        np.testing.assert_allclose(joint.weights[..., k], part.weights, atol=1e-5)
        total += 0.5 * float(part.objective)
    np.testing.assert_allclose(float(joint.objective), total, rtol=1e-7)


def test_new_lam_does_not_recompile(prob, caplog):
    _solve(prob.X, prob.y, prob.masks, 1e-2)  # compile once
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        caplog.clear()
        _solve(prob.X, prob.y, prob.masks, 2e-2)
        cn.solve_gated(prob.X, prob.y, prob.masks, 5e-2, tol=1e-7, max_iters=500)
        compiled = [r.getMessage() for r in caplog.records if "gated_core" in r.getMessage()]
        # The detector itself works: a new shape does compile.
        cn.solve_gated(prob.X[:-3], prob.y[:-3], prob.masks[:-3], 5e-2, polish=False)
        detected = [r.getMessage() for r in caplog.records if "gated_core" in r.getMessage()]
    assert compiled == [], compiled
    assert len(detected) > 0
