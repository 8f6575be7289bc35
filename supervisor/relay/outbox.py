"""A session's bounded outbound queue, paced by the transport's producer signals.

Messages are written straight through while the transport accepts data. Once the transport
asks us to pause (its buffer is full because the browser is not reading), messages wait here,
at most ``limit`` of them and at most ``byte_limit`` bytes of them (their UTF-8 size). On
overflow the oldest ``event``/``log`` message is discarded and counted per target; a single
``dropped_count`` message per target is queued (rendered with the current totals when it is
finally written), so at most ``limit`` plus one message per target wait here. A ``target_list``
is a snapshot: a newer one replaces an older one still waiting here (in its place, counted in
``superseded``), so at most one waits. If what waits is only messages that must not be
dropped (state, results, audit, ...) and it is still over a bound, ``on_overflow`` is called
and the session is closed: a slow browser never holds relay memory hostage.

One message larger than ``byte_limit`` on its own still waits when nothing else does (a large
state must reach a browser that reads); behind other messages, such an ``event``/``log`` is
dropped (and counted) on arrival, and any other kind closes the session as above.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["Outbox", "DROPPABLE_KINDS", "SNAPSHOT_KIND"]

DROPPABLE_KINDS = frozenset({"event", "log"})
SNAPSHOT_KIND = "target_list"  # each one says everything: only the newest is worth sending


def _size(text: str) -> int:
    """The UTF-8 size of ``text`` (its length when it is ASCII, which is found in O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@implementer(IPushProducer)
class Outbox:
    """See the module docstring."""

    def __init__(
        self,
        send: Callable[[str], None],
        limit: int,
        *,
        render_dropped: Callable[[str], str],
        on_overflow: Callable[[], None],
        byte_limit: int,
    ) -> None:
        self._send = send
        self._limit = limit
        self._byte_limit = byte_limit
        #: UTF-8 bytes of the messages waiting here (``dropped_count`` ones are rendered later)
        self.pending_bytes = 0
        self._messages = 0  # queued entries that carry text (not the dropped_count markers)
        self._render_dropped = render_dropped
        self._on_overflow = on_overflow
        self._queue: collections.deque[list[Any]] = collections.deque()
        self._droppable = 0
        self._pending_dropped: set[str] = set()
        self._paused = False
        self._closed = False
        self._snapshot: list[Any] | None = None  # the queued target_list, if any
        #: older target_list messages replaced while waiting, never written
        self.superseded = 0
        self.dropped: dict[str, list[int]] = {}
        self.sent = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def paused(self) -> bool:
        return self._paused

    def put(self, kind: str, target_id: str | None, text: str) -> None:
        """Queue (or write straight through) one serialised message."""
        if self._closed:
            return
        if not self._paused and not self._queue:
            self._write(text)
            return
        size = _size(text)
        if kind == SNAPSHOT_KIND and self._snapshot is not None:
            self.pending_bytes += size - self._snapshot[3]
            self._snapshot[2] = text
            self._snapshot[3] = size
            self.superseded += 1
            self._fit_bytes()
            return
        droppable = kind in DROPPABLE_KINDS
        if droppable and target_id is not None and size > self._byte_limit and self._messages:
            self._count_drop(kind, target_id)  # it could never wait beside anything else
            return
        if len(self._queue) >= self._limit:
            if self._droppable:
                self._drop_oldest()
            elif droppable and target_id is not None:
                self._count_drop(kind, target_id)
                return
            else:
                self._overflow()
                return
        entry: list[Any] = [kind, target_id, text, size]
        self._queue.append(entry)
        self._messages += 1
        self.pending_bytes += size
        if kind == SNAPSHOT_KIND:
            self._snapshot = entry
        if droppable:
            self._droppable += 1
        self._fit_bytes()

    def _fit_bytes(self) -> None:
        """Drop the oldest droppable messages while over ``byte_limit``; overflow if none is
        left to drop and more than one message waits."""
        while self.pending_bytes > self._byte_limit and self._messages > 1:
            if not self._droppable:
                self._overflow()
                return
            self._drop_oldest()

    def _overflow(self) -> None:
        self._closed = True
        self._clear()
        self._on_overflow()

    def _clear(self) -> None:
        self._queue.clear()
        self._snapshot = None
        self._droppable = self._messages = self.pending_bytes = 0

    def note_dropped(self, target_id: str) -> None:
        """Make sure a ``dropped_count`` for ``target_id`` is on its way (coalesced)."""
        if self._closed:
            return
        if not self._paused and not self._queue:
            self._write(self._render_dropped(target_id))
            return
        if target_id in self._pending_dropped:
            return
        self._pending_dropped.add(target_id)
        self._queue.append(["dropped_count", target_id, None, 0])

    def _drop_oldest(self) -> None:
        for index, entry in enumerate(self._queue):
            if entry[0] in DROPPABLE_KINDS:
                del self._queue[index]
                self._droppable -= 1
                self._messages -= 1
                self.pending_bytes -= entry[3]
                self._count_drop(str(entry[0]), str(entry[1]))
                return

    def _count_drop(self, kind: str, target_id: str) -> None:
        counts = self.dropped.setdefault(target_id, [0, 0])
        counts[0 if kind == "event" else 1] += 1
        if target_id not in self._pending_dropped:
            self._pending_dropped.add(target_id)
            self._queue.append(["dropped_count", target_id, None, 0])

    def _write(self, text: str) -> None:
        self.sent += 1
        self._send(text)

    def _flush(self) -> None:
        while self._queue and not self._paused and not self._closed:
            entry = self._queue.popleft()
            kind, target_id, text, size = entry
            if entry is self._snapshot:
                self._snapshot = None
            if kind in DROPPABLE_KINDS:
                self._droppable -= 1
            if text is None:
                self._pending_dropped.discard(str(target_id))
                text = self._render_dropped(str(target_id))
            else:
                self._messages -= 1
                self.pending_bytes -= size
            self._write(str(text))

    # IPushProducer
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self._closed = True
        self._clear()
