"""Solvers that have no derivative rule say so when differentiated, instead of failing inside JAX's loops.

Implicit differentiation (`convexnn.solvers.implicit`) covers the gated program on one device (`solve_gated`
and gated `solve_path`). Differentiating any other solve would reach a `lax.while_loop`, which reverse-mode
autodiff cannot cross, and JAX's message names neither the solver nor a way out. `not_differentiable` wraps
a solve in a `jax.custom_jvp` whose rule raises that explanation as soon as a derivative is asked for
(`jax.grad`, `jax.vjp`, `jax.jvp`, under `jit` or not); evaluating it is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["not_differentiable"]


def not_differentiable(fn: Callable[..., Any], n_dynamic: int, what: str) -> Callable[..., Any]:
    """fn(*dynamic, *static) with the first `n_dynamic` (array) arguments guarded: their derivative raises."""
    message = (
        f"{what} is not differentiable: derivatives exist for solve_gated and gated solve_path on one device "
        "(implicit differentiation of the optimality conditions), not through this solver's loop. Differentiate "
        "a gated solve, or wrap the solution in jax.lax.stop_gradient if no derivative is needed."
    )

    def wrapped(*args: Any) -> Any:
        dynamic, static = args[:n_dynamic], args[n_dynamic:]

        @jax.custom_jvp
        def call(*dynamic):
            return fn(*dynamic, *static)

        @call.defjvp
        def _refuse(primals, tangents):
            raise ValueError(message)

        return call(*dynamic)

    return wrapped
