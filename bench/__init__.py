"""Benchmarks: vswitch measured against kernel baselines in the same run (docs/testing.md)."""
