"""Benchmarks of the generated service against hand-written baselines: python -m benchmarks."""
