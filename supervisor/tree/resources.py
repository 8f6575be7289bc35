"""What process children cost: CPU, memory, descriptors and threads, sampled on the tree's clock.

A :class:`ResourceMonitor` asks a :class:`Sampler` every ``observability.resources.interval_ms``
for the figures of each process child's process group (the child leads its own) and of the
target process itself. The latest figures are kept for metrics; the RuntimeState rows show the
last *published* ones, and a row is published (a ``state_delta``) only when its figures moved
by more than :data:`THRESHOLDS` say, so an idle tree stays quiet on the wire.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Collection, Protocol

import attrs
from twisted.logger import Logger

from supervisor.tree.context import Tree
from supervisor.tree.model import SupervisorNode, runtime_row, walk
from supervisor.tree.spec import ChildKind
from supervisor.tree.ticks import GridLoop
from supervisor.wire.timestamps import stamp


@attrs.frozen
class Figures:
    """One sample of one process group (or of the target process)."""

    cpu_percent: float
    rss_bytes: int
    open_fds: int
    threads: int

    def to_json(self, sampled_at: float) -> dict[str, Any]:
        """The wire ``resources`` object (CONTRACTS.md §1 extension, docs/protocol.md)."""
        return {
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "open_fds": self.open_fds,
            "threads": self.threads,
            **stamp("sampled", sampled_at),
        }


@attrs.frozen
class Thresholds:
    """How far figures must move from the last published ones before a row is published again."""

    #: CPU percentage points (of one core)
    cpu_points: float = 2.0
    #: relative change of the resident set
    rss_ratio: float = 0.05

    def significant(self, old: Figures | None, new: Figures | None) -> bool:
        """Whether ``new`` differs enough from the published ``old`` to publish it."""
        if old is None or new is None:
            return old is not new
        if abs(new.cpu_percent - old.cpu_percent) >= self.cpu_points:
            return True
        if abs(new.rss_bytes - old.rss_bytes) > self.rss_ratio * max(old.rss_bytes, 1):
            return True
        return new.open_fds != old.open_fds or new.threads != old.threads


THRESHOLDS = Thresholds()


class Sampler(Protocol):
    """Reads process figures; the monitor owns the timing."""

    def sample_groups(self, pgids: Collection[int]) -> dict[int, Figures]:
        """Figures summed over each live process group of ``pgids`` (missing ones left out)."""

    def sample_self(self) -> Figures | None:
        """The figures of the process running the tree."""


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _read_small(path: str) -> bytes:
    """The whole of a small /proc file, in one read (no buffered file object: fewer syscalls)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _count_fds(pid: int | str) -> int:
    """How many descriptors the process has open: the size Linux 6.2+ gives its ``fd``
    directory (one ``stat``), else the directory listed (older kernels report 0 there)."""
    path = f"/proc/{pid}/fd"
    return os.stat(path).st_size or len(os.listdir(path))


@attrs.frozen
class _Reading:
    """What one process's /proc files said: the counters a sample sums, and its CPU time."""

    started: int  # clock ticks after boot: tells a reused pid from the process it replaced
    cpu_seconds: float
    rss_bytes: int
    open_fds: int
    threads: int


