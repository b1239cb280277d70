"""Progress from inside the jitted loops: reported at the cadence, ending with the returned Solution's values,
printed with verbose, silent (and untraced) by default, the same results bit for bit, under jit, vmap and
shard_map (one report per cadence point, not one per device)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import progress

from . import helpers

EVERY = 7


@pytest.fixture(scope="module")
def prob():
    prob = helpers.teacher(n=90, d=5, P=10, seed=3)
    return prob, 0.05 * float(cn.lam_max(prob.X, prob.y, prob.masks))


@pytest.fixture(scope="module")
def relu_prob():
    prob = helpers.teacher(n=40, d=3, P=4, seed=7)
    return prob, 0.1 * float(cn.lam_max(prob.X, prob.y, prob.masks))


class Recorder(list):
    """A callback that keeps what it is given. One instance for the module: the callback is a static option,
    so a new function would compile a new program."""

    def __call__(self, p: progress.Progress) -> None:
        self.append(p)

    __hash__ = object.__hash__


RECORD = Recorder()


def recorder() -> tuple[list[progress.Progress], progress.Callback]:
    RECORD.clear()
    return RECORD, RECORD


def check_reports(seen: list[progress.Progress], sol: cn.Solution, every: int, solver: str) -> None:
    """In-loop reports cross successive multiples of `every`; the last call is the returned Solution."""
    *during, last = seen
    assert all(p.solver == solver and p.status is None and p.index == () for p in during)
    its = [p.iteration for p in during]
    assert its == sorted(set(its)) and all(0 < i < int(sol.iterations) for i in its)
    assert np.all(np.diff([0] + [i // every for i in its]) >= 1)  # each crossed a new multiple
    assert last.status == cn.Status(int(sol.status)) and last.iteration == int(sol.iterations)
    assert (last.objective, last.gap, last.violation, last.lam) == (
        float(sol.objective),
        float(sol.gap),
        float(sol.violation),
        float(sol.lam),
    )
    assert all(p.step > 0 for p in seen)


def assert_identical(a: cn.Solution, b: cn.Solution) -> None:
    for x, y in zip(
        jax.tree.leaves((a.weights, a.objective, a.gap, a.violation, a.iterations, a.status)),
        jax.tree.leaves((b.weights, b.objective, b.gap, b.violation, b.iterations, b.status)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gated_reports_every_multiple_and_ends_with_the_solution(prob):
    """Plain R-FISTA counts one per step, so it reports at exactly 7, 14, … below the final count."""
    prob, lam = prob
    seen, callback = recorder()
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-9, polish=False, verbose=EVERY, callback=callback)
    check_reports(seen, sol, EVERY, "gated")
    assert [p.iteration for p in seen[:-1]] == list(range(EVERY, int(sol.iterations), EVERY))
    assert int(sol.iterations) > 3 * EVERY
    # Every iterate's objective is at least the optimum, which is at least objective − gap at the end.
    assert all(p.objective >= float(sol.objective - sol.gap) for p in seen)
    assert all(p.gap >= 0 and p.violation == 0 for p in seen)
    assert_identical(sol, cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-9, polish=False))


def test_gated_with_polish_reports_past_each_multiple(prob):
    """A Newton polish advances the count by its CG steps: reports land at the first iterate past a multiple."""
    prob, lam = prob
    seen, callback = recorder()
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-10, verbose=EVERY, callback=callback)
    check_reports(seen, sol, EVERY, "gated")
    assert_identical(sol, cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-10))


def test_verbose_prints_one_line_per_report(prob, capsys):
    prob, lam = prob
    capsys.readouterr()
    sol = cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-9, polish=False, verbose=EVERY)
    lines = capsys.readouterr().out.splitlines()  # solve_gated waits for its callbacks before it returns
    assert len(lines) == len(range(EVERY, int(sol.iterations), EVERY)) + 1
    assert all(line.startswith("gated") for line in lines)
    assert f"it {EVERY:>6}" in lines[0] and lines[-1].endswith("converged")
    assert f"it {int(sol.iterations):>6}" in lines[-1]


def test_off_by_default_prints_nothing_and_traces_no_callback(prob, capsys):
    prob, lam = prob
    capsys.readouterr()
    cn.solve_gated(prob.X, prob.y, prob.masks, lam, polish=False)
    cn.solve_gated(prob.X, prob.y, prob.masks, lam, polish=False, verbose=0)
    jax.effects_barrier()
    assert capsys.readouterr().out == ""

    def program(**options):
        return str(jax.make_jaxpr(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam, **options))(lam))

    assert "debug_callback" not in program() and "debug_callback" not in program(verbose=False)
    assert "debug_callback" in program(verbose=True)


def test_options_are_checked():
    assert progress.monitor(False, None, "gated") is None
    assert progress.monitor(True, None, "gated").every == progress.DEFAULT_EVERY
    assert progress.monitor(False, print, "gated") == progress.Monitor(progress.DEFAULT_EVERY, print, "gated")
    assert progress.monitor(3, print, "gated").every == 3
    for verbose in (-1, 2.5, "yes"):
        with pytest.raises(ValueError, match="verbose must be"):
            progress.monitor(verbose, None, "gated")
    with pytest.raises(ValueError, match="callback must be"):
        progress.monitor(True, 3, "gated")


def test_under_jit_and_grad(prob):
    prob, lam = prob
    seen, callback = recorder()
    sol = jax.jit(lambda lam: cn.solve_gated(prob.X, prob.y, prob.masks, lam, polish=False, callback=callback))(lam)
    jax.effects_barrier()  # a caller's jit returns before its callbacks are flushed
    check_reports(seen, sol, progress.DEFAULT_EVERY, "gated")
    seen.clear()

    def objective(lam):
        return cn.solve_gated(prob.X, prob.y, prob.masks, lam, polish=False, verbose=5, callback=callback).objective

    grad = jax.grad(objective)
    assert np.isfinite(float(grad(jnp.asarray(lam))))
    jax.effects_barrier()
    assert seen and seen[-1].status == cn.Status.CONVERGED


def test_under_vmap_each_lane_reports_its_own_values(prob):
    """One host call per cadence point, the callback once per due lane (index = lane); stopped lanes are silent."""
    prob, lam = prob
    lams = jnp.asarray([0.3, 1.0, 3.0]) * lam
    seen, callback = recorder()

    def solve(lam, callback=None):
        return cn.solve_gated(prob.X, prob.y, prob.masks, lam, tol=1e-9, polish=False, verbose=EVERY, callback=callback)

    sols = jax.vmap(lambda lam: solve(lam, callback))(lams)
    jax.effects_barrier()
    assert len(set(np.asarray(sols.iterations))) > 1  # the lanes stop at different iterations
    for k in range(3):
        lane = [p for p in seen if p.index == (k,)]
        assert all(p.lam == float(lams[k]) for p in lane)
        check_reports([p._replace(index=()) for p in lane], jax.tree.map(lambda a: a[k], sols), EVERY, "gated")
        assert [p.iteration for p in lane[:-1]] == list(range(EVERY, int(sols.iterations[k]), EVERY))
    assert_identical(sols, jax.vmap(solve)(lams))
    # The batched program holds the same callbacks as the single one (vmap's default rule unrolls one per lane).
    count = [str(jax.make_jaxpr(f)(x)).count("debug_callback") for f, x in [(solve, lam), (jax.vmap(solve), lams)]]
    assert count[0] == count[1] > 0


def test_sharded_rows_report_once_per_cadence_point(prob):
    prob, lam = prob
    data = cn.shard_rows(jax.make_mesh((8,), ("data",), devices=jax.devices()[:8]), prob.X, prob.y, prob.masks)
    seen, callback = recorder()
    sol = cn.solve_gated(data, lam=lam, tol=1e-9, polish=False, verbose=EVERY, callback=callback)
    check_reports(seen, sol, EVERY, "gated")  # eight devices, but no iteration is reported twice
    assert [p.iteration for p in seen[:-1]] == list(range(EVERY, int(sol.iterations), EVERY))
    assert_identical(sol, cn.solve_gated(data, lam=lam, tol=1e-9, polish=False))


@pytest.mark.parametrize("mode", ["warm", "vmap"])
def test_path_reports_each_lam(prob, mode):
    """warm: one solve after the other, largest λ first; vmap: the λ side by side, index = position in lams."""
    prob, lam = prob
    lams = jnp.asarray([1.0, 3.0, 0.3]) * lam
    seen, callback = recorder()
    path = cn.solve_path(prob.X, prob.y, prob.masks, lams, mode=mode, polish=False, verbose=EVERY, callback=callback)
    ends = [p.lam for p in seen if p.status is not None]
    if mode == "vmap":  # every end once all λ have stopped, in lane order
        assert ends == [float(x) for x in lams] and all(p.status is not None for p in seen[-3:])
    else:  # one solve after the other, from the largest λ down
        assert ends == sorted(ends, reverse=True)
    for k in range(3):
        runs = [p for p in seen if p.lam == float(lams[k])]
        assert all(p.index == ((k,) if mode == "vmap" else ()) for p in runs)
        check_reports([p._replace(index=()) for p in runs], jax.tree.map(lambda a: a[k], path), EVERY, "gated")
    if mode == "warm":  # the solves do not interleave
        assert [p.lam for p in seen] == sorted((p.lam for p in seen), reverse=True)
    assert_identical(path, cn.solve_path(prob.X, prob.y, prob.masks, lams, mode=mode, polish=False))


@pytest.mark.parametrize("method", ["al", "admm"])
def test_relu_reports_and_ends_with_the_solution(relu_prob, method):
    prob, lam = relu_prob
    kw = dict(method=method, tol=1e-6, constraint_tol=1e-6, polish=False)
    seen, callback = recorder()
    sol = cn.solve_relu(prob.X, prob.y, prob.masks, lam, verbose=50, callback=callback, **kw)
    check_reports(seen, sol, 50, f"relu-{method}")
    assert len(seen) > 3 and any(p.violation > 0 for p in seen)
    assert seen[-1].step == float(sol.stats["rho"])  # the penalty ρ
    assert_identical(sol, cn.solve_relu(prob.X, prob.y, prob.masks, lam, **kw))


def test_sharded_relu_reports_once_per_cadence_point(relu_prob):
    prob, lam = relu_prob
    data = cn.shard_rows(jax.make_mesh((4,), ("data",), devices=jax.devices()[:4]), prob.X, prob.y, prob.masks)
    seen, callback = recorder()
    sol = cn.solve_relu(data, lam=lam, polish=False, tol=1e-6, constraint_tol=1e-6, verbose=50, callback=callback)
    check_reports(seen, sol, 50, "relu-al")
