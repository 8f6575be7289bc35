"""The bounds of every number read from a wire, in one place (docs/protocol.md, "Numbers").

JSON numbers have no size: ``1`` followed by 400 zeros is a valid integer, and Python reads
it as one. Left unchecked such a value reaches a timer (``callLater`` raises
``OverflowError``), a database column or the dashboard's JavaScript (which rounds every
integer beyond 2**53). So each reader checks twice: the decoders refuse any integer literal
outside :data:`WIRE_INT_RANGE` (what a 64-bit integer, signed or unsigned, holds: the
``*_unix_nanos`` instants need that much) as malformed JSON, and each field's own range below is checked where the field is
read, with that reader's validation error code. Booleans are never numbers (``True`` is an
``int`` to Python) and non-finite floats (``NaN``, ``Infinity``, ``1e999``) are refused by
every decoder.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "WIRE_INT_RANGE", "SAFE_INT_MAX", "LEASE_SECONDS_RANGE", "COMMAND_TIMEOUT_SECONDS_RANGE",
    "SEQUENCE_RANGE", "DROPPED_COUNT_RANGE", "TAIL_LINES_RANGE", "HISTORY_LIMIT_RANGE", "check_wire_int",
    "int_in", "number_in", "describe",
]

#: Any integer literal on any wire: what a 64-bit integer, signed or unsigned, holds.
WIRE_INT_RANGE = (-(2**64 - 1), 2**64 - 1)
#: The largest integer a JavaScript client reads exactly (``Number.MAX_SAFE_INTEGER``).
SAFE_INT_MAX = 2**53 - 1

#: Registration ``lease_seconds`` (a relay may grant less: ``registration.max_lease_seconds``).
LEASE_SECONDS_RANGE = (1, 86_400)
#: Registration ``supported_commands[].timeout_seconds``: how long the relay waits for a command.
COMMAND_TIMEOUT_SECONDS_RANGE = (1, 86_400)
#: A journal sequence a client names: ``since_sequence``, ``sequence_min``.
SEQUENCE_RANGE = (0, SAFE_INT_MAX)
#: A ``dropped_count`` total a target reports.
DROPPED_COUNT_RANGE = (0, SAFE_INT_MAX)
#: ``logs.tail`` ``lines``: at most what the largest log journal holds.
TAIL_LINES_RANGE = (0, 1_000_000)
#: ``history.*`` ``limit``: records in one page.
HISTORY_LIMIT_RANGE = (1, 1000)


def check_wire_int(text: str) -> int:
    """A JSON integer literal as an int, ``ValueError`` outside :data:`WIRE_INT_RANGE`; the
    ``parse_int`` hook of every decoder."""
    low, high = WIRE_INT_RANGE
    if len(text) > 21:  # "-18446744073709551615" has 21 characters: never convert a longer one
        raise ValueError(f"integer {text[:24]}... is out of range")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"integer {text} is out of range")
    return value


def int_in(value: Any, bounds: tuple[int, int]) -> bool:
    """``value`` is an integer (not a boolean) within ``bounds``, both ends included."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and bounds[0] <= value <= bounds[1])


def number_in(value: Any, bounds: tuple[float, float]) -> bool:
    """``value`` is a finite int or float (not a boolean) within ``bounds``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return bounds[0] <= value <= bounds[1]


def describe(name: str, bounds: tuple[int, int]) -> str:
    """``name must be an integer from LOW to HIGH``: the message of every range refusal."""
    return f"{name} must be an integer from {bounds[0]} to {bounds[1]}"
