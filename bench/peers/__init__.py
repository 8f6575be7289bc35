"""Harness for benchmarking our supervision tree beside supervisord, circus and procmon.

``envs`` builds each peer's own virtualenv, ``child_prog`` is the one child program every
supervisor runs, ``daemons`` launches and stops each supervisor as a daemon, ``driver`` is the
stdlib-only client (status queries, event subscribers) run under each peer's interpreter, and
``harness`` holds what the benchmarks share (the datagram hub, trials, cleanup).
"""
