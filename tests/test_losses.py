"""Losses against numpy formulas, JAX autodiff, closed-form conjugates and a numeric sup (scipy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special

from convexnn import losses

from .reference import reference_conjugate, reference_value

NAMES = ["squared", "logistic", "cross_entropy"]


def make_targets(name: str, rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    """Valid (n, c) targets: real values; labels in {−1, +1}; one-hot rows."""
    if name == "squared":
        return rng.standard_normal((n, c))
    if name == "logistic":
        return rng.choice([-1.0, 1.0], size=(n, c))
    return np.eye(c)[rng.integers(0, c, size=n)]


def setup(name: str, seed: int, n: int = 5, c: int = 3):
    rng = np.random.default_rng(seed)
    loss = losses.get_loss(name)
    y = jnp.asarray(make_targets(name, rng, n, c))
    N = loss.normaliser(y)
    z0 = jnp.asarray(2.0 * rng.standard_normal((n, c)))
    z1 = jnp.asarray(2.0 * rng.standard_normal((n, c)))
    value = jax.jit(lambda z: loss.value(z, y, N))
    return loss, y, N, z0, z1, value


@pytest.mark.parametrize("name", NAMES)
def test_normaliser(name):
    y = jnp.asarray(make_targets(name, np.random.default_rng(0), 6, 4))
    expected = 6 if name == "cross_entropy" else 24
    assert losses.get_loss(name).normaliser(y) == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_value_matches_formula(name, seed):
    loss, y, N, z0, z1, value = setup(name, seed)
    for z in (z0, z1, 30.0 * z1, jnp.zeros_like(z0)):
        np.testing.assert_allclose(float(value(z)), reference_value(name, np.asarray(z), np.asarray(y)), rtol=1e-13)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_grad_is_autodiff(name, seed):
    loss, y, N, z0, z1, value = setup(name, seed)
    for z in (z0, z1, jnp.zeros_like(z0)):
        np.testing.assert_allclose(
            np.asarray(loss.grad(z, y, N)), np.asarray(jax.grad(value)(z)), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize("name", ["squared", "logistic"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("t", [1e-3, 1.0, 1e3, 1e6])
def test_prox_is_optimal(name, seed, t):
    """prox_{tL}(w) = z  ⇔  (z − w)/t + ∇L(z) = 0, and no nearby point has a lower prox objective."""
    loss, y, N, z0, z1, value = setup(name, seed)
    for w in (z0, 30.0 * z1):
        z = jax.jit(loss.prox)(w, y, N, t)
        stationarity = (z - w) / t + loss.grad(z, y, N)
        scale = (np.max(np.abs(np.asarray(w))) + np.max(np.abs(np.asarray(z)))) / t + 1 / N  # the terms' size
        assert np.max(np.abs(np.asarray(stationarity))) <= 64 * np.finfo(np.float64).eps * scale

        def objective(v, w=w):
            return float(value(v)) + float(jnp.sum(jnp.square(v - w))) / (2 * t)

        rng = np.random.default_rng(seed)
        for _ in range(5):
            nudge = jnp.asarray(1e-4 * rng.standard_normal(z.shape)) * (1 + jnp.abs(z))
            assert objective(z + nudge) >= objective(z) - 1e-12 * abs(objective(z))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_hvp_is_jvp_of_grad(name, seed):
    loss, y, N, z0, z1, value = setup(name, seed)
    dz = z1 - 0.5 * z0
    _, expected = jax.jvp(jax.grad(value), (z0,), (dz,))
    np.testing.assert_allclose(np.asarray(loss.hvp(z0, dz, y, N)), np.asarray(expected), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n, c", [(3, 1), (4, 3)])
def test_hessian_diagonal(name, n, c):
    if name == "cross_entropy" and c == 1:
        c = 2  # one class has a zero Hessian; use the smallest non-trivial case instead
    loss, y, N, z0, _, value = setup(name, 2, n, c)
    H = np.asarray(jax.jit(jax.hessian(value))(z0))  # (n, c, n, c)
    diag = np.einsum("ijij->ij", H)
    h = np.asarray(loss.hessian_diagonal(z0, y, N))
    np.testing.assert_allclose(h, diag, rtol=1e-12, atol=1e-15)
    assert np.all(h >= 0)
    if name != "cross_entropy":
        # Entry-wise losses: the diagonal is the whole Hessian.
        np.testing.assert_allclose(H.reshape(n * c, n * c), np.diag(diag.reshape(-1)), atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bregman(name, seed):
    loss, y, N, z0, z1, value = setup(name, seed)
    for a, b in ((z1, z0), (z0, z1), (z0 + 1e-3 * z1, z0), (z0, z0)):
        expected = float(value(a) - value(b) - jnp.vdot(jax.grad(value)(b), a - b))
        got = float(loss.bregman(a, b, y, N))
        assert got >= 0
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
    assert float(loss.bregman(z0, z0, y, N)) == pytest.approx(0.0, abs=1e-15)


def dual_points(name: str, loss, y, N, rng: np.random.Generator) -> list[jax.Array]:
    """θ in the conjugate's domain: any θ (squared), s ∇L(z') with s ∈ (0, 1] (logistic, cross-entropy)."""
    n, c = y.shape
    if name == "squared":
        return [jnp.asarray(rng.standard_normal((n, c)) / N) for _ in range(3)]
    points = []
    for s in (1.0, 0.5, 1e-3):
        zp = jnp.asarray(2.0 * rng.standard_normal((n, c)))
        points.append(s * loss.grad(zp, y, N))
    return points


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_conjugate_and_fenchel_young(name, seed):
    loss, y, N, z0, z1, value = setup(name, seed)
    rng = np.random.default_rng(100 + seed)
    yn = np.asarray(y)
    for theta in dual_points(name, loss, y, N, rng):
        conj = float(loss.conjugate(theta, y, N))
        np.testing.assert_allclose(conj, reference_conjugate(name, np.asarray(theta), yn), rtol=1e-12, atol=1e-14)
        for z in (z0, z1):
            expected = float(value(z)) + reference_conjugate(name, np.asarray(theta), yn) - float(jnp.vdot(theta, z))
            got = float(loss.fenchel_young_gap(z, theta, y, N))
            assert got >= 0
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)
    # Fenchel–Young equality at θ = ∇L(z): the gap vanishes and L(z) + L*(θ) = ⟨θ, z⟩.
    for z in (z0, z1):
        theta = jax.grad(value)(z)
        assert float(loss.fenchel_young_gap(z, theta, y, N)) == pytest.approx(0.0, abs=1e-14)
        np.testing.assert_allclose(
            float(value(z)) + float(loss.conjugate(theta, y, N)), float(jnp.vdot(theta, z)), rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("name", ["logistic", "cross_entropy"])
def test_conjugate_infinite_outside_domain(name):
    loss, y, N, z0, _, _ = setup(name, 3)
    if name == "logistic":
        # p = −Nθy must lie in [0, 1].
        outside = [
            -1.5 * y / N,  # p = 1.5
            0.5 * y / N,  # p = −0.5
            -y / N * jnp.where(jnp.arange(3) == 0, 1.01, 0.5)[None, :],  # p = 1.01 in one column only
            -(1 + 1e-9) * y / N,  # p just above 1
            1e-9 * y / N,  # p just below 0
        ]
        inside_edges = [-y / N, jnp.zeros_like(y)]  # p = 1 and p = 0
    else:
        # q = Nθ + y must be a probability row.
        e0 = jnp.zeros_like(y).at[:, 0].set(1.0)
        outside = [
            1.5 * (e0 - y) / N,  # rows sum to 1 but have a negative entry wherever y ≠ e0
            loss.grad(z0, y, N) + 0.01 / N,  # non-negative but rows sum to 1 + 0.03
            -y / N,  # q = 0: rows sum to 0
            (1 + 1e-9) * (e0 - y) / N,  # q = (1 + 1e-9) e0 − 1e-9 y: sums to 1, just negative
            (e0 - y) / N + 1e-9 / N,  # q = e0 + 1e-9: non-negative, sums to 1 + 3e-9
        ]
        inside_edges = [(e0 - y) / N, jnp.zeros_like(y)]  # q one-hot on another vertex, and q = y
    if name == "cross_entropy":
        assert bool(jnp.any(jnp.argmax(y, axis=1) != 0))  # the first point really leaves the simplex
    for theta in outside:
        assert float(loss.conjugate(theta, y, N)) == np.inf
    for theta in inside_edges:
        conj = float(loss.conjugate(theta, y, N))
        assert np.isfinite(conj)
        np.testing.assert_allclose(conj, reference_conjugate(name, np.asarray(theta), np.asarray(y)), atol=1e-15)


def test_squared_conjugate_finite_everywhere():
    loss, y, N, *_ = setup("squared", 4)
    assert np.isfinite(float(loss.conjugate(1e3 * jnp.ones_like(y), y, N)))


def _numeric_sup(name: str, theta: np.ndarray, y: np.ndarray) -> float:
    """sup_z ⟨θ, z⟩ − L(z) by scipy for one row, with L from `reference_value` (not the code under test)."""

    def neg(z):
        z = np.asarray(z, dtype=np.float64).reshape(y.shape)
        return -(np.sum(theta * z) - reference_value(name, z, y))

    if y.size == 1:
        res = scipy.optimize.minimize_scalar(lambda s: neg(np.array([[s]])), bracket=(-5.0, 5.0), tol=1e-12)
        return -float(res.fun)
    assert name == "cross_entropy" and y.shape[0] == 1

    def neg_grad(z):  # −(θ − (softmax(z) − y)) for the single row, N = 1
        return -(theta - (scipy.special.softmax(z.reshape(y.shape), axis=1) - y)).reshape(-1)

    res = scipy.optimize.minimize(neg, np.zeros(y.size), jac=neg_grad, method="BFGS", options={"gtol": 1e-12})
    return -float(res.fun)


@pytest.mark.parametrize(
    "name, y, theta",
    [
        ("squared", [[0.7]], [[0.3]]),
        ("squared", [[-1.2]], [[-2.5]]),
        ("logistic", [[1.0]], [[-0.3]]),  # p = 0.3
        ("logistic", [[-1.0]], [[0.85]]),  # p = 0.85
        ("cross_entropy", [[0.0, 1.0, 0.0]], [[0.2, -0.5, 0.3]]),  # q = (0.2, 0.5, 0.3)
        ("cross_entropy", [[1.0, 0.0]], [[-0.9, 0.9]]),  # q = (0.1, 0.9)
    ],
)
def test_conjugate_matches_numeric_sup(name, y, theta):
    loss = losses.get_loss(name)
    y, theta = np.asarray(y, dtype=np.float64), np.asarray(theta, dtype=np.float64)
    N = loss.normaliser(jnp.asarray(y))
    assert N == 1
    expected = _numeric_sup(name, theta, y)
    got = float(loss.conjugate(jnp.asarray(theta), jnp.asarray(y), N))
    assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_float32_in_float32_out(name):
    rng = np.random.default_rng(5)
    loss = losses.get_loss(name)
    y64 = make_targets(name, rng, 4, 3)
    z64 = rng.standard_normal((4, 3))

    def evaluate(dtype):
        y, z = jnp.asarray(y64, dtype=dtype), jnp.asarray(z64, dtype=dtype)
        N = loss.normaliser(y)
        theta = 0.5 * loss.grad(z, y, N)
        return [
            loss.value(z, y, N),
            loss.grad(z, y, N),
            loss.conjugate(theta, y, N),
            loss.fenchel_young_gap(z, theta, y, N),
            loss.bregman(z, 2 * z, y, N),
            loss.hvp(z, z, y, N),
            loss.hessian_diagonal(z, y, N),
        ]

    for out32, out64 in zip(evaluate(jnp.float32), evaluate(jnp.float64), strict=True):
        assert out32.dtype == jnp.float32
        # Finite (θ stays in the conjugate's domain in float32 too) and close to the float64 result.
        np.testing.assert_allclose(np.asarray(out32), np.asarray(out64), rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- prepare_targets


@pytest.mark.parametrize("y", [[0.0, 1.0, -1.0], [2.0, -1.0], [[1.0, 0.5]], [-1, 1, 0]])
def test_logistic_labels_outside_pm1_raise(y):
    with pytest.raises(ValueError):
        losses.Logistic().prepare_targets(np.asarray(y))


def test_logistic_prepare_targets_valid():
    out = losses.Logistic().prepare_targets(np.asarray([-1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(out, [[-1.0], [1.0], [1.0]])
    out = losses.Logistic().prepare_targets(np.asarray([[-1, 1], [1, 1]]))
    np.testing.assert_array_equal(out, [[-1, 1], [1, 1]])


def test_squared_prepare_targets_shapes():
    np.testing.assert_array_equal(losses.Squared().prepare_targets(np.asarray([0.5, -2.0])), [[0.5], [-2.0]])
    y = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(losses.Squared().prepare_targets(y), y)


def test_cross_entropy_integer_labels_become_one_hot():
    ce = losses.CrossEntropy()
    labels = np.asarray([0, 2, 1, 2, 0])
    out = ce.prepare_targets(labels)
    assert out.shape == (5, 3)  # c = max + 1
    expected = np.zeros((5, 3))
    expected[np.arange(5), labels] = 1.0
    np.testing.assert_array_equal(out, expected)
    # (n, 1) integer labels too, an explicit c, and whole-number floats.
    np.testing.assert_array_equal(ce.prepare_targets(labels[:, None]), expected)
    wide = ce.prepare_targets(labels, c=5)
    assert wide.shape == (5, 5)
    np.testing.assert_array_equal(wide[:, :3], expected)
    assert np.all(wide[:, 3:] == 0)
    np.testing.assert_array_equal(ce.prepare_targets(labels.astype(np.float64)), expected)
    # Valid one-hot rows pass through unchanged.
    np.testing.assert_array_equal(ce.prepare_targets(expected), expected)


@pytest.mark.parametrize(
    "y",
    [
        [[0.5, 0.6]],  # row sums to 1.1
        [[1.5, -0.5]],  # sums to 1 but has a negative entry
        [[0.0, 0.0, 0.0]],  # sums to 0
        [[0.2, 0.3], [1.0, 0.0]],  # one bad row among good ones
    ],
)
def test_cross_entropy_non_simplex_rows_raise(y):
    with pytest.raises(ValueError):
        losses.CrossEntropy().prepare_targets(np.asarray(y))


@pytest.mark.parametrize("y", [[0, -1, 2], [0.5, 1.0], np.zeros((2, 2, 2))])
def test_cross_entropy_bad_labels_raise(y):
    with pytest.raises(ValueError):
        losses.CrossEntropy().prepare_targets(np.asarray(y))


def test_cross_entropy_label_beyond_c_raises():
    with pytest.raises(ValueError):
        losses.CrossEntropy().prepare_targets(np.asarray([0, 3]), c=3)


def test_get_loss():
    assert isinstance(losses.get_loss("squared"), losses.Squared)
    assert isinstance(losses.get_loss("logistic"), losses.Logistic)
    assert isinstance(losses.get_loss("cross_entropy"), losses.CrossEntropy)
    inst = losses.Logistic()
    assert losses.get_loss(inst) is inst
    with pytest.raises(ValueError):
        losses.get_loss("nope")


@pytest.mark.parametrize("name", ["logistic", "cross_entropy"])
@pytest.mark.parametrize("size", [1e-2, 1e-4, 1e-6])
def test_float32_bregman_keeps_relative_accuracy_for_short_steps(name, size):
    """The line search compares L's Bregman divergence of a step with ‖step‖²/2η: for short steps it must stay
    accurate relative to itself in float32 (a difference of log-probabilities has error ~eps·|log p| instead,
    and float32 line searches stalled on it). Reference: the same divergence in float64 from float64 values."""
    rng = np.random.default_rng(7)
    n, c = 64, 10 if name == "cross_entropy" else 1
    loss = losses.get_loss(name)
    y64 = np.eye(c)[rng.integers(0, c, n)] if name == "cross_entropy" else rng.choice([-1.0, 1.0], (n, 1))
    z0 = 4 * rng.standard_normal((n, c))  # confident predictions: |log p| up to ~10
    z1 = z0 + size * rng.standard_normal((n, c))
    z0_32, z1_32, y32 = (jnp.asarray(a, jnp.float32) for a in (z0, z1, y64))
    # The float64 reference sees exactly the float32 inputs, so only the formula's rounding differs.
    ref = float(loss.bregman(*(jnp.asarray(a, jnp.float64) for a in (z1_32, z0_32, y32)), n * c if c == 1 else n))
    got = float(loss.bregman(z1_32, z0_32, y32, n * c if c == 1 else n))
    assert ref > 0
    np.testing.assert_allclose(got, ref, rtol=1e-3)


@pytest.mark.parametrize("name", ["logistic", "cross_entropy"])
def test_bregman_of_long_steps_is_finite(name):
    loss, y, N, z0, z1, value = setup(name, 0)
    far = z0 + 300.0 * (z1 - z0)  # exp of the step overflows even float64
    expected = float(value(far) - value(z0) - jnp.vdot(jax.grad(value)(z0), far - z0))
    np.testing.assert_allclose(float(loss.bregman(far, z0, y, N)), expected, rtol=1e-9)
