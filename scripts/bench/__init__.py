"""Helpers of scripts/bench_peers.py: backends and mounts (mounts.py), workloads (workloads.py), the table
(report.py). Imported as the package `bench` with scripts/ on sys.path."""
