"""The nuclear-norm program (penalty="nuclear"): one hidden layer shared by every output.

    min_U L(Σ_i D_i X U_i, Y) + λ Σ_i ‖U_i‖_*

checked against an explicit SVD (the prox), cvxpy + Clarabel's normNuc (the optimum, float64), the network
read off the solution (its non-convex objective), λ_max (zeros above it) and the group program (c = 1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convexnn as cn
from convexnn import losses, prox

from .helpers import Problem, _masks, _standardize, _with_bias, digits, teacher
from .reference import clarabel_nuclear


def linnerud() -> Problem:
    """scikit-learn's linnerud: 20 rows, 3 exercise features (standardized, with a bias), 3 standardized targets."""
    from sklearn.datasets import load_linnerud

    X, Y = load_linnerud(return_X_y=True)
    X = _with_bias(_standardize(X))
    return Problem("linnerud", jnp.asarray(X), jnp.asarray(_standardize(Y)), _masks(X, 12, 0, jnp.float64), "squared")


def small_digits(n: int = 150, P: int = 12) -> Problem:
    """digits pooled 2×2 to 4×4 pixels (16 features and a bias: small enough for Clarabel's SDP), one-hot."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    pooled = X[:n].reshape(n, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(n, 16) / 16.0
    X = _with_bias(pooled)
    Y = np.eye(10)[y[:n]]
    return Problem("digits-onehot", jnp.asarray(X), jnp.asarray(Y), _masks(X, P, 0, jnp.float64), "squared")


def digits_labels() -> Problem:
    """The small digits with integer labels (cross-entropy)."""
    p = small_digits()
    return p._replace(name="digits-labels", y=jnp.argmax(p.y, axis=1), loss="cross_entropy")


def teacher_classes() -> Problem:
    """The 3-output planted teacher, its argmax as 3 classes (cross-entropy)."""
    p = teacher(n=120, d=6, P=16, outputs=3)
    return p._replace(name="teacher-3-classes", y=jnp.argmax(p.y, axis=1), loss="cross_entropy")


PROBLEMS = {
    "digits-onehot": small_digits,
    "linnerud": linnerud,
    "teacher-3": lambda: teacher(n=120, d=6, P=16, outputs=3),
    "digits-labels": digits_labels,
    "teacher-3-classes": teacher_classes,
}


@functools.cache
def problem(name: str) -> Problem:
    return PROBLEMS[name]()


def targets(p: Problem) -> np.ndarray:
    return np.asarray(losses.get_loss(p.loss).prepare_targets(np.asarray(p.y)))


# -- the pieces ------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    P=st.integers(1, 4),
    d=st.integers(1, 7),
    c=st.integers(1, 7),
    seed=st.integers(0, 2**31 - 1),
    t=st.floats(0.0, 3.0),
)
def test_prox_and_norms_match_an_explicit_svd(P, d, c, seed, t):
    W = np.random.default_rng(seed).standard_normal((P, d, c))
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    expected = np.einsum("pdr,pr,prc->pdc", U, np.maximum(S - t, 0), Vt)
    np.testing.assert_allclose(prox.singular_value_threshold(jnp.asarray(W), t), expected, atol=1e-12)
    np.testing.assert_allclose(prox.singular_values(jnp.asarray(W)), S, atol=1e-12)
    np.testing.assert_allclose(prox.spectral_norms(jnp.asarray(W)), S[:, 0], atol=1e-12)
    nuclear = prox.Nuclear()
    np.testing.assert_allclose(nuclear.value(jnp.asarray(W)), S.sum(), rtol=1e-12)
    F, G, sigma = prox.balanced_factors(jnp.asarray(W))
    np.testing.assert_allclose(jnp.einsum("pdr,pcr->pdc", F, G), W, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(F * F) + jnp.sum(G * G), 2 * S.sum(), rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.01, 2.0))
def test_svt_is_the_prox(seed, t):
    """prox_{t‖·‖_*}(W) minimises t‖Z‖_* + ½‖Z − W‖²: no random Z does better."""
    rng = np.random.default_rng(seed)
    W = jnp.asarray(rng.standard_normal((1, 5, 3)))
    Z = prox.singular_value_threshold(W, t)

    def h(Z):
        return t * prox.Nuclear().value(Z) + 0.5 * jnp.sum((Z - W) ** 2)

    best = h(Z)
    for _ in range(20):
        trial = Z + 0.1 * jnp.asarray(rng.standard_normal(W.shape))
        assert h(trial) >= best - 1e-12


def test_penalty_is_checked_before_any_work():
    p = teacher(n=30, d=4, P=5, outputs=2)
    for call in (
        lambda: cn.solve_gated(p.X, p.y, p.masks, 0.1, penalty="trace"),
        lambda: cn.solve_relu(p.X, p.y, p.masks, 0.1, penalty="trace"),
        lambda: cn.solve_path(p.X, p.y, p.masks, jnp.array([0.1]), penalty="trace"),
        lambda: cn.lam_max(p.X, p.y, p.masks, penalty="trace"),
    ):
        with pytest.raises(ValueError, match="penalty"):
            call()


# -- the optimum -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROBLEMS))
@pytest.mark.parametrize("fraction", [0.03, 0.3])
def test_gated_nuclear_matches_clarabel(name, fraction):
    p = problem(name)
    lam = fraction * float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, penalty="nuclear", tol=1e-10)
    p_star = clarabel_nuclear(p.X, targets(p), p.masks, lam, p.loss)
    assert int(sol.status) == cn.Status.CONVERGED
    assert sol.penalty == "nuclear"
    obj, gap = float(sol.objective), float(sol.gap)
    assert abs(obj - p_star) <= 1e-6 * abs(p_star)
    assert gap >= obj - p_star - 1e-9 * abs(p_star)  # the gap bounds the distance to the optimum
    # The nuclear program shares neurons: its optimum is below the group program's at the same λ only if
    # its penalty is smaller; what always holds is that both sandwich by ‖U‖_* ≤ Σ_k ‖u_k‖.
    group = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-10)
    assert obj <= float(group.objective) + 1e-9


@pytest.mark.parametrize("name", ["linnerud", "teacher-3", "teacher-3-classes"])
def test_relu_relaxation_matches_clarabel_and_brackets_the_network(name):
    p = problem(name)
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    # tol 1e-7: at 1e-8 the nuclear AL stalls on teacher-3 with gap 4.5e-7 (≈ 1e-7 × |objective|), most of it
    # the price of its remaining violation, ⟨Γ, (−R)₊⟩, which its gap includes (`relu_duality_gap`). The budget is
    # above the default 20 000: teacher-3 certified after 31 208 iterations on an AVX-512 CPU (within 20 000 on
    # the machines before it): this test checks the answer, not the iteration count.
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, penalty="nuclear", tol=1e-7, max_iters=50_000)
    p_star = clarabel_nuclear(p.X, targets(p), p.masks, lam, p.loss, model="relu")
    assert int(sol.status) == cn.Status.CONVERGED
    assert float(sol.violation) <= 1e-6
    assert abs(float(sol.objective) - p_star) <= 1e-6 * abs(p_star)
    interval = cn.relu_interval(sol, p.X, p.y, p.loss)
    net = interval.network
    assert net.gates is None  # a plain ReLU network
    assert float(interval.lower) <= p_star + 1e-9 * abs(p_star)
    # The network is a true ReLU network; its neurons lie in their cones up to the solution's violation
    # (≤ 1e-6), so its patterns may differ from the sampled ones by that much, and so may its objective.
    assert float(interval.upper) >= p_star - 1e-6 * abs(p_star)
    assert float(interval.upper) >= float(interval.lower) - 1e-6 * abs(p_star)
    np.testing.assert_allclose(interval.upper, cn.network_objective(net, p.X, p.y, lam, p.loss), rtol=1e-12)
    # The columns are always a ReLU network; the SVD factors only where they lie in their cones.
    _, d, c = sol.weights[0].shape
    assert net.width == 2 * p.masks.shape[1] * c


@pytest.mark.parametrize("name", ["digits-onehot", "teacher-3", "digits-labels"])
def test_shared_network_attains_the_convex_optimum(name):
    p = problem(name)
    P, d = p.masks.shape[1], p.X.shape[1]
    gates = np.random.default_rng(1000).standard_normal((d, P))  # the gates `_masks` drew
    assert np.array_equal(np.asarray(p.X) @ gates >= 0, np.asarray(p.masks))
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, penalty="nuclear", tol=1e-10)
    net = cn.to_network(sol, gates)
    c = sol.weights.shape[2]
    assert net.W1.shape == (d, P * min(d, c)) and net.w2.shape == (P * min(d, c), c)
    assert net.gates.shape == net.W1.shape
    np.testing.assert_allclose(cn.network_objective(net, p.X, p.y, lam, p.loss), sol.objective, rtol=1e-10)
    # Neurons = the blocks' ranks.
    ranks = prox.numerical_rank(prox.singular_values(sol.weights), sol.weights.shape)
    assert net.prune().width == int(jnp.sum(ranks)) < P * c


@pytest.mark.parametrize("name", ["digits-onehot", "digits-labels", "teacher-3"])
def test_lam_max_gives_zeros_and_just_below_does_not(name):
    p = problem(name)
    top = float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    above = cn.solve_gated(p.X, p.y, p.masks, top * (1 + 1e-9), loss=p.loss, penalty="nuclear")
    assert int(above.status) == cn.Status.CONVERGED and not np.any(np.asarray(above.weights))
    below = cn.solve_gated(p.X, p.y, p.masks, 0.9 * top, loss=p.loss, penalty="nuclear", tol=1e-9)
    assert np.any(np.asarray(below.weights))
    # The relaxation's threshold is bounded above by the gated one, and zero solves the relaxation there
    # (Clarabel's optimum is the loss at zero).
    relu_top = float(cn.lam_max(p.X, p.y, p.masks, p.loss, model="relu", penalty="nuclear"))
    assert relu_top <= top * (1 + 1e-9)
    if name == "teacher-3":
        p_star = clarabel_nuclear(p.X, targets(p), p.masks, relu_top * (1 + 1e-6), p.loss, model="relu")
        at_zero = float(losses.get_loss(p.loss).value(jnp.zeros(p.y.shape), p.y, p.y.size))
        assert abs(p_star - at_zero) <= 1e-7 * at_zero


def test_one_output_is_the_group_program():
    p = teacher(n=100, d=5, P=10)
    lam = 0.05 * float(cn.lam_max(p.X, p.y, p.masks))
    top = float(cn.lam_max(p.X, p.y, p.masks))
    assert float(cn.lam_max(p.X, p.y, p.masks, penalty="nuclear")) == pytest.approx(top)
    a = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10)
    b = cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-10)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-10)


# -- transformations and precision ---------------------------------------------------------------------


def test_path_vmap_and_warm_agree_and_match_single_solves():
    p = problem("teacher-3")
    top = cn.lam_max(p.X, p.y, p.masks, penalty="nuclear")
    lams = cn.lam_grid(top, 4, 1e-2)
    warm = cn.solve_path(p.X, p.y, p.masks, lams, penalty="nuclear", tol=1e-9)
    vmap = cn.solve_path(p.X, p.y, p.masks, lams, penalty="nuclear", tol=1e-9, mode="vmap")
    assert np.all(np.asarray(warm.status) == cn.Status.CONVERGED)
    assert np.all(np.asarray(vmap.status) == cn.Status.CONVERGED)
    np.testing.assert_allclose(warm.objective, vmap.objective, rtol=1e-8)
    single = cn.solve_gated(p.X, p.y, p.masks, lams[2], penalty="nuclear", tol=1e-9)
    np.testing.assert_allclose(warm.objective[2], single.objective, rtol=1e-8)
    assert warm[2].penalty == "nuclear"


def test_jit_of_the_solver_equals_eager():
    p = problem("teacher-3")
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, penalty="nuclear"))
    eager = cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-9)
    jitted = jax.jit(lambda lam: cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-9))(lam)
    np.testing.assert_allclose(jitted.weights, eager.weights, atol=1e-10)


def test_row_sharded_solve_equals_one_device():
    p = problem("teacher-3")
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, penalty="nuclear"))
    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    data = cn.shard_rows(mesh, p.X, p.y, p.masks)
    np.testing.assert_allclose(cn.lam_max(data, penalty="nuclear"), lam / 0.1, rtol=1e-10)
    sharded = cn.solve_gated(data, lam=lam, penalty="nuclear", tol=1e-9)
    single = cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-9)
    assert int(sharded.status) == cn.Status.CONVERGED
    np.testing.assert_allclose(sharded.objective, single.objective, rtol=1e-8)


def test_float32_certifies_and_polish_finishes_faster():
    p = digits(n=300, P=16, dtype=jnp.float32)
    lam = 0.02 * float(cn.lam_max(p.X, p.y, p.masks, penalty="nuclear"))
    polished = cn.solve_gated(p.X, p.y, p.masks, lam, penalty="nuclear", tol=1e-4)
    assert polished.weights.dtype == jnp.float32
    assert int(polished.status) == cn.Status.CONVERGED
    p64 = digits(n=300, P=16)
    plain = cn.solve_gated(p64.X, p64.y, p64.masks, lam, penalty="nuclear", tol=1e-9, polish=False, max_iters=50_000)
    newton = cn.solve_gated(p64.X, p64.y, p64.masks, lam, penalty="nuclear", tol=1e-9)
    assert int(newton.status) == cn.Status.CONVERGED
    assert int(newton.iterations) < int(plain.iterations)


def test_estimators_share_neurons_for_several_classes():
    from sklearn.datasets import load_digits

    from convexnn.estimators import ConvexReLUClassifier

    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    nuclear = ConvexReLUClassifier(n_gates=32, random_state=0).fit(X, y)
    group = ConvexReLUClassifier(n_gates=32, random_state=0, penalty="group").fit(X, y)
    assert nuclear.status_ == "converged" and group.status_ == "converged"
    assert nuclear.n_neurons_ < group.n_neurons_
    assert nuclear.score(X, y) > 0.9
    with pytest.raises(ValueError, match="penalty"):
        ConvexReLUClassifier(penalty="trace").fit(X, y)
