"""The active-set Newton polish: its linear system against autodiff, and a stale preconditioner's result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convexnn import losses, prox
from convexnn.options import NewtonOptions
from convexnn.problem import Problem
from convexnn.solvers.newton import newton_polish, restricted_newton_system
from convexnn.solvers.objectives import AugmentedLagrangianObjective


def _al_objective(loss_name: str, c: int, seed: int = 3, n: int = 40, d: int = 5, P: int = 4):
    rng = np.random.default_rng(seed + c)
    X = rng.normal(size=(n, d))
    masks = X @ rng.normal(size=(d, P)) >= 0
    loss = losses.get_loss(loss_name)
    y = np.where(rng.random((n, c)) < 0.5, -1.0, 1.0) if loss_name == "logistic" else rng.normal(size=(n, c))
    data = Problem(X=jnp.asarray(X), masks=jnp.asarray(masks), y=jnp.asarray(y), loss=loss, N=n * c)
    gamma = np.maximum(rng.normal(size=(n, c, 2 * P)), 0)
    obj = AugmentedLagrangianObjective(problem=data, gamma=jnp.asarray(gamma), rho=jnp.asarray(0.3))
    W = rng.normal(size=(2 * P, d, c))
    return obj, W, rng


@pytest.mark.parametrize("loss_name,c", [("squared", 1), ("logistic", 1), ("squared", 3)])
def test_restricted_newton_system_is_the_hessian_of_phi(loss_name, c):
    """g and v ↦ Hv equal autodiff's gradient and Hessian-vector product of

        φ(W) = F(K W) + λ Σ_g ‖W_g‖₂

    on the active groups, and the identity (g = 0) on the others.
    """
    obj, W, rng = _al_objective(loss_name, c)
    lam = 0.05
    active = np.ones(W.shape[::2], bool)
    active[2, 0] = False
    W[2, :, 0] = 0.0
    mask = jnp.asarray(active)[:, None, :]

    def phi(w):
        w = jnp.where(mask, w, 0.0)
        return obj.value(obj.apply(w)) + lam * prox.group_l1(w)

    W = jnp.asarray(W)
    g, hess, _, _, _ = restricted_newton_system(obj, jnp.asarray(lam), W, obj.apply(W), jnp.asarray(active), False)
    v = jnp.asarray(rng.normal(size=W.shape))
    grad_ad = jnp.where(mask, jax.grad(phi)(W), 0.0)
    hv_ad = jnp.where(mask, jax.jvp(jax.grad(phi), (W,), (jnp.where(mask, v, 0.0),))[1], v)
    np.testing.assert_allclose(np.asarray(g), np.asarray(grad_ad), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(hess(v)), np.asarray(hv_ad), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("c", [1, 3])
def test_polish_with_a_stale_preconditioner_reaches_the_same_minimiser(c):
    """Building the block-Jacobi preconditioner once per polish (the AL's setting) changes CG's work, not
    the answer: both polishes end where the restricted gradient vanishes, at the same W."""
    obj, W, _ = _al_objective("squared", c, n=60, d=4, P=3)
    lam = jnp.asarray(0.02)
    W = jnp.asarray(W)
    active = jnp.ones(W.shape[::2], bool)
    g0, _, _, _, _ = restricted_newton_system(obj, lam, W, obj.apply(W), active, False)
    out = {}
    for rebuild in (True, False):
        opts = NewtonOptions(newton_steps=60, cg_steps=400, rebuild_preconditioner=rebuild)
        Wr, cost = newton_polish(obj, lam, W, active, opts, jnp.asarray(100_000))
        g, _, _, _, _ = restricted_newton_system(obj, lam, Wr, obj.apply(Wr), prox.group_norms(Wr) > 0, False)
        out[rebuild] = np.asarray(Wr)
        assert float(jnp.linalg.norm(g)) <= 1e-8 * float(jnp.linalg.norm(g0)), (rebuild, int(cost))
    np.testing.assert_allclose(out[False], out[True], rtol=1e-7, atol=1e-9)
