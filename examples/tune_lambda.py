"""Choose λ by gradient descent on a validation loss, differentiating through the convex solve.

    log λ ← log λ − η · d/d(log λ) [ mean_val (ŷ(W*(λ)) − y)² ],   W*(λ) = argmin of the gated program

The derivative of W*(λ) comes from implicit differentiation of its optimality conditions (one linear
solve per gradient), never from unrolling the solver. Run: python examples/tune_lambda.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import convexnn as cn

jax.config.update("jax_enable_x64", True)


def main(steps: int = 12, learning_rate: float = 4.0) -> None:
    X, y = load_diabetes(return_X_y=True)
    X = np.hstack([(X - X.mean(0)) / X.std(0), np.ones((X.shape[0], 1))])
    y = (y - y.mean()) / y.std()
    Xtr, Xva, ytr, yva = (jnp.asarray(a) for a in train_test_split(X, y, test_size=0.3, random_state=0))
    gates = cn.sample_gates(jax.random.key(0), X.shape[1], 64, dtype=jnp.float64)
    mtr, mva = cn.activation_masks(Xtr, gates), cn.activation_masks(Xva, gates)

    def validation_loss(log_lam):
        sol = cn.solve_gated(Xtr, ytr, mtr, jnp.exp(log_lam), tol=1e-10)
        return jnp.mean((cn.operators.gated_forward(Xva, mva, sol.weights) - yva) ** 2), sol

    value_and_grad = jax.jit(jax.value_and_grad(validation_loss, has_aux=True))
    log_lam = jnp.log(cn.lam_max(Xtr, ytr, mtr) * 1e-3)
    print(f"{'step':>4} {'λ':>10} {'val MSE':>10} {'d/dlogλ':>10} {'neurons':>8} {'gap':>9}")
    start = time.perf_counter()
    for step in range(steps + 1):
        (loss, sol), grad = value_and_grad(log_lam)
        neurons = int(jnp.sum(cn.prox.group_norms(sol.weights) > 0))
        print(
            f"{step:>4} {float(jnp.exp(log_lam)):>10.3g} {float(loss):>10.5f} {float(grad):>10.4f} {neurons:>8} "
            f"{float(sol.gap):>9.2g}"
        )
        log_lam = log_lam - learning_rate * grad
    print(f"{steps + 1} solves with gradients in {time.perf_counter() - start:.1f} s (first includes compilation)")


if __name__ == "__main__":
    main()
