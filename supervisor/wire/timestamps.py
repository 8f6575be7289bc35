"""Wire timestamps: RFC 3339 UTC with microseconds and ``Z``, plus integer nanoseconds."""

from __future__ import annotations

import time
from typing import Any

#: the last whole second formatted, and its text with a ``%06d`` for the microseconds
_last: list[Any] = [None, ""]


def rfc3339(seconds: float) -> str:
    """Format POSIX seconds as ``2026-11-28T13:05:15.123456Z``."""
    whole, fraction = divmod(round(seconds * 1_000_000), 1_000_000)
    last = _last
    if whole != last[0]:  # events come in bursts within one second: format that once
        last[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)) + "%06dZ"
        last[0] = whole
    return last[1] % fraction


def unix_nanos(seconds: float) -> int:
    """The same instant as :func:`rfc3339`, as integer nanoseconds (microsecond precision)."""
    return round(seconds * 1_000_000) * 1000


def stamp(prefix: str, seconds: float) -> dict[str, object]:
    """``{prefix_at: ..., prefix_at_unix_nanos: ...}`` for one instant."""
    return {f"{prefix}_at": rfc3339(seconds), f"{prefix}_at_unix_nanos": unix_nanos(seconds)}


def parse_rfc3339(text: str) -> int:
    """An RFC 3339 instant with a zone (``…Z`` or ``…+02:00``) as integer nanoseconds;
    ``ValueError`` for anything else."""
    import datetime

    if not isinstance(text, str) or "T" not in text.upper():
        raise ValueError(f"not an RFC 3339 timestamp: {str(text)[:60]!r}")
    parsed = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    if parsed.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without a zone: {text[:60]!r}")
    whole = int(parsed.timestamp())
    return whole * 1_000_000_000 + parsed.microsecond * 1000
