"""Writes held for the end of a reactor turn: what one turn sends to a reader is joined into
one write, however many messages it was."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

#: What a reader's held writes may reach before they are written at once, not only at the
#: turn's end (a relay session's frames, an IPC connection's pushes).
WRITE_BATCH_BYTES = 64_000


class Flushable(Protocol):
    def flush(self) -> None:
        """Write what is held."""


class EndOfTurn:
    """Calls ``flush()`` on everything handed to :meth:`add` during a reactor turn, at the
    end of that turn, with one delayed call for all of them."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiting: list[Flushable] = []
        self._call: Any = None

    def add(self, held: Flushable) -> None:
        """Have ``held`` flushed at the end of this turn (once per turn is enough)."""
        self._waiting.append(held)
        if self._call is None:
            self._call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        waiting, self._waiting = self._waiting, []
        for held in waiting:
            held.flush()
