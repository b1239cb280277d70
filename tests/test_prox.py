"""Group norms and the group prox against closed forms, the Moreau identity and Clarabel."""

from __future__ import annotations

import cvxpy as cp
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convexnn import prox

# Entries are 0 or of magnitude ≥ 1e-100: group_norms is sqrt(Σ w²), whose square underflows for groups
# below ~1e-154 (and overflows above ~1e154); that range is no part of what these tests ask of the prox.
_MAGNITUDES = st.floats(1e-100, 10.0, width=64)
FLOATS = st.one_of(st.just(0.0), _MAGNITUDES, _MAGNITUDES.map(lambda v: -v))
THRESHOLDS = st.one_of(st.just(0.0), st.floats(1e-100, 15.0, width=64))


@st.composite
def weights(draw):
    """W of shape (P, d) or (P, d, c), with the first block set exactly to zero half of the time."""
    P = draw(st.integers(1, 5))
    d = draw(st.integers(1, 4))
    c = draw(st.one_of(st.none(), st.integers(1, 3)))
    shape = (P, d) if c is None else (P, d, c)
    W = draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    if draw(st.booleans()):
        W[0] = 0.0
    return W


def groups(W: np.ndarray) -> list[np.ndarray]:
    """The groups W[i, :] or W[i, :, k] as a list of d-vectors."""
    if W.ndim == 2:
        return [W[i] for i in range(W.shape[0])]
    return [W[i, :, k] for i in range(W.shape[0]) for k in range(W.shape[2])]


def norm(x: np.ndarray) -> float:
    """‖x‖₂ without the underflow of sqrt(Σ x²) (np.linalg.norm loses digits below ~1e-154)."""
    m = float(np.max(np.abs(x), initial=0.0))
    return 0.0 if m == 0 else m * float(np.sqrt(np.sum((x / m) ** 2)))


def prox_reference(x: np.ndarray, t: float) -> np.ndarray:
    """argmin_u ½‖u − x‖² + t‖u‖ derived here: u = a x/‖x‖ with a = argmin_{a≥0} ½(a − ‖x‖)² + t a."""
    r = norm(x)
    a = max(r - t, 0.0)
    return np.zeros_like(x) if r == 0 else (a / r) * x


@jax.jit
def _prox_and_projection(W, t):
    """Both maps in one compilation per shape (t traced, so new thresholds do not recompile)."""
    return prox.group_soft_threshold(W, t), prox.project_group_balls(W, t)


@settings(deadline=None, max_examples=50)
@given(W=weights(), t=THRESHOLDS)
def test_group_prox_properties(W, t):
    out, proj = (np.asarray(a) for a in _prox_and_projection(jnp.asarray(W), jnp.asarray(t)))
    assert out.shape == W.shape and proj.shape == W.shape
    for x, u, v in zip(groups(W), groups(out), groups(proj), strict=True):
        # Moreau: prox_t(x) + Π_{‖·‖≤t}(x) = x, group by group.
        np.testing.assert_allclose(u + v, x, rtol=1e-12, atol=1e-12)
        # The projection lands in the ball, and is x itself inside it.
        assert norm(v) <= t * (1 + 1e-12)
        if norm(x) <= t * (1 - 1e-12):
            # Zero (exactly) for groups with norm ≤ t, and the projection keeps them.
            assert np.all(u == 0)
            np.testing.assert_array_equal(v, x)
        # The closed form derived above.
        np.testing.assert_allclose(u, prox_reference(x, t), rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=40)
