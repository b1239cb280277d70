"""Cone decomposition: a gated solution split into a feasible point of the exact ReLU program."""

from __future__ import annotations

import numpy as np
import pytest

import convexnn as cn

from . import helpers


def test_cone_decomposition_is_feasible_with_the_same_predictions():
    p = helpers.teacher(n=200, d=6, P=20, seed=2)  # test_relu.py's teacher
    gated = cn.solve_gated(p.X, p.y, p.masks, 1e-2, tol=1e-10)
    dec = cn.cone_decompose(gated, p.X, p.masks)
    U, V = dec.weights
    assert float(dec.violation) <= 1e-9
    np.testing.assert_allclose(
        cn.operators.gated_forward(p.X, p.masks, U - V),
        cn.operators.gated_forward(p.X, p.masks, gated.weights),
        atol=1e-9,
    )
    assert float(dec.growth) >= 1.0
    np.testing.assert_allclose(float(dec.penalty_gated), float(cn.prox.group_l1(gated.weights)), rtol=1e-12)
    # The public two-argument form takes the masks solve_gated recorded.
    again = cn.cone_decompose(gated, p.X)
    np.testing.assert_array_equal(np.asarray(again.weights[0]), np.asarray(U))
    with pytest.raises(ValueError, match="masks must be given"):
        cn.cone_decompose(gated.weights, p.X)
    # The decomposed point is feasible for the exact program, so it cannot beat its optimum.
    relu_value = float(gated.objective) - 1e-2 * float(dec.penalty_gated) + 1e-2 * float(dec.penalty_relu)
    assert relu_value >= helpers.relu_optimum(p, 1e-2) * (1 - 1e-9)
