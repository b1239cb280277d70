"""Active-set Newton polish: Newton–PCG on the groups a first-order method has identified as non-zero.

With S the set of non-zero groups, the program restricted to {W : W_g = 0 for g ∉ S}

    φ(W) = F(K W) + λ Σ_{g∈S} ‖W_g‖₂

is smooth near any point with every ‖W_g‖ > 0, with Hessian

    H = Kᵀ ∇²F K + λ ⊕_g (I − ŵ_g ŵ_gᵀ) / ‖W_g‖,      ŵ_g = W_g / ‖W_g‖.

Proximal gradient converges at a rate set by the conditioning of H, which at small λ is hopeless: the
λ/‖W_g‖ curvature that holds the null space of K is tiny. Newton's method does not care, provided its
linear systems are solved accurately. They are solved by preconditioned CG with

    P = Kᵀ ∇²F K + ⊕_g (λ / ‖W_g‖) I        (the iteratively-reweighted least-squares majorant of H),

which differs from H by a rank-|S| positive term, so P⁻¹H has all but |S| eigenvalues equal to one and
the rest in (0, 1]: CG converges in a few iterations. The objective applies P⁻¹ in sample space by
Woodbury when n·c is small (see `GatedObjective.newton_preconditioner`); otherwise CG runs
unpreconditioned. Each Newton step ends with an Armijo backtracking line search on φ. Whether S was
right is the caller's business: it measures the full duality gap at the result.

Each polish is a loop of Newton steps run by the solvers' one driver (`_loop.iterate`); CG is `linalg.pcg`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int, PyTree, Scalar

from .. import prox
from ..linalg import pcg
from ..options import NewtonOptions
from ..solution import RUNNING, Status
from ._loop import iterate
from .objectives import CompositeSmooth

__all__ = ["newton_polish", "restricted_newton_system", "kernel_is_worth_it", "armijo_search", "step_outcome"]


def _vdot(a: Array, b: Array) -> Scalar:
    return jnp.sum(a * b)


def kernel_is_worth_it(obj: CompositeSmooth, W: Array, opts: NewtonOptions) -> bool:
    """Static: whether the objective's preconditioner pays off (e.g. c Cholesky factorizations of n×n)."""
    return obj.newton_preconditioner_pays(W, opts.kernel_cg_steps)


def restricted_newton_system(
    obj: CompositeSmooth,
    lam: Scalar,
    W: Float[Array, "p d c"],
    img: object,
    active: Bool[Array, "p c"],
    use_kernel: bool,
) -> tuple[Array, Callable[[Array], Array], Callable[[Array], Array] | None, PyTree, Array]:
    """∇φ, v ↦ ∇²φ v and (optionally) v ↦ P⁻¹v at W, for φ restricted to the groups in `active`.

    The Hessian acts as the identity on the inactive groups, so the system is well posed on all of
    (P, d, c); every output is zero there except the identity's. Also returns the loss gradient ∇F and
    Kᵀ∇F on all groups, from which the caller can certify W.
    """
    dtype = W.dtype
    zero = jnp.zeros((), dtype)
    mask = active[:, None, :]
    norms = prox.group_norms(W)
    safe = jnp.where(norms > 0, norms, 1)[:, None, :]
    unit = W / safe
    grad = obj.grad(img)
    Ktg = obj.transpose(grad)
    g = jnp.where(mask, Ktg + lam * unit, zero)

    # The norm's curvature λ (v − ŵ⟨ŵ, v⟩)/‖W_g‖ with the d axis last: XLA's CPU fuses ⟨ŵ, v⟩ over a middle
    # axis into its consumer several times slower.
    unit_t, scale_t = jnp.moveaxis(unit, 1, 2), jnp.moveaxis(lam / safe, 1, 2)

    def hess(v):
        v_on = jnp.where(mask, v, zero)
        curv = obj.transpose(obj.hvp(img, obj.apply(v_on)))
        v_t = jnp.moveaxis(v_on, 1, 2)
        reg = jnp.moveaxis(scale_t * (v_t - unit_t * jnp.sum(unit_t * v_t, axis=-1, keepdims=True)), 2, 1)
        return jnp.where(mask, curv + reg, v)

    precondition = None
    if use_kernel:
        precondition = obj.newton_preconditioner(img, _preconditioner_weights(lam, norms, active), unit)
    return g, hess, precondition, grad, Ktg


