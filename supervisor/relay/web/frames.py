"""Server-to-browser WebSocket text frames, built once per message however many sessions get it.

Frames a server sends are not masked (RFC 6455 §5.1), so the bytes of one message are the
same for every session: a push fanned out to N sessions is encoded and framed once instead of
N times. Only used when the connection negotiated no per-message compression.
"""

from __future__ import annotations

import struct


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x81, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


class SharedFrames:
    """Remembers the frame of the last text it framed (a fan-out loop repeats the same str)."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""

    def frame(self, text: str) -> bytes:
        if text is not self._text:
            self._frame = text_frame(text.encode("utf-8"))
            self._text = text
        return self._frame
