"""Comparing long runs of lines in a form a failure report can show (not 200,000 of them)."""

from __future__ import annotations

import collections
from typing import Sequence


def difference(got: Sequence[str], expected: Sequence[str]) -> str | None:
    """None when ``got`` equals ``expected``; else counts and where they first part."""
    if list(got) == list(expected):
        return None
    wanted = set(expected)
    counts = collections.Counter(got)
    missing = sum(1 for line in wanted if line not in counts)
    repeated = sum(n - 1 for n in counts.values() if n > 1)
    foreign = sum(1 for line in counts if line not in wanted)
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                 min(len(got), len(expected)))
    return (f"{len(got)} lines, {len(expected)} expected: {missing} missing, {repeated} repeated, "
            f"{foreign} unexpected; first difference at {first}: "
            f"got {list(got[max(0, first - 2) : first + 3])}, "
            f"expected {list(expected[max(0, first - 2) : first + 3])}")
