"""Hypothesis strategies shared by the fuzzers: long names, many ids, huge numbers.

Each comes with the rule the readers apply (supervisor.wire.bounds), so a fuzzer can check
not only that an input is answered but that it is answered the way the bounds say.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from supervisor.wire.bounds import SAFE_INT_MAX, WIRE_INT_RANGE

#: Lengths around every name limit (256 characters for ids and display names) and far past.
NAME_LENGTHS = st.sampled_from([0, 1, 255, 256, 257, 1000, 4000]) | st.integers(0, 5000)
long_names = st.builds(lambda n, c: c * n, NAME_LENGTHS,
                       st.sampled_from(["x", "ä", "𝕏", "_", "-", " ", "\ufffd"]))
#: A child id that matches the contract's pattern, of any length.
long_child_ids = st.builds(lambda n: "c" + "x" * n, NAME_LENGTHS)

#: Thousands of ids: target ids, command ids, child paths.
many_ids = st.builds(lambda n, prefix: [f"{prefix}{i}" for i in range(n)],
                     st.sampled_from([0, 1, 64, 65, 1000, 5000]) | st.integers(0, 6000),
                     st.sampled_from(["t", "cmd-", "/root/c"]))

#: Numbers a reader must bound: huge and negative integers, the edges of every range,
#: floats (NaN and infinities among them) and booleans, which Python counts as integers.
huge_numbers = (
    st.sampled_from([0, 1, -1, 2**31, 2**53 - 1, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
                     -(2**64), 10**20, 10**400, -(10**400), 86_400, 86_401, 1_000_000,
                     1_000_001, 1000, 1001])
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 30.0, 1.5])
    | st.booleans()
)


def decodable(value: Any) -> bool:
    """Whether a JSON reader takes ``value`` at all: no NaN or infinity and no integer
    beyond 64 bits, anywhere inside it."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return WIRE_INT_RANGE[0] <= value <= WIRE_INT_RANGE[1]
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(decodable(v) for v in value)
    if isinstance(value, dict):
        return all(decodable(v) for v in value.values())
    return True


def safe_int(value: Any) -> bool:
    """An integer (not a boolean) a JavaScript client reads exactly."""
    return isinstance(value, int) and not isinstance(value, bool) and \
        -SAFE_INT_MAX <= value <= SAFE_INT_MAX


def in_range(value: Any, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and \
        bounds[0] <= value <= bounds[1]
