"""Benchmarks: printed tables and JSON under bench/results/, never pass/fail timings."""
