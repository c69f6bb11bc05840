"""Benchmarks: vswitch measured against kernel baselines in the same run (TESTING.md)."""
