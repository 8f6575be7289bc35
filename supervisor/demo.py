"""Small task factories used by the demo tree and by examples."""

from __future__ import annotations

from twisted.internet import defer, task

from supervisor.tree.children import ChildContext


async def steady_worker(ctx: ChildContext) -> None:
    """Heartbeats, logs a line every few beats and stops when asked to."""
    beats = 0
    ctx.mark_ready()
    while not ctx.stopping:
        ctx.heartbeat()
        beats += 1
        if beats % 5 == 1:
            ctx.logger.info("processed batch {batch}", batch=beats)
        sleep = task.deferLater(ctx.clock, 1.0, lambda: None)
        await defer.DeferredList([sleep, ctx.cancellation], fireOnOneCallback=True, consumeErrors=True)
        if not sleep.called:
            sleep.cancel()


async def flaky_worker(ctx: ChildContext) -> None:
    """Runs for a moment, then fails on purpose so restarts and backoff can be watched."""
    ctx.logger.warn("flaky worker starting; it will fail shortly")
    await task.deferLater(ctx.clock, 1.5, lambda: None)
    raise RuntimeError("simulated failure")
