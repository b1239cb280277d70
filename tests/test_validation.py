"""Bad input is refused before any work, with a message naming the argument; failures show in `status`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers


@pytest.fixture(scope="module")
def prob():
    return helpers.teacher(n=40, d=5, P=6, seed=1)


def _bad(match, **changes):
    def run(prob):
        args = dict(X=prob.X, y=prob.y, masks=prob.masks, lam=1e-2)
        kwargs = {k: changes.pop(k) for k in list(changes) if k in ("loss", "tol", "max_iters", "init")}
        args.update(changes)
        with pytest.raises(ValueError, match=match):
            cn.solve_gated(args["X"], args["y"], args["masks"], args["lam"], **kwargs)

    return run


def test_non_finite_X(prob):
    X = prob.X.at[3, 2].set(jnp.nan)
    _bad(r"X must be finite", X=X)(prob)


def test_non_finite_y(prob):
    _bad(r"y must be finite", y=prob.y.at[0].set(jnp.inf))(prob)


def test_negative_or_nan_lam(prob):
    _bad(r"lam must be >= 0", lam=-1.0)(prob)
    _bad(r"lam must be finite", lam=float("nan"))(prob)
    _bad(r"lam must be a scalar", lam=jnp.ones(2))(prob)


def test_shape_mismatches(prob):
    _bad(r"masks must be \(n, P\) with n = 40; got shape \(39, 6\)", masks=prob.masks[:-1])(prob)
    _bad(r"y must be \(n,\) or \(n, c\) with n = 40; got shape \(39,\)", y=prob.y[:-1])(prob)
    _bad(r"X must be a 2-D", X=prob.X[0])(prob)


def test_empty_data(prob):
    _bad(r"P = 0", masks=prob.masks[:, :0])(prob)
    _bad(r"n = 0", X=prob.X[:0], y=prob.y[:0], masks=prob.masks[:0])(prob)
    _bad(r"d = 0", X=prob.X[:, :0])(prob)


def test_integer_X(prob):
    _bad(r"X must have a floating dtype", X=np.ones((40, 5), dtype=np.int32))(prob)


def test_masks_must_be_boolean_like(prob):
    _bad(r"masks must hold only 0 and 1", masks=np.full((40, 6), 2, dtype=np.int8))(prob)
    _bad(r"masks must be bool or 0/1 integers", masks=np.ones((40, 6), dtype=np.float32))(prob)
    ints = cn.solve_gated(prob.X, prob.y, np.asarray(prob.masks, np.int8), 1e-2)
    bools = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2)
    np.testing.assert_allclose(ints.objective, bools.objective, rtol=1e-12)


def test_logistic_labels(prob):
    _bad(r"labels in \{-1, \+1\}", y=prob.y, loss="logistic")(prob)


def test_cross_entropy_labels(prob):
    _bad(r"class labels must be >= 0", y=-np.ones(40, dtype=np.int32), loss="cross_entropy")(prob)
    _bad(r"rows summing to 1", y=np.ones((40, 3)), loss="cross_entropy")(prob)


def test_options(prob):
    _bad(r"tol must be > 0", tol=0.0)(prob)
    _bad(r"max_iters must be > 0", max_iters=0)(prob)
    _bad(r"init must have shape \(6, 5\)", init=jnp.zeros((6, 4)))(prob)
    _bad(r"loss must be one of", loss="hinge")(prob)


def test_max_iters_one_reports_max_iters(prob):
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=1, polish=False, tol=1e-12)
    assert int(sol.status) == cn.Status.MAX_ITERS
    assert int(sol.iterations) == 1
    assert "max_iters" in repr(sol)


def test_overflow_reports_nonfinite_with_finite_weights():
    """Data whose products overflow float32: the solver must stop with NONFINITE, not return inf/NaN."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((30, 4)) * 1e18, jnp.float32)
    y = jnp.asarray(rng.standard_normal(30) * 1e18, jnp.float32)
    masks = jnp.asarray(rng.random((30, 5)) < 0.5)
    sol = cn.solve_gated(X, y, masks, 1e-3)
    assert int(sol.status) == cn.Status.NONFINITE
    assert bool(jnp.all(jnp.isfinite(sol.weights)))
    assert "nonfinite" in repr(sol)


def test_traced_inputs_skip_value_checks_but_still_check_shapes(prob):
    def f(X):
        return cn.solve_gated(X, prob.y, prob.masks[:-1], 1e-2)

    with pytest.raises(ValueError, match=r"masks must be \(n, P\)"):
        jax.jit(f)(prob.X)
    out = jax.jit(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam))(jnp.asarray(1e-2))
    assert int(out.status) == cn.Status.CONVERGED


def test_repr_is_readable(prob):
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2)
    text = repr(sol)
    assert text.startswith("Solution(status=converged, objective=")
    assert "weights=float64[6, 5]" in text
    batched = jax.vmap(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam))(jnp.array([1e-2, 1e-1]))
    assert "batch=(2,)" in repr(batched) and "'converged': 2" in repr(batched)
