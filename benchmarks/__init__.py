"""framechain's benchmarks (framechain bench, compare_checkouts.py)."""
