"""Benchmarks: each module's `run() -> dict` prints its figures and returns them."""
