"""Each supervisor as a daemon in its own session: config, launch, readiness, stop.

Everyone runs the same children (``child_prog.py`` under one bare ``python -S``), captures
their stdout the way it normally does (ours: log ring; supervisord: a log file per program;
circus: ``FileStream`` per watcher; procmon: its logger), and is configured for its fastest
restart.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Sequence

from bench.peers import envs

HERE = pathlib.Path(__file__).resolve().parent
CHILD_PROG = str(HERE / "child_prog.py")
DRIVER = str(HERE / "driver.py")
#: One bare interpreter for every child, whoever supervises it.
CHILD_PYTHON = envs.base_python()
TARGET_ID = "bench"

# circus's tightest poll: it reaps and respawns only from a periodic check (no SIGCHLD).
CIRCUS_CHECK_DELAY = float(os.environ.get("BENCH_CIRCUS_CHECK_DELAY", "0.001"))


def child_argv(mode: str, name: str, hub: str) -> list[str]:
    return [CHILD_PYTHON, "-S", CHILD_PROG, mode, name, hub]


class Daemon:
    """Base: subclasses write their config and know their command and endpoints."""

    name = "?"
    has_status = True
    has_events = True

    def __init__(self, workdir: pathlib.Path, hub: str, children: Sequence[tuple[str, str]]) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hub = hub
        self.children = list(children)
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        self.python = self.interpreter()

    # subclass API
    def interpreter(self) -> str:
        raise NotImplementedError

    def write_config(self) -> list[str]:
        """Write config files; return the command line."""
        raise NotImplementedError

    def ready_path(self) -> pathlib.Path:
        raise NotImplementedError

    def status_args(self) -> list[str]:
        raise NotImplementedError

    def subscriber_args(self) -> list[str] | None:
        return None

    # common
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        command = self.write_config()
        log = open(self.workdir / "daemon.log", "ab")
        try:
            self.launched_at = time.monotonic()
            self.proc = subprocess.Popen(
                command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_path().exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become ready in {timeout} s: {self.log_tail()}")
            time.sleep(0.01)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.workdir / "daemon.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


class Ours(Daemon):
    """``twistd -n supervisor-target`` from a generated YAML file, IPC enabled."""

    name = "ours"

    def interpreter(self) -> str:
        return sys.executable

    def socket_path(self) -> str:
        return str(self.workdir / "t.sock")

    def write_config(self) -> list[str]:
        config = {
            "supervisor": {"strategy": "one_for_one", "name": "bench"},
            "policy": {
                "child_restart_limit": 1_000_000, "child_restart_window_ms": 1000,
                "supervisor_failure_limit": 1_000_000, "supervisor_failure_window_ms": 1000,
                "initial_backoff_ms": 0, "max_backoff_ms": 0, "jitter_ratio": 0,
            },
            "shutdown": {"graceful_timeout_ms": 5000, "abort_wait_ms": 1000},
            "ipc": {
                "enabled": True, "target_id": TARGET_ID, "path": self.socket_path(),
                "bind_mode": "replace_stale", "idle_timeout_seconds": 3600,
            },
            "children": [
                {"name": name, "kind": "process", "command": child_argv(mode, name, self.hub)}
                for name, mode in self.children
            ],
        }
        path = self.workdir / "target.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        twistd = str(pathlib.Path(sys.executable).parent / "twistd")
        return [twistd, "-n", "--pidfile", str(self.workdir / "twistd.pid"),
                "supervisor-target", "--config", str(path)]

    def ready_path(self) -> pathlib.Path:
        return pathlib.Path(self.socket_path())

    def status_args(self) -> list[str]:
        return ["ours", self.socket_path(), TARGET_ID]

    def subscriber_args(self) -> list[str]:
        return ["events", "ours", self.socket_path(), TARGET_ID, self.hub]


class Supervisord(Daemon):
    """supervisord 4.x: ``autorestart=true``, ``startsecs=0``, ``startretries`` high."""

    name = "supervisord"

    def interpreter(self) -> str:
        return envs.ensure("supervisord")

    def socket_path(self) -> str:
        return str(self.workdir / "supervisord.sock")

    def write_config(self) -> list[str]:
        wd = self.workdir
        lines = [
            "[unix_http_server]", f"file = {self.socket_path()}", "chmod = 0700", "",
            "[supervisord]", "nodaemon = true", f"logfile = {wd}/supervisord.log",
            f"pidfile = {wd}/supervisord.pid", f"childlogdir = {wd}", "loglevel = warn",
            "minfds = 1024", "minprocs = 200", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        ]
        for name, mode in self.children:
            lines += [
                f"[program:{name}]", f"command = {shlex.join(child_argv(mode, name, self.hub))}",
                "autostart = true", "autorestart = true", "startsecs = 0", "startretries = 1000000",
                f"stdout_logfile = {wd}/{name}.out", "stdout_logfile_maxbytes = 1MB",
                "stdout_logfile_backups = 0", "stopsignal = TERM", "stopwaitsecs = 5", "",
            ]
        if self.has_listener:
            lines += [
                "[eventlistener:benchlistener]",
                f"command = {shlex.join([self.python, DRIVER, 'supervisord-listener', self.hub])}",
                "events = PROCESS_STATE_EXITED", "buffer_size = 1000",
                f"stderr_logfile = {wd}/listener.err", "",
            ]
        path = wd / "supervisord.conf"
        path.write_text("\n".join(lines))
        return [self.python, "-m", "supervisor.supervisord", "-n", "-c", str(path)]

    has_listener = False

    def ready_path(self) -> pathlib.Path:
        return pathlib.Path(self.socket_path())

    def status_args(self) -> list[str]:
        return ["supervisord", self.socket_path(), "-"]

    def subscriber_args(self) -> None:
        return None  # the listener is a program supervisord itself runs


class Circus(Daemon):
    """circusd 0.19: smallest ``check_delay``, no flapping plugin, ipc:// endpoints only."""

    name = "circus"

    def interpreter(self) -> str:
        return envs.ensure("circus")

    def endpoint(self, what: str) -> str:
        return f"ipc://{self.workdir}/{what}.ipc"

    def write_config(self) -> list[str]:
        wd = self.workdir
        lines = [
            "[circus]", f"check_delay = {CIRCUS_CHECK_DELAY}", f"endpoint = {self.endpoint('ctl')}",
            f"pubsub_endpoint = {self.endpoint('pub')}",
            "statsd = false",  # no stats_endpoint: setting one turns circusd-stats on
            "multicast_endpoint = ", "httpd = false", f"pidfile = {wd}/circusd.pid",
            "loglevel = warning", f"logoutput = {wd}/circusd.log", "warmup_delay = 0", "",
        ]
        for name, mode in self.children:
            argv = child_argv(mode, name, self.hub)
            lines += [
                f"[watcher:{name}]", f"cmd = {argv[0]}", f"args = {shlex.join(argv[1:])}",
                "numprocesses = 1", "copy_env = true", "respawn = true", "check_flapping = false",
                "graceful_timeout = 5", "stdout_stream.class = FileStream",
                f"stdout_stream.filename = {wd}/{name}.out", "",
            ]
        path = wd / "circus.ini"
        path.write_text("\n".join(lines))
        return [self.python, "-m", "circus.circusd", str(path)]

    def ready_path(self) -> pathlib.Path:
        return self.workdir / "ctl.ipc"

    def status_args(self) -> list[str]:
        return ["circus", self.endpoint("ctl"), "-"]

    def subscriber_args(self) -> list[str]:
        return ["events", "circus", self.endpoint("pub"), "-", self.hub]