def _preconditioner_weights(lam: Scalar, norms: Array, active: Bool[Array, "p c"]) -> Array:
    """a = ‖W_g‖/λ on the active groups (0 elsewhere): the norm's isotropic curvature is 1/a."""
    return jnp.where(active & (lam > 0), norms / jnp.where(lam > 0, lam, 1), 0)


class _NewtonCarry(NamedTuple):
    W: Array
    mask: Bool[Array, "p 1 c"]
    img: object
    phi: Scalar
    grad_norm0: Scalar
    steps: Int[Array, ""]
    iterations: Int[Array, ""]  # spent: 1 + CG iterations per Newton step
    flat: Int[Array, ""]  # consecutive steps that lowered φ by no more than its rounding
    status: Int[Array, ""]  # RUNNING until a step says stop (then CONVERGED: the polish has done its part)


def _newton_direction(obj, lam, c: _NewtonCarry, opts: NewtonOptions, budget, tol, use_kernel, precondition0):
    """(∇φ, ‖∇φ‖, the restarted ‖∇φ₀‖, the PCG direction, its slope, CG steps, whether W is certified)."""
    dtype = c.W.dtype
    g, hess, precondition, grad, Ktg = restricted_newton_system(
        obj, lam, c.W, c.img, c.mask[:, 0, :], use_kernel and precondition0 is None
    )
    if precondition0 is not None:
        precondition = precondition0
    gnorm = jnp.sqrt(_vdot(g, g))
    certified = obj.gap(lam, c.W, c.img, grad, Ktg) <= tol * jnp.maximum(1, jnp.abs(c.phi))
    grad_norm0 = jnp.where(c.steps == 0, gnorm, c.grad_norm0)
    forcing = opts.cg_rtol_kernel if use_kernel else opts.cg_rtol
    rtol = jnp.minimum(forcing, gnorm / jnp.maximum(grad_norm0, jnp.finfo(dtype).tiny))
    cg_budget = jnp.where(certified, 0, jnp.minimum(opts.cg_steps, budget - c.iterations - 1))
    direction, k = pcg(hess, -g, rtol, cg_budget, precondition)
    slope = _vdot(g, direction)  # < 0 for a descent direction
    direction = jnp.where(slope < 0, direction, -g)
    slope = jnp.where(slope < 0, slope, -gnorm * gnorm)
    return g, gnorm, grad_norm0, direction, slope, k, certified


def _line_search(obj, lam, c: _NewtonCarry, direction, slope, opts: NewtonOptions):
    """Armijo backtracking along a path that sets to zero the groups a step would turn past the origin.

    Returns (W, mask, image, φ, halvings) at the accepted step."""
    zero = jnp.zeros((), c.W.dtype)

    # A group that the step would turn past the origin wants to be zero; the smooth model cannot say so
    # (‖·‖ is not smooth there), so the search path bends: such groups are set to zero.
    def trial(alpha):
        W_try = c.W + alpha * direction
        keep = c.mask & (jnp.sum(W_try * c.W, axis=1, keepdims=True) > 0)
        W_try = jnp.where(keep, W_try, zero)
        img_try = obj.apply(W_try)
        return W_try, keep, img_try, _phi(obj, lam, W_try, img_try)

    (W_new, keep, img_new, val), h = armijo_search(trial, c.phi, slope, opts)
    return W_new, keep, img_new, val, h


def armijo_search(trial: Callable[[Scalar], tuple], phi: Scalar, slope: Scalar, opts: NewtonOptions) -> tuple:
    """Backtracking from α = 1: halve α until trial(α)'s last output, φ there, is ≤ φ + armijo·α·slope plus
    φ's rounding (near the optimum φ moves by less than its rounding while ∇φ still falls), at most
    `max_halvings` times. Returns (trial(α), halvings)."""
    rounding = 4 * jnp.finfo(phi.dtype).eps * jnp.abs(phi)

    def cond(lc):
        alpha, out, h = lc
        return (out[-1] > phi + opts.armijo * alpha * slope + rounding) & (h < opts.max_halvings)

    def body(lc):
        alpha, _, h = lc
        alpha = alpha / 2
        return alpha, trial(alpha), h + 1

    one = jnp.ones((), phi.dtype)
    _, out, h = lax.while_loop(cond, body, (one, trial(one), jnp.zeros((), jnp.int32)))
    return out, h


