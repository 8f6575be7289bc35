"""A child writing BENCH_HISTORY_LINES (1,000,000) lines of 100 bytes as fast as it can,
kept on disk by ours (``observability.history``), supervisord (``stdout_logfile``), circus
(``FileStream``), and the floor (the child writing straight to a file).

Each supervisor starts one process child that waits for a ``go`` file, then writes its lines
(99 bytes and a newline, numbered) and sleeps. Measured from ``go``: the time until every line
is on disk (the child's last line is looked for at the end of the supervisor's files; a run
whose files stop growing for BENCH_HISTORY_STALL seconds, 10, ends there; the lines are counted
afterwards, and missing ones are lost), the supervisor's
CPU seconds over that time (utime+stime of the daemon, all its threads, /proc/<pid>/stat),
its peak RSS (VmHWM) and the lines lost; ``seconds_child_wrote`` is when the child's last
write returned (the pipe took it), which tells a supervisor that holds the child back from
one that follows it, and ``child_cpu_s``, ``child_waits`` and ``child_preempted`` what that
child spent from ``go`` to its flush and how often it waited (a full pipe) or was preempted
meanwhile (its own getrusage). Ours also reports the wall time and CPU with the history turned off (lines reach only the ring, nothing on disk) as ``ours_ring_only``, and
``ours_sigkill``: a child writing a timestamped line every ~100 µs, the target SIGKILLed after
3 s; how much output written before the kill is not on disk (kill time minus the timestamp
of the last line kept), against ``flush_interval_ms``.
Env: BENCH_HISTORY_LINES, BENCH_PEERS (default "ours,supervisord,circus"). Prints one JSON
object.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import emit  # noqa: E402
from bench.peers import envs  # noqa: E402
from bench.peers.harness import cpu_seconds  # noqa: E402

LINES = int(os.environ.get("BENCH_HISTORY_LINES", "1000000"))
STALL = float(os.environ.get("BENCH_HISTORY_STALL", "10"))
PEERS = os.environ.get("BENCH_PEERS", "ours,supervisord,circus").split(",")
PYTHON = envs.base_python()
#: 100-byte lines: "line 0000001 xxxx...\n"
CHILD = (
    "import json, os, resource, sys, time\n"
    "while not os.path.exists('go'): time.sleep(0.005)\n"
    "r0 = resource.getrusage(resource.RUSAGE_SELF)\n"
    "w = sys.stdout.buffer.write\n"
    "pad = b'x' * 86\n"
    f"for i in range({LINES}):\n"
    "    w(b'line %07d ' % i + pad + b'\\n')\n"
    "sys.stdout.buffer.flush()\n"
    "r1 = resource.getrusage(resource.RUSAGE_SELF)\n"
    "open('written.tmp', 'w').write(json.dumps({\n"
    "    'child_cpu_s': round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 3),\n"
    "    'child_waits': r1.ru_nvcsw - r0.ru_nvcsw, 'child_preempted': r1.ru_nivcsw - r0.ru_nivcsw}))\n"
    "os.rename('written.tmp', 'written')\n"
    "time.sleep(3600)\n"
)
NEEDLE = b"line "


def child_argv(folder: pathlib.Path) -> list[str]:
    script = folder / "child.py"
    script.write_text(CHILD)
    return [PYTHON, "-S", str(script)]


class Counter:
    """Watches the files a supervisor keeps the child's lines in.

    While the child writes, only sizes and the newest files' tails are read (whether the
    child's last line arrived: every supervisor here writes lines in order), so the watching
    costs the same whatever the record size; the lines are counted once at the end."""

    #: bytes read from the end of each of the newest two files
    TAIL = 64 * 1024

    def __init__(self, pattern: str, marker: bytes) -> None:
        self.pattern = pattern
        self.marker = marker
        self.last_line = b"line %07d " % (LINES - 1)
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}
        self.lines = 0

    def poll(self) -> tuple[int, bool]:
        """The files' total size, and whether the child's last line is at the end of one of
        the newest two."""
        paths = _glob(self.pattern)
        total = 0
        for path in paths:
            try:
                total += os.stat(path).st_size
            except FileNotFoundError:
                pass
        return total, any(self._ends_with_last_line(path) for path in paths[-2:])

    def _ends_with_last_line(self, path: str) -> bool:
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - self.TAIL))
                return self.last_line in f.read()
        except FileNotFoundError:
            return False

    def count(self) -> int:
        """Lines carrying the marker so far (reads only what was appended since the last call)."""
        for path in _glob(self.pattern):
            offset = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            if not data:
                continue
            self.offsets[path] = offset + len(data)
            data = self.partial.pop(path, b"") + data
            end = data.rfind(b"\n") + 1
            self.partial[path] = data[end:]
            self.lines += data.count(self.marker, 0, end)
        return self.lines


def _glob(pattern: str) -> list[str]:
    import glob

    return sorted(glob.glob(pattern))


def user_sys_seconds(pid: int) -> tuple[float, float]:
    """utime and stime of one process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child_figures(folder: pathlib.Path) -> dict:
    """The writing child's own CPU seconds and context switches while it wrote (from ``go`` to
    its flush, its own getrusage): voluntary ones are mostly waits on a full pipe, involuntary
    ones preemptions by whatever else wanted its core."""
    return json.loads((folder / "written").read_text())


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def run_daemon(folder: pathlib.Path, command: list[str], ready: pathlib.Path,
               counter: Counter) -> dict:
    log = open(folder / "daemon.log", "wb")
    proc = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "daemon ready")
        if proc.poll() is not None:
            raise RuntimeError((folder / "daemon.log").read_text()[-2000:])
        time.sleep(1)  # measurement window, not synchronisation: let start-up work finish
        baseline = counter.count()
        cpu0 = cpu_seconds(proc.pid)
        user0, sys0 = user_sys_seconds(proc.pid)
        t0 = time.monotonic()
        (folder / "go").touch()
        def child_wrote_at() -> float | None:
            return time.monotonic() - t0 if (folder / "written").exists() else None

        last_progress, (last_size, _) = t0, counter.poll()
        child_wrote = None
        child: dict = {}
        while True:
            now = time.monotonic()
            child_wrote = child_wrote or child_wrote_at()
            if child_wrote and not child:
                child = child_figures(folder)
            size, done = counter.poll()
            if done:
                break
            if size != last_size:
                last_progress, last_size = now, size
            elif now - last_progress > STALL:
                break
            time.sleep(0.005)
        elapsed = (now if done else last_progress) - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        user1, sys1 = user_sys_seconds(proc.pid)
        while child_wrote is None and time.monotonic() - now < STALL:
            # the lines were on disk before the child's marker file
            child_wrote = child_wrote_at()
            time.sleep(0.005)
        if child_wrote and not child:
            child = child_figures(folder)
        count = counter.count() - baseline
        return {"seconds_until_on_disk": round(elapsed, 3),
                "seconds_child_wrote": child_wrote and round(child_wrote, 3),
                "supervisor_cpu_s": round(cpu, 3),
                "supervisor_user_s": round(user1 - user0, 3),
                "supervisor_sys_s": round(sys1 - sys0, 3),
                "peak_rss_kib": peak_rss_kib(proc.pid), "lines_on_disk": count,
                "lines_lost": max(0, LINES - count), **child}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        log.close()


