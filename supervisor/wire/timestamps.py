"""Wire timestamps: RFC 3339 UTC with microseconds and ``Z``, plus integer nanoseconds."""

from __future__ import annotations

import datetime

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def rfc3339(seconds: float) -> str:
    """Format POSIX seconds as ``2026-11-28T13:05:15.123456Z``."""
    micros = round(seconds * 1_000_000)
    moment = _EPOCH + datetime.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unix_nanos(seconds: float) -> int:
    """The same instant as :func:`rfc3339`, as integer nanoseconds (microsecond precision)."""
    return round(seconds * 1_000_000) * 1000


def stamp(prefix: str, seconds: float) -> dict[str, object]:
    """``{prefix_at: ..., prefix_at_unix_nanos: ...}`` for one instant."""
    return {f"{prefix}_at": rfc3339(seconds), f"{prefix}_at_unix_nanos": unix_nanos(seconds)}
