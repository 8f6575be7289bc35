"""A real TLS nats-server for fleet tests, configured as a fleet deploys it.

``NatsServer(directory, host_ids=("a", "b"), gateways=("fleet-gateway",))`` issues the fleet's
certificates into ``directory`` (:func:`supervisor.certs.write_fleet_certs`), writes the
nats-server configuration with :func:`supervisor.fleet.natsconf.write_nats_config` (one user
per host and per gateway, each with the fleet's permissions) and picks a free port.

- ``start()`` runs ``nats-server -c CONF`` and returns once it completes a TLS handshake (a
  deadline, no sleeps); ``stop()`` ends it (SIGTERM, then SIGKILL) and waits for it;
  ``restart()`` is ``stop()`` then ``start()`` on the same port, for NATS-down fault tests.
  All three block the calling thread for at most their deadline (a few seconds); they are
  fine to call from a test running on the reactor.
- ``host_config(host_id)``, ``gateway_config(name)``: a :class:`NatsConfig` that connects as that
  host relay or gateway; ``client_config(cert, key)`` with any other certificate;
  ``ssl_context(cert, key)`` a client context (no certificate when both are omitted).
- ``certs`` (:class:`supervisor.certs.FleetCerts`), ``url``, ``port``, ``config_path``,
  ``log_path`` (the server's output, for a failing test's diagnosis).

Fixtures (``tests/fleet/conftest.py``): ``nats_server`` (started, stopped after the test),
``nats_dir`` (a fresh directory), ``make_bus`` (``make_bus(config, name)`` a started
:class:`NatsBus`, stopped after the test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from typing import Sequence

from supervisor.certs import FleetCerts, write_fleet_certs
from supervisor.config.fleet import NatsConfig, NatsTLSConfig
from supervisor.fleet.natsconf import write_nats_config
from tests.ports import free_port

__all__ = ["NATS_SERVER", "NatsServer"]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"




class NatsServer:
    """One nats-server process with the fleet's TLS and permissions (see the module docstring)."""

    def __init__(self, directory: str, host_ids: Sequence[str] = ("a", "b"),
                 gateways: Sequence[str] = ("fleet-gateway",), port: int | None = None) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.certs: FleetCerts = write_fleet_certs(os.path.join(directory, "certs"), host_ids,
                                                   gateways)
        self.port = port or free_port()
        self.url = f"tls://127.0.0.1:{self.port}"
        self.config_path = os.path.join(directory, "nats.conf")
        self.log_path = os.path.join(directory, "nats-server.log")
        write_nats_config(self.config_path, listen=f"127.0.0.1:{self.port}",
                          cert=self.certs.server_cert, key=self.certs.server_key,
                          ca=self.certs.ca_cert, hosts=self.certs.host_principals,
                          gateways=list(self.certs.gateway_principals.values()))
        self.process: subprocess.Popen[bytes] | None = None

    # -- client configurations -------------------------------------------------------------

    def client_config(self, cert: str, key: str, **changes: object) -> NatsConfig:
        """A client of this server with the given certificate and key."""
        tls = NatsTLSConfig(ca_path=self.certs.ca_cert, certificate_path=cert,
                            private_key_path=key)
        return NatsConfig(servers=(self.url,), tls=tls, **changes)  # type: ignore[arg-type]

    def host_config(self, host_id: str, **changes: object) -> NatsConfig:
        cert, key = self.certs.hosts[host_id]
        return self.client_config(cert, key, **changes)

    def gateway_config(self, name: str = "fleet-gateway", **changes: object) -> NatsConfig:
        cert, key = self.certs.gateways[name]
        return self.client_config(cert, key, **changes)

    def ssl_context(self, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.certs.ca_cert)
        if cert is not None:
            context.load_cert_chain(cert, key)
        return context

    # -- the process -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Run the server and wait until it completes a TLS handshake."""
        if self.running:
            return
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen([NATS_SERVER, "-c", self.config_path],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}: "
                                   f"{self.log()[-2000:]}")
            try:
                self._handshake(max(0.1, deadline - time.monotonic()))
                return
            except OSError as e:
                last = e
                # the server is still starting: wait for its port (a bounded blocking wait
                # on the socket rather than a sleep)
                self._wait_port(min(0.05, max(0.0, deadline - time.monotonic())))
        self.stop()
        raise RuntimeError(f"nats-server did not accept TLS within {timeout}s: {last}")

    def _wait_port(self, timeout: float) -> None:
        with socket.socket() as s:
            s.settimeout(timeout)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                pass

    def _handshake(self, timeout: float) -> None:
        """Read the server's INFO, then complete TLS as the first gateway."""
        cert, key = next(iter(self.certs.gateways.values()))
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
            info = raw.recv(4096)
            if not info.startswith(b"INFO "):
                raise OSError(f"unexpected greeting {info[:40]!r}")
            with self.ssl_context(cert, key).wrap_socket(raw, server_hostname="127.0.0.1"):
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """End the server (SIGTERM, SIGKILL after ``timeout``) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """The same server back on the same port (clients reconnect on their own)."""
        self.stop(timeout)
        self.start(timeout)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
