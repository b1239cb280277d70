"""Solver settings: one validated, immutable options object per solver, checked when it is built.

    solve_gated(..., options=GatedOptions(...))              R-FISTA, its Newton polish and its stall rule
    solve_relu(..., method="al", options=ALOptions(...))     the augmented Lagrangian (and its subproblems)
    solve_relu(..., method="admm", options=ADMMOptions(...)) ADMM, its CG, Nyström sketch and polish

Every field is a Python number or bool: options are static (hashable), so changing one recompiles the solver,
and a bad value raises a ValueError naming the field when the object is built, before any work.
"""

from __future__ import annotations

import equinox as eqx

__all__ = [
    "FistaOptions",
    "NewtonOptions",
    "PolishOptions",
    "StallOptions",
    "WorkingSetOptions",
    "GatedOptions",
    "ALOptions",
    "ADMMOptions",
    "check_options",
]


def _check(name: str, value, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    """value within [low, high] (open ends where asked) and an integer when asked, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    if value != value or (low is not None and (value < low or (low_open and value == low))):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}; got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}; got {value!r}")


class FistaOptions(eqx.Module):
    """R-FISTA's line search: shrink by at least `backtrack` on a rejected step (at most `max_backtracks`
    times), grow by `growth` after an accepted step whose measured curvature times η is below `slack`."""

    backtrack: float = 0.5
    growth: float = 1.25
    slack: float = 0.8
    max_backtracks: int = 40

    def __check_init__(self):
        _check("backtrack", self.backtrack, low=0, high=1, low_open=True, high_open=True)
        _check("growth", self.growth, low=1)
        _check("slack", self.slack, low=0, high=1, low_open=True)
        _check("max_backtracks", self.max_backtracks, low=1, integer=True)


class NewtonOptions(eqx.Module):
    """The active-set Newton–CG polish (`convexnn.solvers.newton`).

    Attributes:
        newton_steps: Newton steps per polish at most; cg_steps: CG iterations per Newton step at most.
        cg_rtol: forcing term, CG stops at ‖r‖ ≤ min(cg_rtol, ‖∇φ‖/‖∇φ₀‖)·‖∇φ‖ (inexact Newton).
        cg_rtol_kernel: the same with the sample-space preconditioner (its CG steps are cheap, its Newton
            steps a factorization each, so fewer, more exact steps).
        armijo: the sufficient-decrease constant; max_halvings: a step shortened this often means the active
            set is wrong, and the polish hands back to proximal gradient.
        kernel_cg_steps: use the sample-space preconditioner when building it costs at most this many CG
            steps in flops, (n²P + n³/3) ≤ kernel_cg_steps · 4ndP (0: never).
        rebuild_preconditioner: per Newton step; False: once per polish, from its starting point (a stale
            preconditioner is still a preconditioner: CG stays exact, only its step count can grow).
    """

    newton_steps: int = 10
    cg_steps: int = 100
    cg_rtol: float = 0.3
    cg_rtol_kernel: float = 1e-3
    armijo: float = 1e-4
    max_halvings: int = 12
    kernel_cg_steps: float = 32.0
    rebuild_preconditioner: bool = True

    def __check_init__(self):
        _check("newton_steps", self.newton_steps, low=0, integer=True)
        _check("cg_steps", self.cg_steps, low=0, integer=True)
        _check("cg_rtol", self.cg_rtol, low=0, high=1, low_open=True)
        _check("cg_rtol_kernel", self.cg_rtol_kernel, low=0, high=1, low_open=True)
        _check("armijo", self.armijo, low=0, high=1, low_open=True, high_open=True)
        _check("max_halvings", self.max_halvings, low=0, integer=True)
        _check("kernel_cg_steps", self.kernel_cg_steps, low=0)
        if not isinstance(self.rebuild_preconditioner, bool):
            raise ValueError(f"rebuild_preconditioner must be a bool; got {self.rebuild_preconditioner!r}")


class PolishOptions(eqx.Module):
    """When to try a Newton polish: after `min_phase` R-FISTA iterations (doubling after a polish that did not
    cut the gap tenfold) once the non-zero groups have not changed for `stable_for` iterations."""

    min_phase: int = 25
    stable_for: int = 10
    newton: NewtonOptions = NewtonOptions()

    def __check_init__(self):
        _check("min_phase", self.min_phase, low=1, integer=True)
        _check("stable_for", self.stable_for, low=0, integer=True)
        if not isinstance(self.newton, NewtonOptions):
            raise ValueError(f"newton must be a NewtonOptions; got {type(self.newton).__name__}")


class StallOptions(eqx.Module):
    """Stop with STALLED when, over `window` iterations, the best objective fell by less than `rel_eps`
    epsilons times its rounding scale (`fista.rounding_scale`) and the best gap did not halve."""

    window: int = 200
    rel_eps: float = 64.0

    def __check_init__(self):
        _check("window", self.window, low=1, integer=True)
        _check("rel_eps", self.rel_eps, low=0)


def _check_kind(name: str, value, kind: type) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}; got {type(value).__name__}")


class WorkingSetOptions(eqx.Module):
    """Working-set solves (`convexnn.solvers.working_set`): used when there are at least `min_patterns` patterns.

    Attributes:
        min_patterns: the fewest patterns P at which `solve_gated` solves on working sets (below, on all P).
        capacity, growth: the static set sizes capacity · growth^k below P, then P. Each size is one more
            compiled stage; growth 2 keeps a set within twice the support it holds (at 20000×100, P = 8192, a
            16-λ path took 214 s with growth 2 and 310 s with 4, whose small-λ end ran in sets of 2048 for 385
            non-zero patterns), at about twice the first call's compile time (benchmarks/results/working_sets.md).
        fill, hold: a stage hands over to the next when the non-zero patterns fill more than the fraction `fill`
            of its set; inside an inner solve, once they have done so for `hold` iterations in a row (the first
            iterates of proximal gradient overshoot the solution's support, often to the whole set, for tens of
            iterations).
        stage_steps: outer steps of a stage at most before the next (larger) set takes over.
        inner_tol: an inner solve stops at this fraction of the whole program's relative gap at its start (at least
            of `tol`); the certificate is always the whole program's gap.
    """

    min_patterns: int = 512
    capacity: int = 128
    growth: int = 2
    fill: float = 0.75
    hold: int = 25
    stage_steps: int = 10
    inner_tol: float = 0.25

    def __check_init__(self):
        _check("min_patterns", self.min_patterns, low=1, integer=True)
        _check("capacity", self.capacity, low=1, integer=True)
        _check("growth", self.growth, low=2, integer=True)
        _check("fill", self.fill, low=0, high=1, low_open=True)
        _check("hold", self.hold, low=0, integer=True)
        _check("stage_steps", self.stage_steps, low=1, integer=True)
        _check("inner_tol", self.inner_tol, low=0, high=1, low_open=True)


class GatedOptions(eqx.Module):
    """`solve_gated`'s settings: R-FISTA's line search, when and how to polish, when to call it stalled, and
    when to solve on working sets (None: never)."""

    fista: FistaOptions = FistaOptions()
    polish: PolishOptions = PolishOptions()
    stall: StallOptions = StallOptions()
    working_set: WorkingSetOptions | None = WorkingSetOptions()

    def __check_init__(self):
        _check_kind("fista", self.fista, FistaOptions)
        _check_kind("polish", self.polish, PolishOptions)
        _check_kind("stall", self.stall, StallOptions)
        if self.working_set is not None:
            _check_kind("working_set", self.working_set, WorkingSetOptions)


class ALOptions(eqx.Module):
    """The augmented Lagrangian's settings: ρ starts at rho0/N and grows by `growth` (at most to
    rho_max_eps/(N·eps)) after an outer step that did not cut the violation by `shrink`.

    Attributes:
        rho0, growth, shrink: the penalty schedule above. From a feasible start (the default zero) the first
            step's violation cannot have fallen, so ρ grows once there.
        rho_max_eps: ρ ≤ rho_max_eps/(N·eps): beyond it the penalty's gradient carries ρ × the rounding of
            X W, which swamps λ in the subproblems (float32: N·ρ ≤ 8.4e3).
        stall_window, stall_rel_eps: STALLED when, over `stall_window` outer steps, the best certified gap
            has not halved, the lowest objective has not fallen by `stall_rel_eps` epsilons of its rounding
            and the violation has not halved.
        inner_tol0: the first subproblem's tolerance (it tightens tenfold per outer step).
        subproblem: the subproblems' R-FISTA and polish. On rows of one device with n ≤ 1024 the polish's
            preconditioner takes the loss's coupling in sample space and is rebuilt at every Newton step
            whatever `rebuild_preconditioner` says (the hinge's active rows change between steps; a stale one
            cost CG twice the iterations on diabetes 300×10×60, λ = 1e-2: 10 142 against 4 558). Elsewhere it
            is block Jacobi, built once per polish (a build costs tens of CG steps and rebuilding saved none).
        working_set: a `WorkingSetOptions` to solve on working sets from `min_patterns` patterns on
            (`convexnn.solvers.relu_working_set`: the AL on a gathered set, zero blocks certified by cone
            projections; rows of one device and the group penalty; not resumable), or None (off, the default).
    """

    rho0: float = 100.0
    growth: float = 10.0
    rho_max_eps: float = 1e-3
    stall_window: int = 5
    stall_rel_eps: float = 64.0
    shrink: float = 0.25
    inner_tol0: float = 1e-3
    subproblem: GatedOptions = GatedOptions(polish=PolishOptions(newton=NewtonOptions(rebuild_preconditioner=False)))
    working_set: WorkingSetOptions | None = None

    def __check_init__(self):
        _check("rho0", self.rho0, low=0, low_open=True)
        if self.working_set is not None:
            _check_kind("working_set", self.working_set, WorkingSetOptions)
        _check("growth", self.growth, low=1)
        _check("rho_max_eps", self.rho_max_eps, low=0, low_open=True)
        _check("stall_window", self.stall_window, low=1, integer=True)
        _check("stall_rel_eps", self.stall_rel_eps, low=0)
        _check("shrink", self.shrink, low=0, high=1, low_open=True)
        _check("inner_tol0", self.inner_tol0, low=0, low_open=True)
        _check_kind("subproblem", self.subproblem, GatedOptions)


class ADMMOptions(eqx.Module):
    """ADMM's settings. `rho=None` picks ρ from the data; `rank=0` or `precondition=False` turns Nyström off.

    Attributes:
        rho, rho_s: the penalties of u = v and of the cone constraints G u = s (None: from the data, ρ_s as
            ρ / mean eig(XᵀX)); residual balancing rescales each by 2 when one residual exceeds the other by
            `balance`.
        cg_rtol, cg_max_steps: the u-step's CG; rank, precondition: its Nyström preconditioner.
        relaxation: over-relaxation α ∈ [1, 2) (Boyd et al. §3.4.3); 1 is plain ADMM.
        split_loss: also split the prediction z = F u so that the loss enters through its prox (None: for
            every loss but the squared one, whose u-step takes the loss exactly).
        polish_every, polish_backoff, polish_budget: an active-set polish after `polish_every` ADMM steps;
            each one that fails waits max(polish_every, polish_backoff × steps so far) more, and may spend
            `polish_budget` iterations.
        seed: the Nyström sketch's random seed.
        slow_window, slow_margin: stop early, status SLOW, when the stopping rule's distance d =
            max(gap / (tol · max(1, |objective|)), violation / constraint_tol) (met at d ≤ 1; its lowest value so
            far) fell over the last `slow_window` iterations at a geometric rate that needs more than `slow_margin`
            times the iterations left to reach 1 (ADMM's linear tail can need 10⁵ steps); 0 turns it off.
    """

    rho: float | None = None
    rho_s: float | None = None
    cg_rtol: float = 1e-3
    cg_max_steps: int = 50
    rank: int = 20
    precondition: bool = True
    balance: float = 10.0
    relaxation: float = 1.6
    split_loss: bool | None = None
    polish_every: int = 50
    polish_backoff: float = 0.25
    polish_budget: int = 400
    seed: int = 0
    slow_window: int = 5000
    slow_margin: float = 5.0

    def __check_init__(self):
        for name in ("rho", "rho_s"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), low=0, low_open=True)
        _check("cg_rtol", self.cg_rtol, low=0, low_open=True)
        _check("cg_max_steps", self.cg_max_steps, low=0, integer=True)
        _check("rank", self.rank, low=0, integer=True)
        _check("balance", self.balance, low=1)
        _check("relaxation", self.relaxation, low=1, high=2, high_open=True)
        _check("polish_every", self.polish_every, low=1, integer=True)
        _check("polish_backoff", self.polish_backoff, low=0)
        _check("polish_budget", self.polish_budget, low=0, integer=True)
        _check("seed", self.seed, integer=True)
        _check("slow_window", self.slow_window, low=0, integer=True)
        _check("slow_margin", self.slow_margin, low=0)
        for name in ("precondition", "split_loss"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "split_loss" and value is None)):
                raise ValueError(f"{name} must be a bool; got {value!r}")


def check_options(options, kind: type):
    """`options` if it is a `kind` (None: `kind()`), else a ValueError naming the argument."""
    if options is None:
        return kind()
    if not isinstance(options, kind):
        raise ValueError(f"options must be a {kind.__name__} here; got {type(options).__name__}")
    return options
