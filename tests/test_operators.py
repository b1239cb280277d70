"""The masked operators against the adjoint identity, jax.linear_transpose and a dense [D_1 X … D_P X]."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from convexnn import operators

from . import helpers

SHAPES = dict(
    n=st.integers(1, 30),
    d=st.integers(1, 6),
    p=st.integers(1, 8),
    c=st.one_of(st.none(), st.integers(1, 3)),
    seed=st.integers(0, 2**31 - 1),
)


def dense_operator(X, masks) -> np.ndarray:
    """A = [D_1 X, …, D_P X] (n × P·d), built entry by entry from 0/1 masks, in float64 numpy."""
    X = np.asarray(X, dtype=np.float64)
    m = np.asarray(masks).astype(np.float64)
    return np.concatenate([m[:, i : i + 1] * X for i in range(m.shape[1])], axis=1)


def dense_forward(X, masks, W) -> np.ndarray:
    """A vec(W), with W (P, d) or (P, d, c) flattened block by block."""
    W = np.asarray(W, dtype=np.float64)
    A = dense_operator(X, masks)
    return A @ W.reshape(W.shape[0] * W.shape[1], -1)[:, 0] if W.ndim == 2 else A @ W.reshape(-1, W.shape[2])


def dense_adjoint(X, masks, r) -> np.ndarray:
    """Aᵀ r reshaped to (P, d) or (P, d, c)."""
    r = np.asarray(r, dtype=np.float64)
    P, d = np.asarray(masks).shape[1], np.asarray(X).shape[1]
    out = dense_operator(X, masks).T @ r
    return out.reshape(P, d) if r.ndim == 1 else out.reshape(P, d, r.shape[1])


@jax.jit
def _all_operators(X, masks, W, r):
    """Forward, adjoint, jax.linear_transpose of forward, cone residuals: one compilation per shape."""
    transpose = jax.linear_transpose(lambda V: operators.gated_forward(X, masks, V), W)
    (transposed,) = transpose(r)
    return (
        operators.gated_forward(X, masks, W),
        operators.gated_adjoint(X, masks, r),
        transposed,
        operators.cone_residuals(X, masks, W),
    )


# One property test per operand shape: every new shape compiles each operator, so the identities share a draw.
@settings(deadline=None, max_examples=50)
@given(**SHAPES)
@example(n=1, d=1, p=1, c=None, seed=0)
@example(n=6, d=2, p=3, c=2, seed=1)
def test_operator_identities(n, d, p, c, seed):
    X, masks, W, r = helpers.random_operands(seed, n, d, p, c, dtype=jnp.float64)
    out, adj, transposed, res = _all_operators(X, masks, W, r)
    assert out.shape == ((n,) if c is None else (n, c))
    assert adj.shape == W.shape

    # Adjoint identity <A W, r> = <W, Aᵀ r>.
    Xn, m, Wn, rn = (np.asarray(a) for a in (X, masks, W, r))
    lhs, rhs = np.vdot(np.asarray(out), rn), np.vdot(Wn, np.asarray(adj))
    scale = np.abs(Xn).sum() * np.abs(Wn).sum() * np.abs(rn).max()
    assert abs(lhs - rhs) <= 1e-13 * max(1.0, scale)

    # The explicit dense A = [D_1 X, …, D_P X].
    np.testing.assert_allclose(np.asarray(out), dense_forward(X, masks, W), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(adj), dense_adjoint(X, masks, r), rtol=1e-12, atol=1e-12)

    # JAX's own transpose of the forward map.
    np.testing.assert_allclose(np.asarray(adj), np.asarray(transposed), rtol=1e-12, atol=1e-12)

    # Cone residuals (2 m_i − 1) ⊙ X w_i for every block i.
    res = np.asarray(res)
    sign = 2.0 * m.astype(np.float64) - 1.0  # (n, P)
    assert res.shape == ((n, p) if c is None else (n, p, c))
    for i in range(p):
        Xw = Xn @ Wn[i]  # (n,) or (n, c)
        expected_i = sign[:, i] * Xw if c is None else sign[:, i : i + 1] * Xw
        np.testing.assert_allclose(res[:, i], expected_i, rtol=1e-12, atol=1e-12)


def test_cone_residuals_nonnegative_inside_cone():
    # w_i chosen inside its pattern's cone: the gate itself gives D_i = diag(1[X g ≥ 0]), so X g ⊙ (2m − 1) ≥ 0.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((25, 4))
    G = rng.standard_normal((4, 6))
    masks = jnp.asarray(X @ G >= 0)
    res = operators.cone_residuals(jnp.asarray(X), masks, jnp.asarray(G.T))
    assert bool(jnp.all(res >= 0))
    # and the negated gates leave every cone wherever X g ≠ 0.
    res_neg = operators.cone_residuals(jnp.asarray(X), masks, jnp.asarray(-G.T))
    assert bool(jnp.all(res_neg <= 0)) and bool(jnp.any(res_neg < 0))


@pytest.mark.parametrize("c", [None, 2])
def test_float32_in_float32_out(c):
    X, masks, W, r = helpers.random_operands(1, 9, 3, 4, c, dtype=jnp.float32)
    out = operators.gated_forward(X, masks, W)
    adj = operators.gated_adjoint(X, masks, r)
    res = operators.cone_residuals(X, masks, W)
    assert out.dtype == jnp.float32
    assert adj.dtype == jnp.float32
    assert res.dtype == jnp.float32
    # Float32 still agrees with the float64 dense reference to float32 accuracy.
    np.testing.assert_allclose(np.asarray(out), dense_forward(X, masks, W), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(adj), dense_adjoint(X, masks, r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", [None, 3])
def test_int8_masks_cast_to_bool(c):
    rng = np.random.default_rng(7)
    n, d, p = 13, 3, 5
    X, _, W, r = helpers.random_operands(7, n, d, p, c, dtype=jnp.float64)
    m_int8 = rng.integers(0, 2, size=(n, p)).astype(np.int8)
    masks_from_int8 = jnp.asarray(m_int8).astype(bool)
    masks_bool = jnp.asarray(m_int8 == 1)
    for fn, arg in (
        (operators.gated_forward, W),
        (operators.gated_adjoint, r),
        (operators.cone_residuals, W),
    ):
        a = np.asarray(fn(X, masks_from_int8, arg))
        b = np.asarray(fn(X, masks_bool, arg))
        np.testing.assert_array_equal(a, b)
    # The 0/1 int8 masks used as numbers in the dense reference give the same operator.
    np.testing.assert_allclose(
        np.asarray(operators.gated_forward(X, masks_from_int8, W)), dense_forward(X, m_int8, W), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        np.asarray(operators.gated_adjoint(X, masks_from_int8, r)), dense_adjoint(X, m_int8, r), rtol=1e-12, atol=1e-12
    )


def test_all_inactive_and_all_active_masks():
    X, _, W, r = helpers.random_operands(3, 8, 3, 4, 2, dtype=jnp.float64)
    off = jnp.zeros((8, 4), dtype=bool)
    on = jnp.ones((8, 4), dtype=bool)
    assert bool(jnp.all(operators.gated_forward(X, off, W) == 0))
    assert bool(jnp.all(operators.gated_adjoint(X, off, r) == 0))
    # All active: A W = X Σ_i w_i, Aᵀ r = Xᵀ r repeated for every block.
    np.testing.assert_allclose(
        np.asarray(operators.gated_forward(X, on, W)), np.asarray(X) @ np.asarray(W).sum(0), rtol=1e-12, atol=1e-12
    )
    adj = np.asarray(operators.gated_adjoint(X, on, r))
    for i in range(4):
        np.testing.assert_allclose(adj[i], np.asarray(X).T @ np.asarray(r), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", [None, 2])
@pytest.mark.parametrize("n", [30, 35, 14])
def test_row_blocked_operators_equal_one_piece(monkeypatch, n, c):
    """On CPU large n is applied in row blocks (plus a remainder): it must change nothing but speed."""
    X, masks, W, R = helpers.random_operands(7, n, 5, 6, c)
    dense_fwd = operators.gated_forward(X, masks, W)
    dense_adj = operators.gated_adjoint(X, masks, R)
    monkeypatch.setattr(operators, "row_block", lambda n, width, itemsize: 7)
    np.testing.assert_allclose(operators.gated_forward(X, masks, W), dense_fwd, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(operators.gated_adjoint(X, masks, R), dense_adj, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("c", [None, 2])
@pytest.mark.parametrize("block", [None, 7])
def test_operators_from_gates_equal_those_of_stored_masks(monkeypatch, block, c):
    """Patterns recomputed from the gates in row blocks (7 rows and a remainder, or one piece): the same maps."""
    monkeypatch.setattr(operators, "gate_block", lambda n, width, itemsize: block)
    rng = np.random.default_rng(3)
    X, gates = jnp.asarray(rng.standard_normal((30, 5))), jnp.asarray(rng.standard_normal((5, 6)))
    masks = np.asarray(X) @ np.asarray(gates) >= 0
    W = jnp.asarray(rng.standard_normal((6, 5) if c is None else (6, 5, c)))
    r = jnp.asarray(rng.standard_normal((30,) if c is None else (30, c)))
    np.testing.assert_array_equal(operators.masks_from_gates(X, gates), masks)
    close = dict(rtol=1e-12, atol=1e-13)  # sums of O(1) terms: absolute rounding where they cancel
    np.testing.assert_allclose(operators.gates_forward(X, gates, W), dense_forward(X, masks, W), **close)
    np.testing.assert_allclose(operators.gates_adjoint(X, gates, r), dense_adjoint(X, masks, r), **close)
    s = jnp.asarray(rng.standard_normal(30))
    np.testing.assert_allclose(operators.gates_row_sums(X, gates, s), masks.T @ np.asarray(s), **close)
    monkeypatch.setattr(operators, "row_block", lambda n, width, itemsize: block)
    np.testing.assert_allclose(operators.mask_row_sums(jnp.asarray(masks), s), masks.T @ np.asarray(s), **close)
    patch_masks, patch_s = jnp.asarray(masks.reshape(10, 3, 6)), s.reshape(10, 3)  # (n, K, P) patches
    np.testing.assert_allclose(operators.mask_row_sums(patch_masks, patch_s), masks.T @ np.asarray(s), **close)


def test_row_block_choice():
    assert operators.row_block(1000, 500, 4) is None  # too few rows to be worth splitting
    if jax.default_backend() == "cpu":
        block = operators.row_block(20000, 500, 4)
        assert block is not None and 256 <= block <= 20000 // 2


@pytest.mark.parametrize("c", [1, 3])
def test_relu_maps_match_dense_loops_and_their_adjoint(c):
    """Problem's (z, R) = split(products(W)) against per-block numpy loops, and pullback = its transpose.

    z = Σ_i m_i ⊙ X (u_i − v_i); R[:, k, q] = s_q ⊙ (X W_q)[:, k] with s = 2m − 1 for U and V alike.
    """
    from convexnn import losses
    from convexnn.problem import Problem

    n, d, P = 11, 4, 5
    rng = np.random.default_rng(c)
    X, W = rng.normal(size=(n, d)), rng.normal(size=(2 * P, d, c))
    masks = rng.random((n, P)) < 0.5
    gz, gR = rng.normal(size=(n, c)), rng.normal(size=(n, c, 2 * P))
    squared = losses.get_loss("squared")
    data = Problem(X=jnp.asarray(X), masks=jnp.asarray(masks), y=jnp.zeros((n, c)), loss=squared, N=n)

    z, R = data.split(data.products(jnp.asarray(W)))
    m = masks.astype(np.float64)
    z_ref = sum(m[:, [i]] * (X @ (W[i] - W[P + i])) for i in range(P))
    R_ref = np.stack([(2 * m[:, [q % P]] - 1) * (X @ W[q]) for q in range(2 * P)], axis=-1)
    np.testing.assert_allclose(np.asarray(z), z_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(R), R_ref, rtol=1e-12, atol=1e-12)

    back = np.asarray(data.pullback(jnp.asarray(gz), jnp.asarray(gR)))
    np.testing.assert_allclose(np.sum(z_ref * gz) + np.sum(R_ref * gR), np.sum(W * back), rtol=1e-12)
    (transposed,) = jax.linear_transpose(lambda w: data.split(data.products(w)), jnp.asarray(W))(
        (jnp.asarray(gz), jnp.asarray(gR))
    )
    np.testing.assert_allclose(back, np.asarray(transposed), rtol=1e-12, atol=1e-12)


class _ALCase(NamedTuple):
    X: np.ndarray
    masks: np.ndarray
    gamma: np.ndarray
    rho: float
    obj: object
    a: np.ndarray  # the preconditioner's weights ‖W_g‖/λ, 0 on an inactive group
    v: np.ndarray
    R: np.ndarray
    h: np.ndarray  # the loss's Hessian diagonal at z


def _al_preconditioner_case(loss_name: str, c: int, seed: int, **options) -> tuple[_ALCase, tuple]:
    """An AL subproblem on 13 random rows (d = 4, P = 3), its image at random W, weights a and a vector v."""
    from convexnn import losses
    from convexnn.problem import Problem
    from convexnn.solvers.objectives import AugmentedLagrangianObjective

    n, d, P = 13, 4, 3
    rng = np.random.default_rng(seed)
    X, W = rng.normal(size=(n, d)), rng.normal(size=(2 * P, d, c))
    masks = rng.random((n, P)) < 0.5
    loss = losses.get_loss(loss_name)
    y = (rng.random((n, c)) < 0.5).astype(np.float64) if loss_name == "logistic" else rng.normal(size=(n, c))
    data = Problem(X=jnp.asarray(X), masks=jnp.asarray(masks), y=jnp.asarray(y), loss=loss, N=n * c)
    gamma, rho = np.maximum(rng.normal(size=(n, c, 2 * P)), 0), 0.7
    obj = AugmentedLagrangianObjective(problem=data, gamma=jnp.asarray(gamma), rho=jnp.asarray(rho), **options)
    a = rng.uniform(0.5, 2.0, size=(2 * P, c))
    a[1, 0] = 0.0  # an inactive group: the identity
    v = rng.normal(size=(2 * P, d, c))
    img = obj.apply(jnp.asarray(W))
    z, R = (np.asarray(t) for t in img)
    h = np.asarray(loss.hessian_diagonal(jnp.asarray(z), jnp.asarray(y), n * c))
    return _ALCase(X, masks, gamma, rho, obj, a, v, R, h), img


@pytest.mark.parametrize("loss_name,c", [("squared", 1), ("logistic", 1), ("squared", 3)])
def test_al_block_jacobi_preconditioner_inverts_each_block(loss_name, c):
    """The AL polish's preconditioner applies, per group (block q, output k) with a > 0, the inverse of

        ρ Σ_j 1[Γ/ρ − R > 0]_{jkq} x_j x_jᵀ + Σ_j m_jq h_jk x_j x_jᵀ + (1/a_qk) I

    (h the loss's Hessian diagonal), and the identity on groups with a = 0; checked against numpy solves. It is
    the preconditioner where the sample-space one does not apply (woodbury_max_rows=0 here).
    """
    t, img = _al_preconditioner_case(loss_name, c, 7 + c, woodbury_max_rows=0)
    X, a, v, R, h, gamma, rho = t.X, t.a, t.v, t.R, t.h, t.gamma, t.rho
    d, P = X.shape[1], t.masks.shape[1]
    out = np.asarray(t.obj.newton_preconditioner(img, jnp.asarray(a))(jnp.asarray(v)))

    m2 = np.concatenate([t.masks, t.masks], axis=1).astype(np.float64)
    expected = np.empty_like(v)
    for q in range(2 * P):
        for k in range(c):
            if a[q, k] == 0:
                expected[q, :, k] = v[q, :, k]
                continue
            weight = rho * (gamma[:, k, q] / rho - R[:, k, q] > 0) + m2[:, q] * h[:, k]
            B = (X * weight[:, None]).T @ X + np.eye(d) / a[q, k]
            expected[q, :, k] = np.linalg.solve(B, v[q, :, k])
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_name,c", [("squared", 1), ("logistic", 1), ("squared", 3)])
def test_al_sample_space_preconditioner_inverts_its_matrix(loss_name, c):
    """On float64 rows (n ≤ woodbury_max_rows) the AL polish's preconditioner applies P⁻¹ on the groups with a > 0,

        P = M + Fᵀ diag(h) F,   M_qk = ρ Σ_j 1[Γ/ρ − R > 0]_{jkq} x_j x_jᵀ + (I − (1 − δ) ŵŵᵀ)/a_qk,

    F v = Σ_q ±D_q X v_q (U adds, V subtracts) and h the loss's Hessian diagonal, by Woodbury: checked against a
    dense numpy solve of P, and the identity on groups with a = 0.
    """
    t, img = _al_preconditioner_case(loss_name, c, 17 + c)
    X, a, v, R, h, gamma, rho = t.X, t.a, t.v, t.R, t.h, t.gamma, t.rho
    (n, d), P = X.shape, t.masks.shape[1]
    assert t.obj.couples_samples()
    unit = np.random.default_rng(27 + c).normal(size=(2 * P, d, c))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    out = np.asarray(t.obj.newton_preconditioner(img, jnp.asarray(a), jnp.asarray(unit))(jnp.asarray(v)))

    sign = np.concatenate([np.ones(P), -np.ones(P)])
    m2 = np.concatenate([t.masks, t.masks], axis=1).astype(np.float64) * sign
    on = [(q, k) for q in range(2 * P) for k in range(c) if a[q, k] > 0]
    size = len(on) * d
    M = np.zeros((size, size))
    F = np.zeros((n * c, size))  # rows (j, k)
    for g, (q, k) in enumerate(on):
        block = slice(g * d, (g + 1) * d)
        hinge = rho * (gamma[:, k, q] / rho - R[:, k, q] > 0)
        w = unit[q, :, k]
        M[block, block] = (X * hinge[:, None]).T @ X + (np.eye(d) - (1 - t.obj.norm_floor) * np.outer(w, w)) / a[q, k]
        F[k::c, block] = m2[:, q, None] * X
    dense = M + F.T @ (h.reshape(-1)[:, None] * F)
    solved = np.linalg.solve(dense, np.concatenate([v[q, :, k] for q, k in on]))
    expected = v.copy()
    for g, (q, k) in enumerate(on):
        expected[q, :, k] = solved[g * d : (g + 1) * d]
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-11)
