"""Peer adapters for benchmarks/bench_peers.py (run in worker subprocesses)."""
