"""A whole fleet as real processes, for end-to-end tests.

:class:`Fleet` runs, each as its own subprocess with its output in a log file under its
folder: one TLS ``nats-server`` with the fleet's permissions (:class:`NatsServer`), per host id
a ``twistd -n supervisor-relay`` with ``fleet.enabled`` and a ``twistd -n supervisor-target``
(one in-process child) that registers to it, and any number of ``twistd -n supervisor-fleet``
gateways. Session certificates come from ``relay_helpers.make_pki``, NATS certificates from
``NatsServer.certs``; every listener is on a free 127.0.0.1 port so a test can stop a process
and start it again on the same address.

Waiting is always on a condition (a listening port, a metric's value, a message) with a
deadline; nothing here sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, Sequence

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "relay"))

from relay_helpers import PKI, WSClient, config_dict, connect_ws  # noqa: E402
from tests.fleet.nats_support import NatsServer  # noqa: E402
from tests.ports import free_port  # noqa: E402
from tests.waiting import eventually, wait_until  # noqa: E402

__all__ = ["Fleet", "Process", "HostRelay", "Gateway", "metric_values", "unix_connections",
           "wait_message",
           "GATEWAYS", "HOST_IDS", "LOCAL_TARGET"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
HOST_IDS = ("a", "b")
GATEWAYS = ("fleet-gateway", "fleet-gateway-2")
#: every host's target has the same local id: the fleet id ``<host>/svc`` tells them apart
LOCAL_TARGET = "svc"
OPERATORS = [{"principal": "CN=demo operator", "commands": "all"}]


def _env() -> dict[str, str]:
    """The repository on PYTHONPATH, so twistd finds ``twisted/plugins/supervisor_plugins.py``."""
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _dump(path: str, data: Any) -> str:
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def metric_values(port: int, name: str) -> float | None:
    """The sum over labels of metric ``name`` at ``http://127.0.0.1:port/metrics``, or None
    when the endpoint does not answer or has no such sample (blocking, short timeout)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    total: float | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name:
            total = (total or 0.0) + float(value)
    return total


def unix_connections(path: str) -> int:
    """Connections accepted on the Unix socket listening at ``path`` (from /proc/net/unix,
    where an accepted socket shows its listener's path in state 03, connected): how many IPC
    clients a target has, seen from outside it."""
    count = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "03":
                count += 1
    return count


