"""Bad input is refused before any work, with a message naming the argument; failures show in `status`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import _validate

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
    _bad(r"X must be float32 or float64; got int32", X=np.ones((40, 5), dtype=np.int32))(prob)


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


def test_overflow_reports_nonfinite():
    """Targets whose objective does not fit float32 (y ~ 1e20: squares ~ 1e40): NONFINITE, never CONVERGED."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((30, 4)), jnp.float32)
    y = jnp.asarray(rng.standard_normal(30) * 1e20, jnp.float32)
    masks = jnp.asarray(rng.random((30, 5)) < 0.5)
    sol = cn.solve_gated(X, y, masks, 1e17)
    assert int(sol.status) == cn.Status.NONFINITE
    assert "nonfinite" in repr(sol)


def test_data_at_extreme_scales_is_solved_not_overflowed():
    """X and y at 1e18 in float32 (their products used to overflow): solved in its own units, honestly."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((30, 4)) * 1e18, jnp.float32)
    y = jnp.asarray(rng.standard_normal(30) * 1e18, jnp.float32)
    masks = jnp.asarray(rng.random((30, 5)) < 0.5)
    sol = cn.solve_gated(X, y, masks, 1e-3 * 1e36)
    ref = cn.solve_gated(X / 1e18, y / 1e18, masks, 1e-3)
    assert int(sol.status) == int(ref.status) == cn.Status.CONVERGED
    assert float(sol.objective) == pytest.approx(1e36 * float(ref.objective), rel=1e-4)
    assert bool(jnp.all(jnp.isfinite(sol.weights)))


def test_traced_inputs_check_shapes_at_trace_time(prob):
    def f(X):
        return cn.solve_gated(X, prob.y, prob.masks[:-1], 1e-2)

    with pytest.raises(ValueError, match=r"masks must be \(n, P\)"):
        jax.jit(f)(prob.X)
    out = jax.jit(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam))(jnp.asarray(1e-2))
    assert int(out.status) == cn.Status.CONVERGED


def _stops(match, f, *args):
    """f(*args) must stop with `match` when the compiled program runs (eqx.error_if), never return."""
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(f(*args))


def test_traced_invalid_values_stop_the_program(prob):
    """Values a caller's jit or vmap hides from the host checks are checked inside the program: λ < 0 used to
    end CONVERGED at objective −2e8, and {0, 1} labels with the logistic loss STALLED without an error."""
    X, y, masks = prob.X, prob.y, prob.masks
    gated = jax.jit(lambda lam: cn.solve_gated(X, y, masks, lam))
    _stops(r"lam must be finite and >= 0", gated, -1.0)
    _stops(r"lam must be finite and >= 0", gated, jnp.nan)
    _stops(
        r"lam must be finite and >= 0", jax.vmap(lambda lam: cn.solve_gated(X, y, masks, lam)), jnp.array([1e-2, -1.0])
    )
    labels = (y > 0).astype(y.dtype)  # {0, 1}, not {-1, +1}
    _stops(r"labels in \{-1, \+1\}", jax.jit(lambda t: cn.solve_gated(X, t, masks, 1e-2, loss="logistic")), labels)
    _stops(
        r"non-negative rows summing to 1",
        jax.jit(lambda t: cn.solve_gated(X, t, masks, 1e-2, loss="cross_entropy")),
        jnp.ones((40, 3), X.dtype),
    )
    ints = np.asarray(masks, np.int8)
    _stops(r"masks must hold only 0 and 1", jax.jit(lambda m: cn.solve_gated(X, y, m, 1e-2)), ints * 2)
    _stops(r"X must be finite", jax.jit(lambda A: cn.solve_gated(A, y, masks, 1e-2)), X.at[0, 0].set(jnp.inf))
    _stops(r"y must be finite", jax.jit(lambda t: cn.solve_gated(X, t, masks, 1e-2)), y.at[0].set(jnp.nan))
    _stops(r"tol must be finite and > 0", jax.jit(lambda t: cn.solve_gated(X, y, masks, 1e-2, tol=t)), -1e-6)
    _stops(r"max_iters must be finite and > 0", jax.jit(lambda k: cn.solve_gated(X, y, masks, 1e-2, max_iters=k)), 0)
    _stops(
        r"init must be finite",
        jax.jit(lambda W: cn.solve_gated(X, y, masks, 1e-2, init=W)),
        jnp.full((6, 5), jnp.nan, X.dtype),
    )
    _stops(r"lam must be finite and >= 0", jax.jit(lambda lam: cn.solve_relu(X, y, masks, lam)), -1.0)
    _stops(r"lams must be finite and >= 0", jax.jit(lambda ls: cn.solve_path(X, y, masks, ls)), jnp.array([1e-2, -1.0]))
    # Valid traced values run as before.
    ok = jax.jit(lambda t: cn.solve_gated(X, t, masks, 1e-2, loss="logistic"))(2 * labels - 1)
    assert int(ok.status) == cn.Status.CONVERGED
    ok = jax.jit(lambda m: cn.solve_gated(X, y, m, 1e-2))(ints)
    assert int(ok.status) == cn.Status.CONVERGED


def test_unclear_inputs_get_clear_errors(prob):
    _bad(r"X must be float32 or float64; got float16", X=np.asarray(prob.X, np.float16))(prob)
    _bad(r"X must be float32 or float64; got bfloat16", X=jnp.asarray(prob.X, jnp.bfloat16))(prob)
    _bad(r"y must be numeric", y=np.asarray(prob.y).astype(str))(prob)
    _bad(r"y must be real; got the complex dtype", y=np.asarray(prob.y).astype(np.complex128))(prob)
    _bad(r"lam must be real; got the complex dtype", lam=1e-2 + 1e-3j)(prob)
    with pytest.raises(ValueError, match=r"lam must be numeric"):
        _validate.check_lam("0.1", jnp.float64)  # (the public signature's type hint refuses it first in tests)
    with pytest.raises(ValueError, match=r"lam must be real"):
        cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2 + 1j)
    with pytest.raises(ValueError, match=r"lams must be real"):
        cn.solve_path(prob.X, prob.y, prob.masks, np.array([1e-2 + 1j]))
    with pytest.raises(ValueError, match=r"y must be real"):
        cn.lam_max(prob.X, np.asarray(prob.y).astype(np.complex64), prob.masks)


def test_max_iters_beyond_int32_is_clipped_not_wrapped(prob):
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2, max_iters=1e10)
    assert int(sol.status) == cn.Status.CONVERGED


def test_none_options_take_the_defaults(prob):
    """max_iters=None used to fail inside jnp.asarray; None is each option's documented default."""
    default = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2)
    given = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2, tol=None, max_iters=None)
    assert float(given.objective) == float(default.objective) and int(given.iterations) == int(default.iterations)
    relu = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, tol=None, max_iters=None)
    assert int(relu.status) == cn.Status.CONVERGED
    with pytest.raises(ValueError, match="max_iters must be a number; got None"):
        _validate.check_positive("max_iters", None, jnp.float64, integer=True)


def test_repr_is_readable(prob):
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2)
    text = repr(sol)
    assert text.startswith("Solution(status=converged, objective=")
    assert "weights=float64[6, 5]" in text
    batched = jax.vmap(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam))(jnp.array([1e-2, 1e-1]))
    assert "batch=(2,)" in repr(batched) and "'converged': 2" in repr(batched)
