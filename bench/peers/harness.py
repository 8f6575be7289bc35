"""What the side-by-side benchmarks share: the datagram hub, daemon sessions, cleanup, CPU.

Timing comes from the children themselves: each sends ``up``/``exit`` datagrams stamped with
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process on the machine), so no
supervisor's logging path or the harness's own reading delay is part of any number.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import select
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

from bench._common import percentile
from bench.peers import daemons

CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def selected_peers() -> list[str]:
    """``BENCH_PEERS=ours,circus`` limits a run; default: ours and every peer."""
    raw = os.environ.get("BENCH_PEERS", "ours,supervisord,circus,procmon")
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if "ours" not in names:
        names.insert(0, "ours")
    return [n for n in daemons.PEERS if n in names]


def use_results_dir() -> None:
    """``BENCH_RESULTS_DIR`` sends results elsewhere (the harness test uses it)."""
    folder = os.environ.get("BENCH_RESULTS_DIR")
    if folder:
        import bench._common as common

        common.RESULTS = pathlib.Path(folder)


class Message:
    __slots__ = ("kind", "name", "pid", "t")

    def __init__(self, kind: str, name: str, pid: int, t: float) -> None:
        self.kind, self.name, self.pid, self.t = kind, name, pid, t

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} {self.pid} {self.t:.6f}>"


class Hub:
    """A Unix datagram socket the children and subscribers report to; read by a thread."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.path = str(folder / "hub.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(self.path)
        self.messages: list[Message] = []
        self.cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            parts = data.decode(errors="replace").split()
            if parts[0] in ("up", "exit") and len(parts) == 4:
                message = Message(parts[0], parts[1], int(parts[2]), float(parts[3]))
            elif parts[0] == "ev" and len(parts) == 3:
                message = Message("ev", parts[1], 0, float(parts[2]))
            else:
                continue
            with self.cond:
                self.messages.append(message)
                self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.messages)

    def since(self, mark: int, kind: str | None = None, name: str | None = None) -> list[Message]:
        with self.cond:
            found = self.messages[mark:]
        return [m for m in found if (kind is None or m.kind == kind) and (name is None or m.name == name)]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str,
             alive: Callable[[], None] | None = None) -> None:
        """Wait for ``predicate`` (re-checked on every message), failing after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.5))
                if alive is not None:
                    self.cond.release()
                    try:
                        alive()
                    finally:
                        self.cond.acquire()

    def wait_all_up(self, mark: int, names: Sequence[str], timeout: float, alive=None) -> dict[str, Message]:
        """First ``up`` of every name since ``mark``."""
        wanted = set(names)
        first: dict[str, Message] = {}

        def done() -> bool:
            for m in self.messages[mark:]:
                if m.kind == "up" and m.name in wanted and m.name not in first:
                    first[m.name] = m
            return len(first) == len(wanted)

        self.wait(done, timeout, f"{len(wanted)} children up ({len(first)} so far)", alive)
        return first

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def kill_strays(marker: str) -> int:
    """SIGKILL every process whose command line mentions ``marker`` (our unique temp folder)."""
    killed = 0
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle not in f.read():
                    continue
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            pass
    return killed


class Session:
    """One benchmark run: a temp folder under /tmp, the hub, and everything to tear down."""

    def __init__(self) -> None:
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="bp", dir="/tmp"))
        self.hub = Hub(self.folder)
        self._daemons: list[daemons.Daemon] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._count = 0

    def daemon(self, peer: str, children: Sequence[tuple[str, str]], **attributes: Any) -> daemons.Daemon:
        self._count += 1
        d = (daemons.PEERS.get(peer) or daemons.FLOORS[peer])(self.folder / f"run{self._count}", self.hub.path, children)
        for key, value in attributes.items():
            setattr(d, key, value)  # read when the daemon writes its config, at start()
        self._daemons.append(d)
        return d

    @contextlib.contextmanager
    def running(self, peer: str, children: Sequence[tuple[str, str]], **attributes: Any) -> Iterator[daemons.Daemon]:
        d = self.daemon(peer, children, **attributes)
        try:
            d.start()
            yield d
        finally:
            d.stop()
            kill_strays(str(d.workdir))

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for d in self._daemons:
            with contextlib.suppress(Exception):
                d.stop()
        kill_strays(str(self.folder))
        self.hub.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_line(proc: subprocess.Popen[Any], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{what}: process ended (status {proc.wait()})")
            return line.decode().strip() if isinstance(line, bytes) else line.strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process ended (status {proc.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: no line in {timeout} s")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def lat_summary(samples: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": ms(percentile(samples, 50)),
        "p99_ms": ms(percentile(samples, 99)),
        "max_ms": ms(max(samples)) if samples else None,
        "samples": len(samples),
    }


def median_of(trials: list[dict[str, Any]], key: str) -> float | None:
    values = [t[key] for t in trials if t.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def guarded(peer: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one peer's measurement; a failure becomes ``unavailable`` with the reason, not a number."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported in the JSON, never hidden
        traceback.print_exc()
        return {"unavailable": f"{type(e).__name__}: {e}"[:500]}


def row(metric: str, values: dict[str, Any], target: str | None = None,
        target_met: bool | None = None, lower_is_better: bool = True,
        compare: bool = True) -> dict[str, Any]:
    """One line of the report table: a metric's value for ours, each peer and the floor."""
    return {"metric": metric, "values": values, "target": target, "target_met": target_met,
            "lower_is_better": lower_is_better, "compare": compare}


def value(result: dict[str, Any], *path: str) -> Any:
    """result[path...] or, where a peer was unavailable, its reason string."""
    node: Any = result
    for key in path:
        if not isinstance(node, dict):
            return None
        if "unavailable" in node:
            return {"unavailable": node["unavailable"]}
        node = node.get(key)
    return node