def step_outcome(c, val: Scalar, h, gnorm: Scalar, lam: Scalar, active_count, certified, opts: NewtonOptions):
    """(improved, flat, steps, status) after a Newton step from carry `c` (its φ, flat count, steps) to φ = val:
    kept when φ did not rise beyond rounding; the polish goes on (RUNNING) unless the search needed all its
    halvings, two steps were flat, ‖∇φ‖ was at rounding level (each block's gradient is a sum of terms of size
    ~λ), the point was certified, or `newton_steps` are done (then CONVERGED: the polish has done its part)."""
    dtype = c.phi.dtype
    eps = jnp.finfo(dtype).eps
    improved = (val <= c.phi + 4 * eps * jnp.abs(c.phi)) & jnp.isfinite(val)
    flat = jnp.where(val < c.phi, 0, c.flat + 1)
    g_floor = 16 * eps * jnp.maximum(lam, jnp.finfo(dtype).tiny) * jnp.sqrt(active_count.astype(dtype) + 1)
    going = improved & (h < opts.max_halvings) & (flat < 2) & (gnorm > g_floor) & ~certified
    steps = c.steps + 1
    status = jnp.where(going & (steps < opts.newton_steps), RUNNING, Status.CONVERGED).astype(jnp.int32)
    return improved, flat, steps, status


def _phi(obj, lam, W, img):
    return obj.value(img) + lam * prox.group_l1(W)


def newton_polish(
    obj: CompositeSmooth,
    lam: Scalar,
    W: Float[Array, "p d c"],
    active: Bool[Array, "p c"],
    opts: NewtonOptions,
    budget: Int[Array, ""],
    tol: Scalar | float = 0.0,
) -> tuple[Float[Array, "p d c"], Int[Array, ""]]:
    """Minimise φ over the groups in `active` (others held at zero) by damped Newton–PCG from W.

    Stops after `newton_steps` steps, when a step fails to lower φ (beyond rounding), when the line search
    had to shorten the step below 2^-max_halvings, when ‖∇φ‖ or two steps' progress in φ are at rounding
    level, when it reaches a point already certified (gap ≤ tol·max(1, |φ|)), or when `budget` iterations
    are spent. A Newton step costs 1 + its CG iterations (each one K and one Kᵀ).

    Returns:
        (W_polished, iterations spent).
    """
    dtype = W.dtype
    W = jnp.where(active[:, None, :], W, jnp.zeros((), dtype))
    use_kernel = kernel_is_worth_it(obj, W, opts)
    img0 = obj.apply(W)
    precondition0 = None
    if use_kernel and not opts.rebuild_preconditioner:
        norms0 = prox.group_norms(W)
        unit0 = W / jnp.where(norms0 > 0, norms0, 1)[:, None, :]
        precondition0 = obj.newton_preconditioner(img0, _preconditioner_weights(lam, norms0, active), unit0)

    def step(c: _NewtonCarry) -> _NewtonCarry:
        g, gnorm, grad_norm0, direction, slope, k, certified = _newton_direction(
            obj, lam, c, opts, budget, tol, use_kernel, precondition0
        )
        W_new, keep, img_new, val, h = _line_search(obj, lam, c, direction, slope, opts)
        improved, flat, steps, status = step_outcome(c, val, h, gnorm, lam, jnp.sum(c.mask), certified, opts)
        return _NewtonCarry(
            W=jnp.where(improved, W_new, c.W),
            mask=jnp.where(improved, keep, c.mask),
            img=jax.tree.map(lambda x, y: jnp.where(improved, x, y), img_new, c.img),
            phi=jnp.where(improved, val, c.phi),
            grad_norm0=grad_norm0,
            steps=steps,
            iterations=c.iterations + 1 + k,
            flat=flat,
            status=status,
        )

    init = _NewtonCarry(
        W=W,
        mask=active[:, None, :],
        img=img0,
        phi=_phi(obj, lam, W, img0),
        grad_norm0=jnp.ones((), dtype),
        steps=jnp.zeros((), jnp.int32),
        iterations=jnp.zeros((), jnp.int32),
        flat=jnp.zeros((), jnp.int32),
        status=jnp.asarray(RUNNING if opts.newton_steps > 0 else Status.CONVERGED, jnp.int32),
    )
    out = iterate(step, init, budget)
    return out.W, out.iterations
