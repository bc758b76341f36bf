"""Benchmarks: each script prints a table, writes bench/results/<name>.json and compares with a baseline."""