def ours(folder: pathlib.Path, history: bool = True) -> dict:
    config = {
        "supervisor": {"name": "bench"},
        "observability": {"history": {"enabled": history, "path": str(folder / "history"),
                                      "max_bytes": 4 * 1024**3, "segment_bytes": 64 * 1024**2}},
        "ipc": {"enabled": True, "target_id": "bench", "path": str(folder / "t.sock"),
                "bind_mode": "replace_stale", "idle_timeout_seconds": 3600},
        "children": [{"name": "w", "kind": "process", "restart_policy": "temporary",
                      "command": child_argv(folder), "cwd": str(folder)}],
    }
    if not history:
        del config["observability"]["history"]["path"]
    (folder / "target.yaml").write_text(json.dumps(config))
    twistd = str(pathlib.Path(sys.executable).parent / "twistd")
    command = [twistd, "-n", "--pidfile", str(folder / "twistd.pid"), "supervisor-target",
               "--config", str(folder / "target.yaml")]
    if history:
        counter = Counter(str(folder / "history" / "logs" / "*.ndjson"), b'"message":"line ')
        return run_daemon(folder, command, folder / "t.sock", counter)
    # without a history, the lines reach only the ring: time until the child has written
    # them all (the target read them: the child's writes return only once read)
    return run_daemon_ring_only(folder, command)


