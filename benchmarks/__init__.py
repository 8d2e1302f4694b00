"""Benchmarks: the measurements behind docs/RESULTS.md (``make bench`` runs benchmarks/run_all.py).

A package so that tests and run_all import its modules by name; each script still runs by path
(``python benchmarks/energy.py --help``). Targets come from backends.REGISTRY.
"""