def read_process(pid: int | str) -> _Reading | None:
    """One process's figures from ``stat``, ``statm`` and its ``fd`` directory; ``None`` for a zombie.

    These are the files psutil reads for the same figures (``cpu_times``, ``memory_info().rss``,
    ``num_fds``), read once each; ``num_threads`` comes from ``stat`` instead of ``status``, and
    the descriptors are counted by :func:`_count_fds`.
    Raises ``OSError`` (or ``ValueError``) when the process is gone or unreadable.
    """
    stat = _read_small(f"/proc/{pid}/stat")
    fields = stat[stat.rindex(b")") + 2:].split()  # fields[0] is field 3 of proc(5), the state
    if fields[0] == b"Z":
        return None
    resident = int(_read_small(f"/proc/{pid}/statm").split(None, 2)[1])
    return _Reading(started=int(fields[19]),
                    cpu_seconds=(int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
                    rss_bytes=resident * _PAGE_BYTES,
                    open_fds=_count_fds(pid),
                    threads=int(fields[17]))


class ProcSampler:
    """A :class:`Sampler` reading /proc: every member of a group is found by its pgid once per sample.

    CPU percent is the CPU time a process used since the previous sample, over the wall time
    between them (100 = one core); a process seen for the first time counts 0. Per member
    process two reads (``stat``, ``statm``) and a ``stat`` of its ``fd`` directory (psutil's
    per-figure calls make seven reads and a listing, and list the CPUs each time).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        #: CPU seconds of each (pid, start) at the previous sample, and when that was
        self._cpu: dict[tuple[int, int], float] = {}
        self._at: float | None = None
        self._own_cpu: float | None = None
        self._own_at = 0.0

    def sample_groups(self, pgids: Collection[int]) -> dict[int, Figures]:
        now = self._monotonic()
        span = None if self._at is None else now - self._at
        self._at = now
        wanted = set(pgids)
        previous, seen = self._cpu, {}
        totals: dict[int, list[float]] = {}
        if wanted:
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    group = os.getpgid(int(name))
                    if group not in wanted:
                        continue
                    reading = read_process(name)
                except (OSError, ValueError, IndexError):
                    continue
                if reading is None:
                    continue
                key = (int(name), reading.started)
                seen[key] = reading.cpu_seconds
                total = totals.setdefault(group, [0.0, 0, 0, 0])
                total[0] += _percent(previous.get(key), reading.cpu_seconds, span)
                total[1] += reading.rss_bytes
                total[2] += reading.open_fds
                total[3] += reading.threads
        self._cpu = seen
        return {g: Figures(t[0], int(t[1]), int(t[2]), int(t[3])) for g, t in totals.items()}

    def sample_self(self) -> Figures | None:
        try:
            reading = read_process("self")
        except (OSError, ValueError, IndexError):
            return None
        if reading is None:
            return None
        now = self._monotonic()
        span = None if self._own_cpu is None else now - self._own_at
        percent = _percent(self._own_cpu, reading.cpu_seconds, span)
        self._own_cpu, self._own_at = reading.cpu_seconds, now
        return Figures(percent, reading.rss_bytes, reading.open_fds, reading.threads)


def _percent(before: float | None, after: float, span: float | None) -> float:
    """CPU seconds used over ``span`` wall seconds as a percentage of one core (0 without a past)."""
    if before is None or not span or span <= 0:
        return 0.0
    return max(0.0, (after - before) / span * 100)


@attrs.define
class _Published:
    figures: Figures
    wire: dict[str, Any]


class ResourceMonitor:
    """Samples a tree's process children and the target process on the tree's clock."""

    _log = Logger()

    def __init__(self, root: SupervisorNode, sampler: Sampler, interval: float,
                 thresholds: Thresholds = THRESHOLDS) -> None:
        self._root = root
        self._tree: Tree = root.tree
        self._sampler = sampler
        self._interval = interval
        self._thresholds = thresholds
        self._published: dict[str, _Published] = {}
        self._own: _Published | None = None
        #: the latest figures by child path (unpublished ones included), for metrics
        self.latest: dict[str, Figures] = {}
        #: the target process's latest figures
        self.latest_self: Figures | None = None
        self.samples = 0
        self._loop = GridLoop(self.sample, self._tree.clock,
                              lambda f: self._log.failure("resource sampling stopped", f))

    def start(self) -> None:
        """Sample every interval from now on, until :meth:`stop`; rows show what it publishes."""
        if self._loop.running:
            return
        self._tree.resources_of = self.resources_of
        self._tree.own_resources = self.own_resources
        self._loop.start(self._interval)

    def stop(self) -> None:
        self._loop.stop()

    def resources_of(self, path: str) -> dict[str, Any] | None:
        """The published wire ``resources`` of the child at ``path``, or ``None``."""
        published = self._published.get(path)
        return None if published is None else published.wire

    def own_resources(self) -> dict[str, Any] | None:
        """The published wire ``resources`` of the target process, or ``None``."""
        return None if self._own is None else self._own.wire

    def sample(self) -> None:
        """Take one sample and publish the rows whose figures moved beyond the thresholds."""
        tree = self._tree
        groups: dict[str, int] = {}
        for child in walk(self._root):
            if child.spec.kind is not ChildKind.PROCESS or child.runner is None:
                continue
            pid = getattr(child.runner, "pid", None)
            if pid is not None:
                groups[child.path] = pid
        figures = self._sampler.sample_groups(set(groups.values())) if groups else {}
        own = self._sampler.sample_self()
        now = tree.now()
        self.samples += 1
        self.latest = {path: figures[pid] for path, pid in groups.items() if pid in figures}
        self.latest_self = own
        changed = []
        for path in set(self._published) - set(self.latest):
            del self._published[path]
            if path in groups:  # a row without a runner shows no resources already
                changed.append(path)
        for path, new in self.latest.items():
            old = self._published.get(path)
            if self._thresholds.significant(None if old is None else old.figures, new):
                self._published[path] = _Published(new, new.to_json(now))
                changed.append(path)
        own_changed = self._thresholds.significant(None if self._own is None else self._own.figures,
                                                   own)
        if own_changed:
            self._own = None if own is None else _Published(own, own.to_json(now))
        if not changed and not own_changed:
            return
        paths = set(changed)
        tree.state_changed(lambda: self._delta(paths, own_changed))

    def _delta(self, paths: set[str], own_changed: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        rows = [runtime_row(c) for c in walk(self._root) if c.path in paths]
        if rows:
            delta["runtime_state"] = rows
        if own_changed:
            delta["target_resources"] = self.own_resources()
        return delta

