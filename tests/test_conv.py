"""Convolutional programs: patches X (n, K, h) with masks (n, K, P) in every solver.

    min_U L(Σ_i Σ_k D_ik X_k U_i, y) + λ Σ_i Ω(U_i)     (exact ReLU: (2 D_ik − I) X_k U_i ≥ 0 at every k)

checked against loops (patch extraction), an explicit dense construction and adjoint identities (the
operators), cvxpy + Clarabel built from the definition (the optima, float64), the CNN read off the solution
(its non-convex objective), λ_max, the envelope theorem (dp*/dλ = Ω(U*)) and the fully connected solvers'
transforms (jit, vmap, paths, row sharding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convexnn as cn
from convexnn import losses, operators, prox
from convexnn.problem import Problem as Program

from .reference import clarabel_conv


class Images:
    """A convolutional problem: the images, the patches the solvers see, masks, targets, gates and loss."""

    def __init__(self, name, images, y, loss, size, stride, P, seed=0, dtype=jnp.float64):
        self.name, self.images, self.y, self.loss, self.size, self.stride = name, images, y, loss, size, stride
        patches = cn.image_patches(jnp.asarray(images, jnp.float64), size, stride, bias=True)
        # A bias in every patch, and average pooling (the program on X / K).
        self.X = jnp.asarray(patches / patches.shape[1], dtype)
        self.gates = cn.sample_gates(jax.random.key(seed), self.X.shape[-1], P, dtype)
        self.masks = cn.activation_masks(self.X, self.gates)

    def targets(self):
        """y as (n, c) for the references (one-hot for cross-entropy)."""
        y = np.asarray(self.y)
        if self.loss == "cross_entropy" and y.ndim == 1:
            return np.eye(int(y.max()) + 1)[y]
        return y.reshape(y.shape[0], -1)


def digits_images(loss: str, n: int = 60, P: int = 6, classes: int = 3) -> Images:
    """scikit-learn's digits (8×8), 3×3 patches with stride 2 (K = 9, h = 10 with the bias)."""
    from sklearn.datasets import load_digits

    X, labels = load_digits(return_X_y=True)
    keep = np.flatnonzero(labels < classes)[:n]
    images, labels = X[keep].reshape(-1, 8, 8) / 16.0, labels[keep]
    if loss == "cross_entropy":
        y = labels
    elif loss == "logistic":
        y = np.where(labels == 0, 1.0, -1.0)
    else:
        y = labels - labels.mean()
    return Images(f"digits-{loss}", images, jnp.asarray(y), loss, 3, 2, P)