class Procmon(Daemon):
    """twisted.runner.procmon: ``minRestartDelay=0`` and a 1 ms ``threshold``."""

    name = "procmon"
    has_status = False
    has_events = False

    def interpreter(self) -> str:
        return envs.ensure("procmon")

    def write_config(self) -> list[str]:
        path = self.workdir / "procmon.json"
        path.write_text(json.dumps({
            "threshold": 0.001,
            "children": [[name, child_argv(mode, name, self.hub)] for name, mode in self.children],
        }))
        return [self.python, str(HERE / "procmon_daemon.py"), str(path)]

    def ready_path(self) -> pathlib.Path:
        return self.workdir / "procmon.json"


class EventsFloor(Daemon):
    """The event-delivery floor (``events_floor.py``): an epoll loop, no supervisor at all."""

    name = "floor"
    has_status = False

    def interpreter(self) -> str:
        return CHILD_PYTHON

    def socket_path(self) -> str:
        return str(self.workdir / "floor.sock")

    def write_config(self) -> list[str]:
        path = self.workdir / "floor.json"
        path.write_text(json.dumps({
            "socket": self.socket_path(),
            "children": [[name, child_argv(mode, name, self.hub)] for name, mode in self.children],
        }))
        return [self.python, str(HERE / "events_floor.py"), str(path)]

    def ready_path(self) -> pathlib.Path:
        return pathlib.Path(self.socket_path())

    def subscriber_args(self) -> list[str]:
        return ["events", "ours", self.socket_path(), TARGET_ID, self.hub]


PEERS: dict[str, type[Daemon]] = {
    "ours": Ours, "supervisord": Supervisord, "circus": Circus, "procmon": Procmon,
}

#: Daemons that are not supervisors: what a measurement can be no less than.
FLOORS: dict[str, type[Daemon]] = {"floor": EventsFloor}

UNAVAILABLE = {
    ("procmon", "status"): "twisted.runner.procmon has no status query API (no control socket)",
    ("procmon", "events"): "twisted.runner.procmon publishes no events to subscribers",
}
