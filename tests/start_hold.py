"""A task child whose start holds the target's start-up (run by ``twistd`` in tests).

Its coroutine blocks before its first ``await`` — while the tree starts, before the reactor
runs — until ``release`` appears in ``$SUPERVISOR_TEST_HOLD`` (it writes ``holding`` there
first), so a test can signal the target at a moment it chooses.
"""

from __future__ import annotations

import os
import time

from twisted.internet import defer

from supervisor import ChildContext

#: longest the start is held if the test never releases it
HOLD_SECONDS = 60.0


async def hold_start(ctx: ChildContext) -> None:
    folder = os.environ["SUPERVISOR_TEST_HOLD"]
    open(os.path.join(folder, "holding"), "w").close()
    deadline = time.monotonic() + HOLD_SECONDS
    while not os.path.exists(os.path.join(folder, "release")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the program under test holding its start, not the test waiting
    ctx.mark_ready()
    await defer.DeferredList([ctx.cancellation], consumeErrors=True)
