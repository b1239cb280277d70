"""The one result type of every solver, and its status codes."""

from __future__ import annotations

import enum
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

__all__ = ["Status", "Solution"]


class Status(enum.IntEnum):
    """Why a solver stopped. Stable codes: append new ones, never renumber."""

    CONVERGED = 0  # the duality gap met the tolerance: the objective is certified
    MAX_ITERS = 1  # the iteration budget ran out first; the gap says how far off the objective may be
    NONFINITE = 2  # an iterate became non-finite (divergence); the last finite iterate is returned
    STALLED = 3  # objective and gap stopped improving at the dtype's precision before the gap met tol
    SLOW = 4  # still improving, but at its measured rate the budget would run out long before tol: stopped early


# Internal: a loop that has not stopped yet. Never leaves a solver.
RUNNING = -1


class Solution(eqx.Module):
    """A solver's result: weights and a certificate of how good they are.

    On a regularisation path every field gains a leading λ axis; `path[k]` is the solution at λ = path.lam[k].

    Attributes:
        weights: (P, d) for y of shape (n,), (P, d, c) for y of shape (n, c); a pair (U, V) of those for
            exact ReLU.
        objective: L(Σ_i D_i X w_i, y) + λ Ω(W) at `weights` (Ω the `penalty`).
        gap: a duality gap, ≥ 0: objective − optimum ≤ gap, certified by a dual feasible point. For exact
            ReLU it is the gap of the program whose cone constraints are relaxed by the point's own violations
            (a program the point is feasible for, whose optimum is ≤ the exact optimum): see `solve_relu`.
        violation: the relative cone-constraint violation max_j (−(2D_i − I) X u_i)_j₊ / max |X W| (exact
            ReLU); 0 for gated ReLU.
        iterations: work done, in iterations that each cost one product with X and one with Xᵀ:
            proximal-gradient steps plus Newton–CG steps.
        status: a `Status` code as an integer array (it jits, vmaps and shards).
        lam: the regularisation strength λ that was solved for.
        stats: solver-specific counters (e.g. ADMM steps and CG iterations), arrays like the rest.
        state: the solver's final loop state (in its internal units), which `init=` of the same solver
            accepts to resume the solve exactly; None for paths and row-sharded solves.
        penalty: the penalty solved with, "group" or "nuclear" (static; `to_network` reads it).
    """

    weights: PyTree[Float[Array, "..."]]
    objective: Float[Array, "*lam"]
    gap: Float[Array, "*lam"]
    violation: Float[Array, "*lam"]
    iterations: Int[Array, "*lam"]
    status: Int[Array, "*lam"]
    lam: Float[Array, "*lam"]
    stats: dict = eqx.field(default_factory=dict)
    state: Any = None
    penalty: str = eqx.field(static=True, default="group")

    def __getitem__(self, index: Any) -> Solution:
        """The solutions at `index` along the leading λ axis of a path: `path[k]` is the solve at λ = path.lam[k].

        Args:
            index: an integer k (then every field loses its λ axis), a slice, or an integer or boolean array
                over the path's m values of λ.

        Returns:
            a `Solution` with every array field, the weights and the stats indexed at `index`.

        Raises:
            ValueError: for a solution of a single λ (no leading axis to index).
            IndexError: for an index out of range of the path's m values.
        """
        m = np.shape(self.status)
        if not m:
            raise ValueError(
                "solution[k] picks one λ of a path (from solve_path, fields with a leading λ axis); "
                "this solution is for a single λ"
            )
        try:
            index = np.arange(m[0])[index]  # NumPy's bounds and shape checks; JAX indexing would clamp
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
            pass  # a traced index: JAX's indexing rules apply
        return jax.tree.map(lambda a: a[index], self)

    @property
    def converged(self) -> Any:
        """True where the duality gap met the tolerance."""
        return self.status == Status.CONVERGED

    @property
    def message(self) -> str:
        """Why the solver stopped, in a sentence, with its figures (a single λ; a path's `[k]` for one of them)."""
        status = np.asarray(self.status)
        if status.ndim:
            raise ValueError("message describes one solve; for a path take path[k].message")
        code, gap, iterations = Status(int(status)), float(self.gap), int(self.iterations)
        done = f"after {iterations} iterations, gap {gap:.3g}, violation {float(self.violation):.3g}"
        if code == Status.CONVERGED:
            return f"converged: the certificate met the tolerances {done}"
        if code == Status.MAX_ITERS:
            return f"max_iters: the iteration budget ran out {done}; the gap bounds the distance to the optimum"
        if code == Status.NONFINITE:
            return f"nonfinite: an iterate became non-finite {done} (the last finite one is returned)"
        if code == Status.STALLED:
            return f"stalled: objective and gap stopped improving at the dtype's precision {done}"
        projected = float(np.asarray(self.stats.get("projected_iterations", np.nan)))
        return (
            f"slow: stopped early {done}; at the rate measured over its last window the tolerances need about "
            f"{projected:.3g} more iterations, well past the budget (more max_iters, or method='al')"
        )

    def __repr__(self) -> str:
        leaves = [self.objective, self.gap, self.iterations, self.status]
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return f"Solution(<traced>, weights={jax.tree.map(lambda w: w.shape, self.weights)})"
        shapes = jax.tree.map(lambda w: f"{w.dtype}{list(w.shape)}", self.weights)
        status = np.asarray(self.status)
        if status.ndim == 0:
            name = Status(int(status)).name.lower()
            return (
                f"Solution(status={name}, objective={float(self.objective):.8g}, gap={float(self.gap):.3g}, "
                f"violation={float(self.violation):.3g}, iterations={int(self.iterations)}, "
                f"lam={float(self.lam):.4g}, weights={shapes})"
            )
        counts = {Status(int(s)).name.lower(): int((status == s).sum()) for s in np.unique(status)}
        return (
            f"Solution(batch={status.shape}, status={counts}, objective={np.asarray(self.objective)}, "
            f"gap_max={float(np.max(self.gap)):.3g}, iterations={np.asarray(self.iterations)}, weights={shapes})"
        )
