"""The one JSON encoding of every wire, and the newline-delimited framing of the Unix sockets.

:func:`dumps` is the JSON text of every message (WebSocket frames included): compact, UTF-8
rather than ``\\u`` escapes, and never ``NaN``/``Infinity``, which JSON does not have.
:func:`encode` is the same text as one NDJSON line; :func:`decode` refuses those constants,
numbers beyond a float's range (``1e999``), which would decode as infinities, and integers
beyond what 64 bits hold (:mod:`supervisor.wire.bounds`). With
``lone_surrogates="replace"`` (what a reader of pushes and answers asks for) every lone
surrogate a ``\\ud800``-style escape produces becomes U+FFFD: such strings are made
encodable where they enter, so no later :func:`encode` (a push fanned out, a log line, an
audit row) can fail on them. By default they are kept, for readers (registration) that
refuse them outright.

One object per line, ``\\n`` terminated, a ``\\r`` before it tolerated. Lines longer than the
receiver's ``max_line_bytes`` are never buffered past that size: the receiver is told through
:meth:`NDJSONReceiver.lineLengthExceeded` and (by default) the connection is closed.

Outbound data goes through :class:`OutboundQueue`, which registers as the transport's
streaming producer so that a peer that stops reading stops costing memory: once the transport
asks us to pause, lines wait in a queue of at most ``max_pending`` entries and
``max_pending_bytes`` bytes, and the oldest droppable ones are discarded (and counted) when it
is over either. One line larger than ``max_pending_bytes`` still waits when nothing else does;
behind other lines a droppable one that large is discarded on arrival. Given an
``at_end_of_turn`` hook, pushes written straight through are first held for the rest of the
reactor turn (at most :data:`WRITE_BATCH_BYTES` of them) and written joined; a response or
:meth:`OutboundQueue.close` writes them first, so lines leave in the order they were sent.
"""

from __future__ import annotations

import collections
import json
import math
import re
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from supervisor.wire.bounds import check_wire_int
from supervisor.wire.errors import WireError
from supervisor.wire.turns import WRITE_BATCH_BYTES

DEFAULT_MAX_LINE_BYTES = 65536

# an escape of a UTF-16 surrogate (``\\ud800``..``\\udfff``); pairs decode to one code point
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


#: the options of every message; used as it is only where ``json`` has no C accelerator
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _unencodable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


#: ``json``'s C encoder with the options of ``_ENCODER``, made once: ``JSONEncoder.encode``
#: makes a new one per call, which is most of the cost of a small message. No check for
#: circular references (what goes on a wire is decoded JSON or built here; a cycle ends in
#: ``RecursionError``).
_C_ENCODER = (json.encoder.c_make_encoder(None, _unencodable, json.encoder.encode_basestring,
                                          None, ":", ",", False, False, False)
              if json.encoder.c_make_encoder is not None else None)


def dumps(obj: Any) -> str:
    """Compact JSON text; ``ValueError`` for NaN and infinities."""
    if _C_ENCODER is None:
        return _ENCODER.encode(obj)
    return "".join(_C_ENCODER(obj, 0))


#: the JSON text of one ``str``, exactly as :func:`dumps` writes strings (the escaping
#: function ``JSONEncoder`` itself uses with ``ensure_ascii=False``); for texts built from pieces
quote: Callable[[str], str] = json.encoder.encode_basestring


def encode(obj: Any) -> bytes:
    """:func:`dumps` as one UTF-8 line, newline terminated."""
    return dumps(obj).encode("utf-8") + b"\n"


def loads(text: str) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, no float beyond range, no integer beyond
    :data:`~supervisor.wire.bounds.WIRE_INT_RANGE`; ``ValueError`` otherwise."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                      parse_int=check_wire_int)


def surrogate_escaped(raw: bytes) -> bool:
    """Whether encoded JSON ``raw`` holds a ``\\ud800``-style escape (its decoded strings may
    then hold lone surrogates)."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def decode(line: bytes, stage: str = "protocol_parse", *, lone_surrogates: str = "keep"
           ) -> Any:
    """Parse one line (without its terminator); any defect is a ``invalid_json`` WireError.

    ``lone_surrogates``: ``"keep"`` or ``"replace"`` (with U+FFFD, see module docstring)."""
    if not line.strip():
        raise WireError("invalid_json", stage, "request line is blank")
    try:
        text = line.decode("utf-8")
        value = loads(text)
        if lone_surrogates == "replace" and surrogate_escaped(line):
            return encodable(value)
        return value
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError("invalid_json", stage, f"request line is not valid JSON: {_short(e)}") from None


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (which UTF-8 cannot encode)."""
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