class Process:
    """One ``twistd -n`` subprocess whose output goes to ``<folder>/<name>.log``."""

    def __init__(self, name: str, folder: str, args: Sequence[str]) -> None:
        self.name, self.folder, self.args = name, folder, list(args)
        self.log_path = os.path.join(folder, f"{name}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [TWISTD, "-n", "--logfile=-", f"--pidfile={self.name}.pid", *self.args],
                cwd=self.folder, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Fail with the process's output when it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                 f"{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send ``sig`` and wait for the process (SIGKILL once ``timeout`` passes)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def output(self, tail: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-tail:]
        except OSError:
            return ""


class HostRelay:
    """A host relay with fleet on, and the target that registers to it."""

    def __init__(self, fleet: "Fleet", host_id: str) -> None:
        self.host_id = host_id
        self.folder = os.path.join(fleet.root, f"h{host_id}")
        os.makedirs(self.folder, exist_ok=True)
        self.https_port, self.metrics_port = free_port(), free_port()
        self.audit_path = os.path.join(self.folder, "audit.sqlite3")
        self.registration_path = os.path.join(self.folder, "reg.sock")
        cert, key = fleet.nats.certs.hosts[host_id]
        relay = config_dict(self.folder, fleet.pki,
                            listen={"bind": f"127.0.0.1:{self.https_port}"},
                            authorization={"operators": OPERATORS},
                            metrics={"listen": f"tcp:{self.metrics_port}"},
                            fleet={"enabled": True, "host_id": host_id,
                                   "trusted_gateways": sorted(
                                       fleet.nats.certs.gateway_principals.values()),
                                   "heartbeat_ms": 250, "interest_lease_seconds": 2},
                            nats={"servers": [fleet.nats.url],
                                  "tls": {"ca_path": fleet.nats.certs.ca_cert,
                                          "certificate_path": cert, "private_key_path": key},
                                  "connect_timeout_seconds": 1})
        self.relay_config = _dump(os.path.join(self.folder, "relay.yaml"), relay)
        target = {
            "supervisor": {"strategy": "one_for_one", "name": f"host {host_id} service"},
            "policy": {"initial_backoff_ms": 100, "max_backoff_ms": 1000, "jitter_ratio": 0.1},
            "shutdown": {"graceful_timeout_ms": 2000, "abort_wait_ms": 1000},
            "ipc": {"enabled": True, "target_id": LOCAL_TARGET,
                    "path": self.ipc_path, "bind_mode": "replace_stale",
                    "registration": {"enabled": True,
                                     "relay_registration_path": self.registration_path,
                                     "lease_seconds": 10,
                                     "registration_heartbeat_interval_seconds": 1}},
            "children": [{"name": "worker", "kind": "task",
                          "callable": "supervisor.demo:steady_worker"}],
        }
        self.target_config = _dump(os.path.join(self.folder, "target.yaml"), target)
        self.relay = Process(f"relay-{host_id}", self.folder,
                             ["supervisor-relay", "--config", self.relay_config])
        self.target = Process(f"target-{host_id}", self.folder,
                              ["supervisor-target", "--config", self.target_config])

    def start_relay(self, timeout: float = 30.0) -> None:
        self.relay.start()
        wait_until(lambda: self.relay.check_alive() or (port_open(self.https_port)
                                                        and port_open(self.metrics_port)),
                   timeout, f"relay {self.host_id} listening")

    def start_target(self, timeout: float = 30.0) -> None:
        self.target.start()
        wait_until(lambda: self.target.check_alive() or self.registered() >= 1, timeout,
                   f"target of host {self.host_id} registered")

    def metric(self, name: str) -> float:
        return metric_values(self.metrics_port, name) or 0.0

    @property
    def ipc_path(self) -> str:
        return os.path.join(self.folder, "t.sock")

    def ipc_connections(self) -> int:
        """IPC clients of this host's target (its relay's link, when bound)."""
        return unix_connections(self.ipc_path)

    def registered(self) -> float:
        return self.metric("relay_targets_registered")

    def stop(self) -> None:
        self.target.stop()
        self.relay.stop()


class Gateway:
    """A ``twistd -n supervisor-fleet`` gateway connecting as NATS user ``name``."""

    def __init__(self, fleet: "Fleet", name: str) -> None:
        self.name = name
        self.folder = os.path.join(fleet.root, f"g-{name}")
        os.makedirs(self.folder, exist_ok=True)
        self.https_port, self.metrics_port = free_port(), free_port()
        self.audit_path = os.path.join(self.folder, "audit.sqlite3")
        self.principal = fleet.nats.certs.gateway_principals[name]
        cert, key = fleet.nats.certs.gateways[name]
        pki = fleet.pki
        config = {
            "listen": {"bind": f"127.0.0.1:{self.https_port}",
                       "public_url": "wss://localhost:9443/supervisor"},
            "tls": {"certificate_path": pki.server_cert_path,
                    "private_key_path": pki.server_key_path, "client_ca_path": pki.ca_path},
            "authorization": {"operators": OPERATORS},
            "audit": {"path": self.audit_path},
            "metrics": {"listen": f"tcp:{self.metrics_port}"},
            "nats": {"servers": [fleet.nats.url],
                     "tls": {"ca_path": fleet.nats.certs.ca_cert, "certificate_path": cert,
                             "private_key_path": key},
                     "connect_timeout_seconds": 1},
            "gateway": {"host_timeout_ms": 2000, "interest_lease_seconds": 2,
                        "request_timeout_seconds": 3},
        }
        self.config = _dump(os.path.join(self.folder, "gateway.yaml"), config)
        self.process = Process(f"gateway-{name}", self.folder,
                               ["supervisor-fleet", "--config", self.config])

    def start(self, timeout: float = 30.0) -> None:
        self.process.start()
        wait_until(lambda: self.process.check_alive() or port_open(self.https_port), timeout,
                   f"gateway {self.name} listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.stop(sig)

    def metric(self, name: str) -> float:
        return metric_values(self.metrics_port, name) or 0.0


class Fleet:
    """nats-server, host relays with their targets and gateways under the folder ``root``."""

    def __init__(self, root: str, pki: PKI, host_ids: Sequence[str] = HOST_IDS,
                 gateways: Sequence[str] = GATEWAYS) -> None:
        self.root, self.pki = root, pki
        self.nats = NatsServer(os.path.join(root, "nats"), host_ids=host_ids, gateways=gateways)
        self.hosts = {h: HostRelay(self, h) for h in host_ids}
        self.gateways = {g: Gateway(self, g) for g in gateways}
        self.sessions: list[WSClient] = []
        #: fault transitions measured by the tests (seconds), written out by :meth:`write_faults`
        self.faults: dict[str, float] = {}

    def start(self, gateways: Sequence[str] = GATEWAYS[:1]) -> None:
        """nats-server, every host relay and target, then the named gateways."""
        self.nats.start()
        for host in self.hosts.values():
            host.start_relay()
        for host in self.hosts.values():
            host.start_target()
        for name in gateways:
            self.gateways[name].start()

    def stop(self) -> None:
        """Close the sessions, then stop every process, even when an earlier step fails."""
        try:
            for session in self.sessions:
                if session.transport is not None and not session.closed_d.called:
                    session.transport.abortConnection()
        finally:
            try:
                for gateway in self.gateways.values():
                    gateway.stop()
                for host in self.hosts.values():
                    host.stop()
            finally:
                self.nats.stop()

    def logs(self) -> str:
        """Every process's output tail, for a failing test's message."""
        parts = [f"--- nats-server\n{self.nats.log()[-3000:]}"]
        for host in self.hosts.values():
            parts += [f"--- {p.name}\n{p.output(3000)}" for p in (host.relay, host.target)]
        parts += [f"--- {g.process.name}\n{g.process.output(3000)}"
                  for g in self.gateways.values()]
        return "\n".join(parts)

    async def session(self, port: int, timeout: float = 10.0) -> WSClient:
        """An operator's wss:// session (client certificate) on ``port``, closed at the end."""
        ws = await connect_ws(port, self.pki, self.pki.operator, timeout=timeout)
        self.sessions.append(ws)
        await ws.next("server_hello", timeout=timeout)
        ws.send({"type": "client_hello", "client_store_id": "e2e", "resume_cursor": {}})
        return ws

    async def gateway_session(self, name: str = GATEWAYS[0],
                              timeout: float = 30.0) -> WSClient:
        """A session on a gateway, retried until the gateway accepts one."""
        port = self.gateways[name].https_port
        last: list[BaseException] = []

        async def attempt() -> WSClient | None:
            try:
                return await self.session(port, timeout=5)
            except Exception as e:  # refused while the gateway starts: try again
                last[:] = [e]
                return None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws = await attempt()
            if ws is not None:
                return ws
            await eventually(lambda: port_open(port), max(0.1, deadline - time.monotonic()),
                             f"gateway {name} port")
        raise AssertionError(f"no session on gateway {name}: {last}\n{self.logs()}")

    def write_faults(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump({k: round(v, 3) for k, v in sorted(self.faults.items())}, f, indent=2)
            f.write("\n")


async def wait_message(ws: WSClient, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = 30.0, what: str = "") -> dict[str, Any]:
    """The first message ``ws`` received (queued, not yet taken) that ``predicate`` accepts,
    taken off the queue."""
    found: list[dict[str, Any]] = []

    def check() -> bool:
        for index, message in enumerate(ws.messages):
            if predicate(message):
                found.append(message)
                del ws.messages[index]
                return True
        return False

    await eventually(check, timeout, what or "message")
    return found[0]
