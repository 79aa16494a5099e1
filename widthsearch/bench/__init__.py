"""Benchmarks for width search: tables of trained architectures used as ground truth."""
