"""Settings of the whole test run."""

from __future__ import annotations

import signal

# A test run started in the background of a non-interactive shell (``make test &``) inherits
# SIGINT ignored, and so would every process it starts: the tests that stop a target, a demo
# or twistd with Ctrl-C need the signal at its default in those processes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
