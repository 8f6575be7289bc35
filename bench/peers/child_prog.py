"""The one child program every supervisor (and the floor) runs, with ``python -S``.

argv: MODE NAME HUB. On start it takes ``time.monotonic()`` (system-wide CLOCK_MONOTONIC, so
comparable across processes), prints one line on stdout (its first output) and sends
``up NAME PID T`` to the harness's datagram socket HUB. ``crash`` then sends ``exit NAME PID T``
and exits with status 1 at once; ``hold`` waits for a signal.
"""
import os
import socket
import sys
import time

mode, name, hub = sys.argv[1], sys.argv[2], sys.argv[3]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
started = time.monotonic()
sys.stdout.write("up %s %d\n" % (name, os.getpid()))
sys.stdout.flush()
try:
    sock.sendto(("up %s %d %.9f" % (name, os.getpid(), started)).encode(), hub)
except OSError:
    pass
if mode == "crash":
    try:
        sock.sendto(("exit %s %d %.9f" % (name, os.getpid(), time.monotonic())).encode(), hub)
    except OSError:
        pass
    os._exit(1)
import signal  # noqa: E402

while True:
    signal.pause()