def run_daemon_ring_only(folder: pathlib.Path, command: list[str]) -> dict:
    log = open(folder / "daemon.log", "wb")
    proc = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (folder / "t.sock").exists(), 60, "daemon ready")
        time.sleep(1)  # measurement window, not synchronisation
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        (folder / "go").touch()
        wait_for(lambda: (folder / "written").exists(), 600, "child wrote everything")
        elapsed = time.monotonic() - t0
        child = child_figures(folder)
        time.sleep(0.2)  # the last pipe reads
        return {"seconds_until_read": round(elapsed, 3),
                "supervisor_cpu_s": round(cpu_seconds(proc.pid) - cpu0, 3),
                "peak_rss_kib": peak_rss_kib(proc.pid), **child}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()


def supervisord(folder: pathlib.Path) -> dict:
    python = envs.ensure("supervisord")
    sock = folder / "supervisord.sock"
    lines = [
        "[unix_http_server]", f"file = {sock}", "chmod = 0700", "",
        "[supervisord]", "nodaemon = true", f"logfile = {folder}/supervisord.log",
        f"pidfile = {folder}/supervisord.pid", f"childlogdir = {folder}", "loglevel = warn", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[program:w]", f"command = {shlex.join(child_argv(folder))}", f"directory = {folder}",
        "autostart = true", "autorestart = false", "startsecs = 0",
        f"stdout_logfile = {folder}/w.out", "stdout_logfile_maxbytes = 0", "",
    ]
    (folder / "supervisord.conf").write_text("\n".join(lines))
    command = [python, "-m", "supervisor.supervisord", "-n", "-c", str(folder / "supervisord.conf")]
    return run_daemon(folder, command, sock, Counter(str(folder / "w.out"), NEEDLE))


def circus(folder: pathlib.Path) -> dict:
    python = envs.ensure("circus")
    argv = child_argv(folder)
    lines = [
        "[circus]", f"endpoint = ipc://{folder}/ctl.ipc", f"pubsub_endpoint = ipc://{folder}/pub.ipc",
        "statsd = false", "multicast_endpoint = ", "httpd = false", "loglevel = warning",
        f"logoutput = {folder}/circusd.log", "warmup_delay = 0", "",
        "[watcher:w]", f"cmd = {argv[0]}", f"args = {shlex.join(argv[1:])}",
        f"working_dir = {folder}", "numprocesses = 1", "respawn = false", "copy_env = true",
        "stdout_stream.class = FileStream", f"stdout_stream.filename = {folder}/w.out", "",
    ]
    (folder / "circus.ini").write_text("\n".join(lines))
    command = [python, "-m", "circus.circusd", str(folder / "circus.ini")]
    return run_daemon(folder, command, folder / "ctl.ipc", Counter(str(folder / "w.out"), NEEDLE))