@given(
    data=st.data(),
    shape=st.one_of(
        st.tuples(st.integers(1, 4), st.integers(1, 4)),
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3)),
    ),
    t=THRESHOLDS,
)
def test_group_prox_nonexpansive(data, shape, t):
    a = data.draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    b = data.draw(hnp.arrays(np.float64, shape, elements=FLOATS))
    pa = np.asarray(_prox_and_projection(jnp.asarray(a), jnp.asarray(t))[0])
    pb = np.asarray(_prox_and_projection(jnp.asarray(b), jnp.asarray(t))[0])
    # Per group (the prox is separable), hence also for the whole array.
    for ga, gb, ua, ub in zip(groups(a), groups(b), groups(pa), groups(pb), strict=True):
        assert norm(ua - ub) <= norm(ga - gb) * (1 + 1e-12) + 1e-12
    assert norm(pa - pb) <= norm(a - b) * (1 + 1e-12) + 1e-12


@pytest.mark.parametrize(
    "x, t",
    [
        ([3.0, -4.0], 1.0),  # shrink a 3-4-5 vector
        ([0.3, 0.1, -0.2], 0.5),  # inside the ball: zero
        ([1.0, 2.0, -2.0], 2.9999),  # just outside the ball
        ([-0.7], 0.2),  # d = 1: scalar soft-thresholding
        ([2.0, -1.0, 0.5, 3.0], 0.0),  # t = 0: identity
    ],
)
def test_group_prox_matches_clarabel(x, t):
    x = np.asarray(x, dtype=np.float64)
    u = cp.Variable(x.shape[0])
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(u - x) + t * cp.norm(u, 2)))
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    W = jnp.asarray(x[None, :])
    out = np.asarray(prox.group_soft_threshold(W, t))[0]
    np.testing.assert_allclose(out, u.value, atol=1e-6)
    # The prox's objective value is no larger than Clarabel's (it is the exact minimiser).
    f = lambda v: 0.5 * np.sum((v - x) ** 2) + t * np.linalg.norm(v)  # noqa: E731
    assert f(out) <= problem.value + 1e-9


def test_group_prox_known_values():
    W = jnp.asarray([[3.0, -4.0], [0.0, 0.0], [0.6, 0.8]], dtype=jnp.float64)
    out = np.asarray(prox.group_soft_threshold(W, 1.0))
    np.testing.assert_allclose(out, [[2.4, -3.2], [0.0, 0.0], [0.0, 0.0]], rtol=1e-15, atol=1e-15)
    proj = np.asarray(prox.project_group_balls(W, 1.0))
    np.testing.assert_allclose(proj, [[0.6, -0.8], [0.0, 0.0], [0.6, 0.8]], rtol=1e-15, atol=1e-15)
    # A jnp scalar threshold gives the same result as a Python float.
    np.testing.assert_array_equal(np.asarray(prox.group_soft_threshold(W, jnp.asarray(1.0))), out)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 2), (1, 1), (2, 5, 1)])
def test_group_norms_and_l1(shape):
    rng = np.random.default_rng(sum(shape))
    W = rng.standard_normal(shape)
    norms = np.asarray(prox.group_norms(jnp.asarray(W)))
    expected = np.sqrt(np.sum(W**2, axis=1))  # (P,) or (P, c)
    assert norms.shape == expected.shape
    np.testing.assert_allclose(norms, expected, rtol=1e-14)
    for i, g in enumerate(groups(W)):
        np.testing.assert_allclose(norms.reshape(-1)[i], norm(g), rtol=1e-14)
    l1 = prox.group_l1(jnp.asarray(W))
    assert l1.shape == ()
    np.testing.assert_allclose(float(l1), sum(norm(g) for g in groups(W)), rtol=1e-14)


@pytest.mark.parametrize("shape", [(3, 2), (3, 2, 2)])
def test_float32_in_float32_out(shape):
    W = jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype=jnp.float32)
    assert prox.group_norms(W).dtype == jnp.float32
    assert prox.group_l1(W).dtype == jnp.float32
    assert prox.group_soft_threshold(W, 0.5).dtype == jnp.float32
    assert prox.project_group_balls(W, 0.5).dtype == jnp.float32
    assert prox.group_soft_threshold(W, jnp.asarray(0.5, dtype=jnp.float32)).dtype == jnp.float32
