"""Solvers: gated R-FISTA with Newton polish, the exact ReLU augmented Lagrangian and ADMM, one loop driver."""

from .gated import solve_gated as solve_gated