def floor(folder: pathlib.Path) -> dict:
    out = open(folder / "w.out", "wb")
    (folder / "go").touch()
    t0 = time.monotonic()
    proc = subprocess.Popen(child_argv(folder), cwd=folder, stdout=out, start_new_session=True)
    wait_for(lambda: (folder / "written").exists(), 600, "floor child wrote everything")
    elapsed = time.monotonic() - t0
    child = child_figures(folder)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out.close()
    count = Counter(str(folder / "w.out"), NEEDLE).count()
    return {"seconds_until_on_disk": round(elapsed, 3), "supervisor_cpu_s": 0.0,
            "peak_rss_kib": 0, "lines_on_disk": count, "lines_lost": LINES - count, **child}


#: a line every ~100 µs carrying the time it was written
TIMED_CHILD = (
    "import sys, time\n"
    "w = sys.stdout.write\n"
    "i = 0\n"
    "while True:\n"
    "    w('tick %d %.6f\\n' % (i, time.time()))\n"
    "    sys.stdout.flush()\n"
    "    i += 1\n"
    "    time.sleep(0.0001)\n"
)


def sigkill_window(folder: pathlib.Path, flush_interval_ms: int = 200) -> dict:
    """SIGKILL our target while a child writes: how much output before the kill is not on disk."""
    script = folder / "timed.py"
    script.write_text(TIMED_CHILD)
    config = {
        "observability": {"history": {"enabled": True, "path": str(folder / "history"),
                                      "flush_interval_ms": flush_interval_ms}},
        "ipc": {"enabled": True, "target_id": "bench", "path": str(folder / "t.sock"),
                "bind_mode": "replace_stale"},
        "children": [{"name": "w", "kind": "process", "command": [PYTHON, "-S", str(script)]}],
    }
    (folder / "target.yaml").write_text(json.dumps(config))
    twistd = str(pathlib.Path(sys.executable).parent / "twistd")
    proc = subprocess.Popen([twistd, "-n", "--pidfile=", "supervisor-target", "--config",
                             str(folder / "target.yaml")], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    windows = []
    try:
        wait_for(lambda: (folder / "t.sock").exists(), 60, "target ready")
        time.sleep(3)  # measurement window: the child writes for a while
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        last = None
        for path in _glob(str(folder / "history" / "logs" / "*.ndjson")):
            with open(path, "rb") as f:
                for raw in f:
                    if b'"message":"tick ' in raw and raw.endswith(b"\n"):
                        last = json.loads(raw)["message"]
        if last is not None:
            windows.append(killed_at - float(last.split()[2]))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"flush_interval_ms": flush_interval_ms,
            "output_lost_before_kill_ms": round(windows[0] * 1000, 1) if windows else None}


def main() -> None:
    base = pathlib.Path(tempfile.mkdtemp(prefix="bhist", dir="/tmp"))
    runs = {"floor": floor, "ours": ours, "supervisord": supervisord, "circus": circus}
    results: dict[str, dict] = {}
    try:
        for name in ["floor"] + [p for p in PEERS if p in runs and p != "floor"]:
            folder = base / name
            folder.mkdir()
            try:
                results[name] = runs[name](folder)
            except Exception as e:  # one peer failing must not hide the others' figures
                results[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            shutil.rmtree(folder, ignore_errors=True)
        if "ours" in PEERS:
            folder = base / "ours_ring_only"
            folder.mkdir()
            results["ours_ring_only"] = ours(folder, history=False)
            folder = base / "ours_sigkill"
            folder.mkdir()
            results["ours_sigkill"] = sigkill_window(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    floor_s = results["floor"].get("seconds_until_on_disk")
    for name, result in results.items():
        seconds = result.get("seconds_until_on_disk")
        if seconds and floor_s:
            result["throughput_vs_floor"] = round(floor_s / seconds, 3)
        if "supervisor_cpu_s" in result:
            result["cpu_s_per_million_lines"] = round(result["supervisor_cpu_s"] * 1e6 / LINES, 3)
    emit("bench_history", {"lines": LINES, "line_bytes": 100, "results": results})


if __name__ == "__main__":
    main()
