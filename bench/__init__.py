"""devicegate benchmarks (see bench/RESULTS.md; entry point: python -m bench)."""