def encodable(value: Any) -> Any:
    """``value`` (decoded JSON) with each lone surrogate in its strings and keys replaced by
    U+FFFD, so that it always encodes as UTF-8."""
    if isinstance(value, str):
        return value if value.isascii() else _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [encodable(item) for item in value]
    if isinstance(value, dict):
        return {encodable(key): encodable(item) for key, item in value.items()}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class NDJSONReceiver(Protocol):
    """Split incoming bytes into lines with a hard size cap; subclasses handle lines."""

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    def __init__(self) -> None:
        self._buffer = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while True:
            if self.transport is not None and getattr(self.transport, "disconnecting", False):
                del self._buffer[:]
                return
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.max_line_bytes:
                del self._buffer[:]
                self.lineLengthExceeded()
                return
            line = bytes(self._buffer[start:end])
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self.lineReceived(line)
        del self._buffer[:start]
        if len(self._buffer) > self.max_line_bytes:
            del self._buffer[:]
            self.lineLengthExceeded()

    def lineReceived(self, line: bytes) -> None:
        raise NotImplementedError

    def lineLengthExceeded(self) -> None:
        self.transport.loseConnection()


@implementer(IPushProducer)
class OutboundQueue:
    """Bounded writer for one connection; see the module docstring for the overflow rule.

    A line sent with a ``drop_tag`` (a push) may be discarded on overflow, and
    ``on_drop(drop_tag)`` is then called; lines without one (responses) are never discarded.
    If only such lines are queued and the queue is still over a bound, the connection is
    closed instead of growing.
    """

    def __init__(
        self,
        transport: ITransport,
        max_pending: int,
        on_drop: Callable[[str], None] | None = None,
        *,
        max_pending_bytes: int,
        at_end_of_turn: Callable[["OutboundQueue"], None] | None = None,
    ) -> None:
        self._transport = transport
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._on_drop = on_drop
        #: with it, pushes are held until the end of the reactor turn (it is called with the
        #: queue once a turn, to have :meth:`flush` called then) and written joined
        self._at_end_of_turn = at_end_of_turn
        self._held: list[tuple[bytes, str]] = []
        self._held_bytes = 0
        self._paused = False
        self._queue: collections.deque[tuple[bytes, str | None]] = collections.deque()
        self._droppable = 0
        self.dropped = 0
        #: bytes of the lines waiting here
        self.pending_bytes = 0
        #: called when a paused transport has caught up and the queue is empty again
        self.on_drained: Callable[[], None] | None = None
        transport.registerProducer(self, True)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def send(self, line: bytes, drop_tag: str | None = None) -> None:
        if not self._paused and not self._queue:
            if drop_tag is not None and self._at_end_of_turn is not None:
                if not self._held:
                    self._at_end_of_turn(self)
                self._held.append((line, drop_tag))
                self._held_bytes += len(line)
                if self._held_bytes >= WRITE_BATCH_BYTES:
                    self.flush()
                return
            if self._held:
                self.flush()  # a response goes after the pushes before it
                if self._paused or self._queue:
                    self.send(line, drop_tag)
                    return
            self._transport.write(line)
            return
        if drop_tag is not None and len(line) > self._max_bytes and self._queue:
            self._count_drop(drop_tag)  # it could never wait beside anything else
            return
        self._queue.append((line, drop_tag))
        self.pending_bytes += len(line)
        if drop_tag is not None:
            self._droppable += 1
        while len(self._queue) > self._max_pending or (
                self.pending_bytes > self._max_bytes and len(self._queue) > 1):
            if not self._drop_oldest_droppable():
                self._transport.loseConnection()
                self._clear()
                return

    def flush(self) -> None:
        """Write the pushes held for this turn, joined (into the queue if the transport has
        asked us to pause meanwhile)."""
        held = self._held
        if not held:
            return
        self._held = []
        self._held_bytes = 0
        if self._paused or self._queue:
            for line, tag in held:
                self.send(line, tag)
            return
        self._transport.write(held[0][0] if len(held) == 1 else b"".join(line for line, _ in held))

    def close(self) -> None:
        """Write what is held, then close the connection once the transport has written it."""
        self.flush()
        self._transport.loseConnection()

    def _drop_oldest_droppable(self) -> bool:
        if not self._droppable:
            return False
        for index, (line, tag) in enumerate(self._queue):
            if tag is not None:
                del self._queue[index]
                self._droppable -= 1
                self.pending_bytes -= len(line)
                self._count_drop(tag)
                return True
        return False

    def _count_drop(self, tag: str) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(tag)

    def _clear(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._queue.clear()
        self._droppable = self.pending_bytes = 0

    # IPushProducer
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._queue and not self._paused:
            line, tag = self._queue.popleft()
            self.pending_bytes -= len(line)
            if tag is not None:
                self._droppable -= 1
            self._transport.write(line)
        if not self._queue and not self._paused and self.on_drained is not None:
            self.on_drained()

    def stopProducing(self) -> None:
        self._clear()
        self._paused = True
