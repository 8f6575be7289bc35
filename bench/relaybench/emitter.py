"""A task child for ``twistd supervisor-target`` that emits timestamped log lines on demand.

Use ``callable: "relaybench.emitter:factory"`` with ``bench/`` on PYTHONPATH. Environment:

- ``RELAYBENCH_GATE``: a file path. While the file exists the task logs ``RELAYBENCH_RATE``
  lines per second (paced against the wall clock every ``RELAYBENCH_TICK_MS``, default 1 ms),
  each carrying ``bench_w`` (the window id, the gate file's content) and ``bench_t``
  (``time.time()`` at emission) as log fields. When the gate file disappears the number of
  lines emitted in that window is written atomically to ``<gate>.emitted``.

Each ``ctx.logger.info`` becomes a LogRecord in the tree's log ring and a ``log`` push to
every IPC subscriber (the relay), which fans it out to the sessions as ``log`` messages.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import defer, task


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def factory(ctx: Any) -> None:
    rate = float(os.environ.get("RELAYBENCH_RATE", "1000"))
    tick = float(os.environ.get("RELAYBENCH_TICK_MS", "1")) / 1000
    gate = os.environ["RELAYBENCH_GATE"]
    info = ctx.logger.info
    ctx.mark_ready()
    window: str | None = None
    started = 0.0
    sent = 0
    last_beat = 0.0
    while not ctx.stopping:
        now = time.monotonic()
        if now - last_beat > 0.5:
            ctx.heartbeat()
            last_beat = now
        if os.path.exists(gate):
            if window is None:
                try:
                    with open(gate) as f:
                        window = f.read().strip() or "0"
                except OSError:
                    window = None
                started, sent = now, 0
            if window is not None:
                due = int((now - started) * rate) + 1
                while sent < due:
                    info("bench {bench_w} {bench_seq}", bench_w=window, bench_seq=sent,
                         bench_t=time.time())
                    sent += 1
        elif window is not None:
            _write_atomically(gate + ".emitted", f"{window} {sent}\n")
            window = None
        sleep = task.deferLater(ctx.clock, tick, lambda: None)
        await defer.DeferredList([sleep, ctx.cancellation], fireOnOneCallback=True,
                                 consumeErrors=True)
        if not sleep.called:
            sleep.cancel()
