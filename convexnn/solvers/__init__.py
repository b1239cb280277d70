"""Solvers: R-FISTA with Newton polish for the gated program."""

from .gated import solve_gated as solve_gated