def teacher_images(n: int = 50, P: int = 8) -> Images:
    """Random 6×6 images labelled by a planted CNN of 3 ReLU filters (3×3, stride 1: K = 16), squared loss."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 6, 6))
    patches = np.asarray(cn.image_patches(jnp.asarray(images), 3, 1))
    filters, alpha = rng.standard_normal((9, 3)), rng.standard_normal(3)
    y = np.maximum(patches @ filters, 0).sum(axis=1) @ alpha / patches.shape[1]
    return Images("teacher", images, jnp.asarray(y + 0.05 * rng.standard_normal(n)), "squared", 3, 1, P)


# -- patches -------------------------------------------------------------------------------------------------


def _loop_patches(images, size, stride, padding):
    x = images[..., None] if images.ndim == 3 else images
    (s1, s2), (t1, t2) = size, stride
    H, W = x.shape[1:3]
    if padding == "same":
        Ho, Wo = -(-H // t1), -(-W // t2)
        ph, pw = max((Ho - 1) * t1 + s1 - H, 0), max((Wo - 1) * t2 + s2 - W, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        Ho, Wo = (H - s1) // t1 + 1, (W - s2) // t2 + 1
    out = np.zeros((x.shape[0], Ho * Wo, s1 * s2 * x.shape[3]))
    for j in range(x.shape[0]):
        for a in range(Ho):
            for b in range(Wo):
                window = x[j, a * t1 : a * t1 + s1, b * t2 : b * t2 + s2, :]
                out[j, a * Wo + b] = [
                    window[r, q, ch] for r in range(s1) for q in range(s2) for ch in range(x.shape[3])
                ]
    return out


@pytest.mark.parametrize(
    "shape, size, stride, padding",
    [
        ((3, 8, 8), (3, 3), (1, 1), "valid"),
        ((2, 7, 9, 3), (2, 3), (2, 1), "valid"),
        ((2, 7, 9, 2), (3, 3), (2, 2), "same"),
        ((1, 5, 6), (4, 4), (3, 3), "same"),
        ((2, 1, 10), (1, 3), (1, 2), "valid"),
    ],
)
def test_image_patches_match_an_explicit_loop(shape, size, stride, padding):
    images = np.random.default_rng(1).standard_normal(shape)
    got = np.asarray(cn.image_patches(jnp.asarray(images), size, stride, padding))
    np.testing.assert_array_equal(got, _loop_patches(images, size, stride, padding))
    assert got.shape[1] == np.prod(cn.patch_grid(shape[1:], size, stride, padding))
    with_bias = np.asarray(cn.image_patches(jnp.asarray(images), size, stride, padding, bias=True))
    np.testing.assert_array_equal(with_bias[..., :-1], got)
    np.testing.assert_array_equal(with_bias[..., -1], 1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(images=np.zeros((2, 8)), size=3), "images"),
        (dict(images=np.zeros((2, 8, 8)), size=0), "size"),
        (dict(images=np.zeros((2, 8, 8)), size=3, stride=(1, 2, 3)), "stride"),
        (dict(images=np.zeros((2, 8, 8)), size=3, padding="full"), "padding"),
        (dict(images=np.zeros((2, 4, 4)), size=5), "size"),
    ],
)
def test_image_patches_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        cn.image_patches(**kwargs)


def test_solvers_refuse_masks_without_the_patch_axis():
    p = digits_images("squared")
    with pytest.raises(ValueError, match="masks"):
        cn.solve_gated(p.X, p.y, p.masks[:, 0, :], 0.1)
    with pytest.raises(ValueError, match="masks"):
        cn.solve_relu(p.X, p.y, p.masks[:, :-1, :], 0.1)


# -- operators -----------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 6),
    K=st.integers(1, 5),
    h=st.integers(1, 4),
    P=st.integers(1, 4),
    c=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**16),
)
def test_patch_operators_are_adjoint_and_match_a_dense_construction(n, K, h, P, c, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, K, h))
    M = rng.random((n, K, P)) < 0.5
    wshape, rshape = ((P, h), (n,)) if c is None else ((P, h, c), (n, c))
    W, r = rng.standard_normal(wshape), rng.standard_normal(rshape)
    # Dense: block i's data Σ_k D_ik X_k, the forward map Σ_i (Σ_k D_ik X_k) w_i.
    Z = np.stack([sum(M[:, k, i, None] * X[:, k, :] for k in range(K)) for i in range(P)], axis=1)  # (n, P, h)
    W3 = W if c is not None else W[..., None]
    dense = np.einsum("nph,phc->nc", Z, W3)
    dense = dense[:, 0] if c is None else dense
    Xj, Mj, Wj, rj = map(jnp.asarray, (X, M, W, r))
    forward = operators.gated_forward(Xj, Mj, Wj)
    adjoint = operators.gated_adjoint(Xj, Mj, rj)
    np.testing.assert_allclose(forward, dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jnp.vdot(forward, rj), jnp.vdot(Wj, adjoint), rtol=1e-11, atol=1e-11)
    pooled = operators.pool_patches(Xj, Mj)
    np.testing.assert_allclose(pooled, Z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(operators.pooled_forward(pooled, Wj), forward, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(operators.pooled_adjoint(pooled, rj), adjoint, rtol=1e-12, atol=1e-12)
    # The exact ReLU map W ↦ (z, R) on stacked [U; V] and its pullback.
    cc = 1 if c is None else c
    Y = jnp.zeros((n, cc))
    prog = Program(X=Xj, masks=Mj, y=Y, loss=losses.Squared(), N=n * cc)
    UV = jnp.asarray(rng.standard_normal((2 * P, h, cc)))
    z, R = prog.split(prog.products(UV))
    gz, gR = jnp.asarray(rng.standard_normal(z.shape)), jnp.asarray(rng.standard_normal(R.shape))
    lhs = jnp.vdot(z, gz) + jnp.vdot(R, gR)
    np.testing.assert_allclose(lhs, jnp.vdot(UV, prog.pullback(gz, gR)), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(z, operators.gated_forward(Xj, Mj, UV[:P] - UV[P:]), rtol=1e-12, atol=1e-12)
    M2 = np.concatenate([M, M], axis=2)  # the patterns of [U; V]
    UVn = np.asarray(UV)
    residuals = np.stack(
        [np.where(M2[:, k, :, None], 1, -1) * np.einsum("nh,phc->npc", X[:, k], UVn) for k in range(K)], 1
    )
    np.testing.assert_allclose(jnp.moveaxis(R, -1, 2), residuals, rtol=1e-12, atol=1e-12)


# -- optima against Clarabel ---------------------------------------------------------------------------------


CASES = {
    "digits-squared-gated-group": (lambda: digits_images("squared"), "gated", "group"),
    "digits-logistic-gated-group": (lambda: digits_images("logistic"), "gated", "group"),
    "digits-classes-gated-nuclear": (lambda: digits_images("cross_entropy", n=45, P=4), "gated", "nuclear"),
    "teacher-gated-group": (teacher_images, "gated", "group"),
    "teacher-relu-group": (teacher_images, "relu", "group"),
    "digits-logistic-relu-group": (lambda: digits_images("logistic", n=40, P=4), "relu", "group"),
}


def _solve(p: Images, model: str, penalty: str, lam, **kwargs):
    if model == "gated":
        return cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, penalty=penalty, **kwargs)
    return cn.solve_relu(p.X, p.y, p.masks, lam, loss=p.loss, penalty=penalty, **kwargs)


@pytest.fixture(scope="module", params=sorted(CASES))
def solved(request):
    make, model, penalty = CASES[request.param]
    p = make()
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, p.loss, model=model, penalty=penalty))
    sol = _solve(p, model, penalty, lam, tol=1e-10, max_iters=200_000)
    return p, model, penalty, lam, sol


def test_optimum_matches_clarabel(solved):
    p, model, penalty, lam, sol = solved
    p_star = clarabel_conv(p.X, p.targets(), p.masks, lam, p.loss, model, penalty)
    assert int(sol.status) == cn.Status.CONVERGED
    assert abs(float(sol.objective) - p_star) <= 1e-6 * max(1.0, abs(p_star))
    assert float(sol.gap) >= float(sol.objective) - p_star - 1e-9  # the certificate bounds the true distance
    assert float(sol.violation) <= 1e-6


def test_recovered_cnn_attains_the_convex_optimum(solved):
    p, model, penalty, lam, sol = solved
    net = cn.to_network(sol, p.gates) if model == "gated" else cn.to_network(sol, X=p.X)
    assert net.W1.shape[0] == p.X.shape[-1]  # filters of h values
    value = cn.network_objective(net, p.X, p.y, lam, p.loss)
    np.testing.assert_allclose(value, sol.objective, rtol=1e-7)
    # The same network on the images: the patches it was trained on (with the bias, averaged) are one call away.
    pruned = net.prune()
    assert pruned.width <= net.width
    np.testing.assert_allclose(pruned(p.X), net(p.X), rtol=1e-10, atol=1e-12)
    on_images = net.on_images(p.images, p.size, p.stride, bias=True, scale=1 / p.X.shape[1])
    np.testing.assert_allclose(on_images, net(p.X), rtol=1e-10, atol=1e-12)


def test_network_on_images_is_the_network_on_their_patches():
    p = teacher_images()
    patches = cn.image_patches(jnp.asarray(p.images), 3, 1)  # sum pooling, no bias
    gates = cn.sample_gates(jax.random.key(1), 9, 8, jnp.float64)
    sol = cn.solve_gated(patches, p.y, cn.activation_masks(patches, gates), 0.01, tol=1e-8)
    net = cn.to_network(sol, gates)
    assert net.W1.shape == (9, 8)
    np.testing.assert_allclose(net.on_images(p.images, 3, 1), net(patches))


# -- λ_max, the envelope theorem ----------------------------------------------------------------------------


@pytest.mark.parametrize("penalty", ["group", "nuclear"])
def test_lam_max_is_where_the_solution_vanishes(penalty):
    p = digits_images("cross_entropy", n=45, P=4) if penalty == "nuclear" else digits_images("squared")
    top = float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty=penalty))
    at = cn.solve_gated(p.X, p.y, p.masks, top * 1.0001, loss=p.loss, penalty=penalty, tol=1e-10)
    below = cn.solve_gated(p.X, p.y, p.masks, top * 0.9, loss=p.loss, penalty=penalty, tol=1e-10)
    assert float(jnp.max(jnp.abs(at.weights))) == 0.0
    assert float(jnp.max(jnp.abs(below.weights))) > 0.0


def test_relu_lam_max_is_where_the_solution_vanishes():
    p = teacher_images()
    top = float(cn.lam_max(p.X, p.y, p.masks, model="relu"))
    assert top <= float(cn.lam_max(p.X, p.y, p.masks)) * (1 + 1e-12)
    at = cn.solve_relu(p.X, p.y, p.masks, top * 1.0001, tol=1e-9)
    below = cn.solve_relu(p.X, p.y, p.masks, top * 0.9, tol=1e-9)
    assert max(float(jnp.max(jnp.abs(w))) for w in at.weights) == 0.0
    assert max(float(jnp.max(jnp.abs(w))) for w in below.weights) > 0.0


def test_derivative_in_lam_is_the_penalty_at_the_optimum():
    """Envelope theorem: dp*/dλ = Ω(U*), through the implicit VJP on patches."""
    p = digits_images("squared")
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks))
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-12)
    grad = jax.grad(lambda t: cn.solve_gated(p.X, p.y, p.masks, t, tol=1e-12).objective)(lam)
    np.testing.assert_allclose(grad, prox.GroupL2().value(sol.weights[..., None]), rtol=1e-6)


# -- transforms, precision, devices -------------------------------------------------------------------------


def test_jit_vmap_and_paths_agree_with_single_solves():
    p = digits_images("squared")
    top = float(cn.lam_max(p.X, p.y, p.masks))
    lams = jnp.asarray([0.5, 0.2, 0.1]) * top
    singles = [cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10) for lam in lams]
    jitted = jax.jit(lambda lam: cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10))(lams[1])
    vmapped = jax.vmap(lambda lam: cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10))(lams)
    warm = cn.solve_path(p.X, p.y, p.masks, lams, mode="warm", tol=1e-10)
    for k, single in enumerate(singles):
        for other in (vmapped[k], warm[k]):
            np.testing.assert_allclose(other.objective, single.objective, rtol=1e-8)
    np.testing.assert_allclose(jitted.objective, singles[1].objective, rtol=1e-8)
    # The exact ReLU path, on a smaller problem (the AL on patches is the slow part of this file).
    q = digits_images("squared", n=30, P=4)
    relu_lams = jnp.asarray([0.3, 0.1]) * float(cn.lam_max(q.X, q.y, q.masks))
    relu_path = cn.solve_path(q.X, q.y, q.masks, relu_lams, model="relu", mode="warm", tol=1e-8)
    for k in range(2):
        relu = cn.solve_relu(q.X, q.y, q.masks, relu_lams[k], tol=1e-8)
        np.testing.assert_allclose(relu_path[k].objective, relu.objective, rtol=1e-6)


@pytest.mark.parametrize("model", ["gated", "relu"])
def test_row_sharded_solve_equals_one_device(model):
    from jax.sharding import Mesh

    p = digits_images("squared", n=58)  # 58 rows over 4 devices: two padding rows
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    data = cn.shard_rows(mesh, p.X, p.y, p.masks)
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks))
    solve = cn.solve_gated if model == "gated" else cn.solve_relu
    one, many = solve(p.X, p.y, p.masks, lam, tol=1e-10), solve(data, lam=lam, tol=1e-10)
    np.testing.assert_allclose(many.objective, one.objective, rtol=1e-8)
    if model == "gated":
        np.testing.assert_allclose(cn.lam_max(data), cn.lam_max(p.X, p.y, p.masks), rtol=1e-12)


@pytest.mark.parametrize("penalty", ["group", "nuclear"])
def test_float32_certifies(penalty):
    p = digits_images("cross_entropy", n=60, P=8)
    X = p.X.astype(jnp.float32)
    lam = 0.05 * float(cn.lam_max(X, p.y, p.masks, p.loss, penalty=penalty))
    sol = cn.solve_gated(X, p.y, p.masks, lam, loss=p.loss, penalty=penalty, tol=1e-5)
    assert sol.objective.dtype == jnp.float32
    assert int(sol.status) == cn.Status.CONVERGED


def test_admm_solves_the_convolutional_relu_program():
    p = teacher_images()
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks, model="relu"))
    al = cn.solve_relu(p.X, p.y, p.masks, lam, tol=1e-9)
    admm = cn.solve_relu(p.X, p.y, p.masks, lam, method="admm", tol=1e-5, max_iters=50_000)
    assert int(admm.status) == cn.Status.CONVERGED
    assert float(admm.objective) - float(al.objective) <= float(admm.gap) + 1e-9
    assert float(admm.objective) - float(al.objective) <= 1e-4 * abs(float(al.objective))


# -- the estimator -------------------------------------------------------------------------------------------


def test_conv_classifier_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from convexnn.estimators import ConvexConvClassifier

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X[:600], y[:600], test_size=0.25, random_state=0, stratify=y[:600])
    est = ConvexConvClassifier((8, 8), patch=3, n_gates=32, random_state=0).fit(Xtr, ytr)
    assert est.status_ == "converged" and est.score(Xte, yte) > 0.85
    assert est.filters_.shape == (10, est.n_neurons_) and est.n_positions_ == 36
    # Its predictions are the CNN's: Σ_k gate ⊙ (x̃_k W1) w2 over the standardized patches.
    net = cn.Network(
        W1=jnp.asarray(est.filters_), w2=jnp.asarray(est.second_layer_), gates=jnp.asarray(est.neuron_gates_)
    )
    images = (Xte - est.x_mean_) / est.x_scale_
    patches = np.asarray(cn.image_patches(jnp.asarray(images.reshape(-1, 8, 8)), 3))
    F = np.concatenate([patches, np.ones(patches.shape[:2] + (1,))], axis=2) / 36
    np.testing.assert_allclose(est.decision_function(Xte), net(jnp.asarray(F)), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="image_shape"):
        ConvexConvClassifier((8, 9)).fit(Xtr, ytr)


def test_gates_in_place_of_masks_give_the_same_solve():
    """solve_gated(..., gates=G) recomputes the patterns in row blocks: the same solution, no (n, K, P) masks."""
    p = digits_images("cross_entropy", n=60, P=8)
    lam = 0.05 * float(cn.lam_max(p.X, p.y, p.masks, p.loss, penalty="nuclear"))
    with_masks = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, penalty="nuclear", tol=1e-10)
    with_gates = cn.solve_gated(p.X, p.y, lam=lam, gates=p.gates, loss=p.loss, penalty="nuclear", tol=1e-10)
    np.testing.assert_allclose(with_gates.objective, with_masks.objective, rtol=1e-12)
    np.testing.assert_allclose(with_gates.weights, with_masks.weights, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        operators.pool_patches_from_gates(p.X, p.gates), operators.pool_patches(p.X, p.masks), rtol=1e-12, atol=1e-15
    )
    with pytest.raises(ValueError, match="masks or gates"):
        cn.solve_gated(p.X, p.y, p.masks, lam, gates=p.gates)
    with pytest.raises(ValueError, match="gates"):
        cn.solve_gated(p.X, p.y, lam=lam, gates=p.gates[:-1])
    with pytest.raises(ValueError, match="patches"):
        cn.solve_gated(p.X[..., None], p.y, lam=lam, gates=p.gates)


def test_cone_decomposition_of_a_convolutional_solution():
    """A gated CNN split into u − v with every u_i, v_i in its cone at every position: a feasible exact-ReLU point
    with the same predictions, whose objective bounds the exact program's optimum from above."""
    p = teacher_images()
    lam = 0.1 * float(cn.lam_max(p.X, p.y, p.masks))
    gated = cn.solve_gated(p.X, p.y, p.masks, lam, tol=1e-10)
    split = cn.cone_decompose(gated, p.X, iterations=80)  # 40 leave a 3e-3 violation here (K = 16 rows per image)
    U, V = split.weights
    assert float(split.violation) <= 1e-8 and float(split.growth) >= 1.0
    np.testing.assert_allclose(
        operators.gated_forward(p.X, p.masks, U - V), operators.gated_forward(p.X, p.masks, gated.weights), atol=1e-10
    )
    assert float(jnp.min(operators.cone_residuals(p.X, p.masks, U))) >= -1e-8 * float(jnp.max(jnp.abs(U)))
