"""Batched second-order solvers: linear algebra, objective, directions, step control."""
