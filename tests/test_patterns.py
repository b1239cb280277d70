"""Gates, the masks they induce, mask de-duplication and enumeration, checked against numpy, plain Python loops
and (for enumeration) the global optimum of the non-convex network."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convexnn as cn
from convexnn import patterns

# Under the test runner the jaxtyping annotations see a bad shape before the function body does, and
# jaxtyping raises TypeCheckError (a TypeError); without it the body raises ValueError.
SHAPE_ERRORS = (ValueError, TypeError)


# --------------------------------------------------------------------------------------------- sample_gates


@pytest.mark.parametrize("d, num_gates", [(1, 1), (3, 7), (6, 2)])
@pytest.mark.parametrize("dtype", [np.dtype("float32"), np.dtype("float64")])
def test_sample_gates_shape_and_dtype(d, num_gates, dtype):
    gates = patterns.sample_gates(jax.random.key(0), d, num_gates, dtype=dtype)
    assert gates.shape == (d, num_gates)
    assert gates.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(gates)))


def test_sample_gates_default_dtype_is_float32():
    assert patterns.sample_gates(jax.random.key(0), 3, 4).dtype == jnp.float32


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sample_gates_accepts_scalar_type_dtype(dtype):
    # `jnp.float32` is the documented default and what tests/helpers.py passes: it must be accepted.
    gates = patterns.sample_gates(jax.random.key(0), 3, 4, dtype=dtype)
    assert gates.dtype == jnp.dtype(dtype)


def test_sample_gates_deterministic_by_key():
    a = patterns.sample_gates(jax.random.key(3), 4, 5, dtype=np.dtype("float64"))
    b = patterns.sample_gates(jax.random.key(3), 4, 5, dtype=np.dtype("float64"))
    c = patterns.sample_gates(jax.random.key(4), 4, 5, dtype=np.dtype("float64"))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # Legacy uint32 keys work too and are just as deterministic.
    e = patterns.sample_gates(jax.random.PRNGKey(3), 4, 5, dtype=np.dtype("float64"))
    f = patterns.sample_gates(jax.random.PRNGKey(3), 4, 5, dtype=np.dtype("float64"))
    np.testing.assert_array_equal(np.asarray(e), np.asarray(f))


@pytest.mark.parametrize("seed, d, num_gates", [(0, 3, 4), (7, 11, 64), (123, 1, 1)])
def test_sample_gates_same_draw_in_every_dtype(seed, d, num_gates):
    """Switching precision must not change the problem: the float64 gates are the float32 gates, cast."""
    g32 = np.asarray(patterns.sample_gates(jax.random.key(seed), d, num_gates, dtype=jnp.float32))
    g64 = np.asarray(patterns.sample_gates(jax.random.key(seed), d, num_gates, dtype=jnp.float64))
    np.testing.assert_array_equal(g64, g32.astype(np.float64))
    for low in (jnp.float16, jnp.bfloat16):
        g = patterns.sample_gates(jax.random.key(seed), d, num_gates, dtype=low)
        assert g.dtype == jnp.dtype(low)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(jnp.asarray(g32).astype(low)))


def test_sample_gates_standard_normal():
    g = np.asarray(patterns.sample_gates(jax.random.key(1), 4, 20_000, dtype=np.dtype("float64")))
    # 80k draws: the sample mean has sd 0.0035 and the sample variance sd 0.005.
    assert abs(g.mean()) < 0.02
    assert abs(g.var() - 1.0) < 0.03
    # Columns are independent draws: no two columns repeat.
    assert np.unique(g, axis=1).shape[1] == g.shape[1]


@pytest.mark.parametrize(
    "d, num_gates, dtype",
    [
        (0, 3, np.dtype("float32")),
        (-2, 3, np.dtype("float32")),
        (3, 0, np.dtype("float32")),
        (3, -1, np.dtype("float32")),
        (3, 3, np.dtype("int32")),
        (3, 3, np.dtype("bool")),
        (3, 3, jnp.int32),
    ],
)
def test_sample_gates_input_errors(d, num_gates, dtype):
    with pytest.raises(ValueError):
        patterns.sample_gates(jax.random.key(0), d, num_gates, dtype=dtype)


# ----------------------------------------------------------------------------------------- activation_masks


@pytest.mark.parametrize("n, d, p", [(1, 1, 1), (7, 3, 5), (20, 6, 9)])
def test_activation_masks_match_numpy(n, d, p):
    rng = np.random.default_rng(n * 100 + d * 10 + p)
    X = rng.standard_normal((n, d))
    G = rng.standard_normal((d, p))
    masks = patterns.activation_masks(jnp.asarray(X), jnp.asarray(G))
    assert masks.shape == (n, p)
    assert masks.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(masks), X @ G >= 0)


def test_activation_masks_float32():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3)).astype(np.float32)
    G = rng.standard_normal((3, 4)).astype(np.float32)
    masks = patterns.activation_masks(jnp.asarray(X), jnp.asarray(G))
    assert masks.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(masks), X.astype(np.float64) @ G.astype(np.float64) >= 0)


def test_activation_masks_zero_product_is_active():
    # Rows chosen so that x · g is exactly 0 (the products and sums are exact in binary floating point),
    # exactly 0 through a signed zero, and ±tiny on either side.
    X = jnp.asarray(
        [
            [1.0, -1.0],  # 1 - 1 = 0
            [0.5, 0.25],  # 0.5 * 1 + 0.25 * -2 = 0
            [-1.0, 0.0],  # against g2: -0.0 + 0 = 0
            [0.0, 0.0],  # the zero row: 0 against every gate
            [1.0, -1.0 - 2.0**-40],  # just below 0 against g1
            [1.0, -1.0 + 2.0**-40],  # just above 0 against g1
        ],
        dtype=jnp.float64,
    )
    G = jnp.asarray([[1.0, 1.0, 0.0], [1.0, -2.0, 1.0]], dtype=jnp.float64)  # columns g1, g_, g2
    products = np.asarray(X) @ np.asarray(G)
    masks = np.asarray(patterns.activation_masks(X, G))
    # The exactly-zero products are active (>= convention, not >).
    assert products[0, 0] == 0 and masks[0, 0]
    assert products[1, 1] == 0 and masks[1, 1]
    assert products[2, 2] == 0 and masks[2, 2]
    assert np.all(products[3] == 0) and np.all(masks[3])
    assert products[4, 0] < 0 and not masks[4, 0]
    assert products[5, 0] > 0 and masks[5, 0]
    np.testing.assert_array_equal(masks, products >= 0)


@pytest.mark.parametrize(
    "x_shape, g_shape",
    [
        ((5,), (5, 2)),  # X not 2-D
        ((4, 3), (2, 5)),  # gates' d differs from X's
        ((4, 3), (3,)),  # gates not 2-D
        ((4, 3), (3, 2, 1)),  # gates 3-D
    ],
)
def test_activation_masks_shape_errors(x_shape, g_shape):
    X = jnp.ones(x_shape, dtype=jnp.float64)
    G = jnp.ones(g_shape, dtype=jnp.float64)
    with pytest.raises(SHAPE_ERRORS):
        patterns.activation_masks(X, G)


# --------------------------------------------------------------------------------------- deduplicate_masks


def _first_occurrences(m: np.ndarray, drop_empty: bool) -> list[int]:
    """Reference: indices of the first occurrence of each distinct column, by a plain loop."""
    kept: list[int] = []
    for j in range(m.shape[1]):
        if drop_empty and not m[:, j].any():
            continue
        if not any(np.array_equal(m[:, j], m[:, k]) for k in kept):
            kept.append(j)
    return kept


def test_deduplicate_masks_example():
    a = [1, 0, 1, 0]
    b = [0, 1, 1, 0]
    c = [1, 1, 1, 1]
    z = [0, 0, 0, 0]
    # Columns: b a b z c a z b  → first occurrences b@0, a@1, z@3, c@4.
    cols = [b, a, b, z, c, a, z, b]
    m = np.array(cols, dtype=bool).T
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m))
    assert kept.dtype == jnp.int32
    assert unique.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(kept), [0, 1, 3, 4])
    np.testing.assert_array_equal(np.asarray(unique), np.array([b, a, z, c], dtype=bool).T)
    np.testing.assert_array_equal(m[:, np.asarray(kept)], np.asarray(unique))

    unique_ne, kept_ne = patterns.deduplicate_masks(jnp.asarray(m), drop_empty=True)
    np.testing.assert_array_equal(np.asarray(kept_ne), [0, 1, 4])
    np.testing.assert_array_equal(np.asarray(unique_ne), np.array([b, a, c], dtype=bool).T)
    assert np.asarray(unique_ne).any(axis=0).all()


def test_deduplicate_masks_keeps_distinct_columns_untouched():
    m = np.eye(5, dtype=bool)[:, ::-1]  # all distinct, in a non-sorted order
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m))
    np.testing.assert_array_equal(np.asarray(kept), np.arange(5))
    np.testing.assert_array_equal(np.asarray(unique), m)


def test_deduplicate_masks_long_columns():
    # n > 8 spans several packed bytes; columns differing only in the last row must stay distinct.
    m = np.zeros((19, 4), dtype=bool)
    m[:, 0] = True
    m[:, 1] = True
    m[-1, 1] = False
    m[:, 2] = m[:, 0]
    m[0, 3] = True
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m))
    np.testing.assert_array_equal(np.asarray(kept), [0, 1, 3])
    np.testing.assert_array_equal(np.asarray(unique), m[:, [0, 1, 3]])


def test_deduplicate_masks_all_empty_with_drop_empty():
    m = np.zeros((4, 3), dtype=bool)
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m), drop_empty=True)
    assert unique.shape == (4, 0)
    assert kept.shape == (0,)
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m))
    np.testing.assert_array_equal(np.asarray(kept), [0])


def test_deduplicate_masks_shape_error():
    with pytest.raises(SHAPE_ERRORS):
        patterns.deduplicate_masks(jnp.ones((4,), dtype=bool))


@settings(deadline=None, max_examples=40)
@given(
    # Few rows against up to 10 columns, so duplicates and empty columns are common.
    m=hnp.arrays(dtype=np.bool_, shape=st.tuples(st.integers(1, 6), st.integers(1, 10))),
    drop_empty=st.booleans(),
)
def test_deduplicate_masks_property(m, drop_empty):
    unique, kept = patterns.deduplicate_masks(jnp.asarray(m), drop_empty=drop_empty)
    unique, kept = np.asarray(unique), np.asarray(kept)
    n, p = m.shape
    assert unique.shape == (n, kept.shape[0])
    # masks[:, kept] == unique, kept strictly increasing (original order).
    np.testing.assert_array_equal(m[:, kept], unique)
    assert np.all(np.diff(kept) > 0)
    # Exactly the first occurrences.
    np.testing.assert_array_equal(kept, _first_occurrences(m, drop_empty))
    # Every original column (every non-empty one with drop_empty) equals some kept column.
    for j in range(p):
        if drop_empty and not m[:, j].any():
            continue
        assert any(np.array_equal(m[:, j], unique[:, k]) for k in range(unique.shape[1]))
    # Kept columns are pairwise distinct, and non-empty with drop_empty.
    assert np.unique(unique, axis=1).shape[1] == unique.shape[1]
    if drop_empty:
        assert unique.any(axis=0).all()


# ---------------------------------------------------------------------------------------------- enumerate_masks


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
