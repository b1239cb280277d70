"""Regularisation paths: every point equals an independent solve, the modes agree, λ_max is exact."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers

TOL = 1e-9


@pytest.fixture(scope="module")
def prob():
    return helpers.teacher(n=150, d=6, P=24, seed=5)


@pytest.fixture(scope="module")
def lams(prob):
    top = cn.lam_max(prob.X, prob.y, prob.masks)
    grid = cn.lam_grid(top, num=6, ratio=1e-3)
    return grid[jnp.array([3, 0, 5, 1, 4, 2])]  # any order: results come back in this order


@pytest.mark.parametrize("mode", ["vmap", "warm"])
def test_every_point_equals_a_single_solve(prob, lams, mode):
    path = cn.solve_path(prob.X, prob.y, prob.masks, lams, mode=mode, tol=TOL)
    assert path.weights.shape == (6,) + prob.masks.shape[1:] + prob.X.shape[1:]
    assert np.all(np.asarray(path.status) == cn.Status.CONVERGED)
    np.testing.assert_allclose(np.asarray(path.lam), np.asarray(lams))
    for k, lam in enumerate(lams):
        single = cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=TOL)
        scale = max(float(cn.certificates.objective_unit(prob.y)), abs(float(single.objective)))
        assert abs(float(path.objective[k]) - float(single.objective)) <= 2 * TOL * scale
        assert float(path.gap[k]) <= TOL * scale


def test_modes_agree(prob, lams):
    vm = cn.solve_path(prob.X, prob.y, prob.masks, lams, mode="vmap", tol=TOL)
    wm = cn.solve_path(prob.X, prob.y, prob.masks, lams, mode="warm", tol=TOL)
    np.testing.assert_allclose(np.asarray(vm.objective), np.asarray(wm.objective), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(vm.weights), np.asarray(wm.weights), atol=1e-5)


def test_lam_max_is_the_zero_threshold_on_a_path(prob):
    top = float(cn.lam_max(prob.X, prob.y, prob.masks))
    path = cn.solve_path(prob.X, prob.y, prob.masks, jnp.array([top * (1 + 1e-6), top * 0.99]), mode="vmap")
    assert float(jnp.max(jnp.abs(path.weights[0]))) == 0.0
    assert int(path.iterations[0]) == 0
    assert float(jnp.max(jnp.abs(path.weights[1]))) > 0.0


@pytest.fixture(scope="module")
def relu_prob():
    return helpers.teacher(n=80, d=5, P=10, seed=2)


@pytest.fixture(scope="module")
def relu_lams(relu_prob):
    top = cn.lam_max(relu_prob.X, relu_prob.y, relu_prob.masks)
    return cn.lam_grid(top, num=4, ratio=1e-2)[jnp.array([2, 0, 3, 1])]


@pytest.mark.parametrize("mode", ["vmap", "warm"])
def test_relu_path_points_equal_single_solves(relu_prob, relu_lams, mode):
    p, tol = relu_prob, 1e-8
    path = cn.solve_path(p.X, p.y, p.masks, relu_lams, model="relu", mode=mode, tol=tol, constraint_tol=tol)
    U, V = path.weights
    assert U.shape == V.shape == (4,) + p.masks.shape[1:] + p.X.shape[1:]
    assert np.all(np.asarray(path.status) == cn.Status.CONVERGED)
    np.testing.assert_allclose(np.asarray(path.lam), np.asarray(relu_lams))
    assert float(jnp.max(path.violation)) <= tol
    for k, lam in enumerate(relu_lams):
        single = cn.solve_relu(p.X, p.y, p.masks, lam, tol=tol, constraint_tol=tol)
        scale = max(float(cn.certificates.objective_unit(p.y)), abs(float(single.objective)))
        assert abs(float(path.objective[k]) - float(single.objective)) <= 4 * tol * scale


def test_relu_path_modes_agree_with_admm(relu_prob, relu_lams):
    p = relu_prob
    al = cn.solve_path(p.X, p.y, p.masks, relu_lams, model="relu", mode="warm", tol=1e-8, constraint_tol=1e-8)
    admm = cn.solve_path(
        p.X,
        p.y,
        p.masks,
        relu_lams,
        model="relu",
        method="admm",
        mode="vmap",
        tol=1e-7,
        constraint_tol=1e-7,
        max_iters=60_000,
    )
    np.testing.assert_allclose(np.asarray(admm.objective), np.asarray(al.objective), rtol=1e-6)


def test_path_is_jittable(prob, lams):
    f = jax.jit(lambda ls: cn.solve_path(prob.X, prob.y, prob.masks, ls, mode="warm", tol=TOL).objective)
    np.testing.assert_allclose(f(lams), cn.solve_path(prob.X, prob.y, prob.masks, lams, tol=TOL).objective, rtol=1e-9)


def test_bad_paths_are_refused(prob):
    with pytest.raises(ValueError, match="lams must be a non-empty 1-D array"):
        cn.solve_path(prob.X, prob.y, prob.masks, jnp.zeros((0,)))
    with pytest.raises(ValueError, match="lams must be >= 0"):
        cn.solve_path(prob.X, prob.y, prob.masks, jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="mode must be one of"):
        cn.solve_path(prob.X, prob.y, prob.masks, jnp.array([1.0]), mode="serial")
    with pytest.raises(ValueError, match="model must be one of"):
        cn.solve_path(prob.X, prob.y, prob.masks, jnp.array([1.0]), model="mlp")
    with pytest.raises(ValueError, match="method must be one of"):
        cn.solve_path(prob.X, prob.y, prob.masks, jnp.array([1.0]), model="relu", method="sgd")
    with pytest.raises(ValueError, match="ratio must be in"):
        cn.lam_grid(1.0, ratio=2.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_lam_grid_refuses_a_non_finite_or_negative_lam_max(bad):
    with pytest.raises(ValueError, match="lam_max must be finite and >= 0"):
        cn.lam_grid(bad)
    with pytest.raises(ValueError, match="lam_max must be a scalar"):
        cn.lam_grid(jnp.ones(3))


@pytest.mark.parametrize("bad", [float("nan"), -1.0])
def test_lam_grid_refuses_a_bad_traced_lam_max(bad):
    grid = eqx.filter_jit(lambda top: cn.lam_grid(top, num=4, ratio=1e-3))
    np.testing.assert_allclose(grid(jnp.asarray(2.0)), 2.0 * np.logspace(0, -3, 4), rtol=1e-12)
    with pytest.raises(Exception, match="lam_max must be finite and >= 0"):
        jax.block_until_ready(grid(jnp.asarray(bad)))


def test_lam_grid_checks_num_and_ratio():
    with pytest.raises((ValueError, TypeError), match="num"):
        cn.lam_grid(1.0, num=2.5)
    with pytest.raises(ValueError, match="num must be an integer >= 1"):
        cn.lam_grid(1.0, num=0)
    with pytest.raises(ValueError, match="ratio must be in"):
        cn.lam_grid(1.0, ratio=float("nan"))
    # An integer λ_max gives a float grid, not one rounded to integers.
    grid = cn.lam_grid(1, num=3, ratio=1e-2)
    assert jnp.issubdtype(grid.dtype, jnp.floating)
    np.testing.assert_allclose(grid, [1.0, 0.1, 0.01], rtol=1e-12)


def test_plot_path_draws_every_panel(prob, lams, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    path = cn.solve_path(prob.X, prob.y, prob.masks, lams, tol=1e-6)
    fig = cn.plot_path(path, X=prob.X, y=prob.y, masks=prob.masks, X_val=prob.X, y_val=prob.y, masks_val=prob.masks)
    assert len(fig.axes) == 3
    order = np.argsort(np.asarray(lams))
    xs = fig.axes[1].lines[0].get_xdata()
    np.testing.assert_allclose(np.sort(xs), np.asarray(lams)[order])
    fig.savefig(tmp_path / "path.png")
    assert (tmp_path / "path.png").stat().st_size > 0


@pytest.mark.parametrize("case", ["teacher", "breast_cancer"])
def test_relu_lam_max_is_the_zero_threshold_of_the_exact_program(case):
    """Clarabel (independent) finds zero optimal just above relu λ_max and not at 0.99 of it; so does solve_relu."""
    from . import reference

    p = helpers.teacher(n=60, d=4, P=8, seed=3) if case == "teacher" else helpers.breast_cancer(n=60, P=6)
    if case == "breast_cancer":  # a few columns (bias last) and their own patterns: small QPs
        X = p.X[:, -5:]
        p = p._replace(X=X, masks=cn.activation_masks(X, jax.random.normal(jax.random.key(0), (5, 6), X.dtype)))
    gated = float(cn.lam_max(p.X, p.y, p.masks, loss=p.loss))
    top = float(cn.lam_max(p.X, p.y, p.masks, loss=p.loss, model="relu"))
    assert 0 < top <= gated * (1 + 1e-12)
    Y = np.asarray(p.y)[:, None]
    zero = float(cn.losses.get_loss(p.loss).value(jnp.zeros_like(jnp.asarray(Y)), jnp.asarray(Y), Y.shape[0]))
    above = reference.clarabel_relu(p.X, Y, p.masks, top * (1 + 1e-6), p.loss)
    below = reference.clarabel_relu(p.X, Y, p.masks, top * 0.99, p.loss)
    assert abs(above - zero) <= 1e-7 * zero
    assert below < zero - 1e-9 * zero, (below, zero)
    tol = 1e-10
    at = cn.solve_relu(p.X, p.y, p.masks, top * 1.01, loss=p.loss, tol=tol, constraint_tol=tol)
    assert all(float(jnp.max(jnp.abs(w))) == 0.0 for w in at.weights)
    near = cn.solve_relu(p.X, p.y, p.masks, top * (1 + 1e-6), loss=p.loss, tol=tol, constraint_tol=tol)
    assert abs(float(near.objective) - zero) <= 10 * tol * max(float(cn.certificates.objective_unit(p.y, p.loss)), zero)
    inside = cn.solve_relu(p.X, p.y, p.masks, top * 0.99, loss=p.loss, tol=tol, constraint_tol=tol)
    assert float(inside.objective) < zero - 1e-9 * zero
    assert max(float(jnp.max(jnp.abs(w))) for w in inside.weights) > 1e-4
    assert abs(float(inside.objective) - below) <= 1e-6 * abs(below)


def test_relu_lam_max_refuses_what_it_cannot_do(prob):
    with pytest.raises(ValueError, match="model must be 'gated' or 'relu'"):
        cn.lam_max(prob.X, prob.y, prob.masks, model="mlp")
