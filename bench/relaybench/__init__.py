"""Helpers for bench/bench_relay.py: a log-emitting task for a real target and a lean
wss:// client process. Not imported by the project itself."""
