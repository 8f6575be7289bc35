"""Test helpers for the relay: PKI, configs, a registration client and a wss:// client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import attrs
import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS

from relay_faketarget import FakeTarget, registration_payload
from supervisor import certs
from tests.waiting import eventually
from supervisor.config.relay import RelayConfig, parse_relay_config
from supervisor.relay.service import RelayService

PUBLIC_URL = "wss://localhost:9443/supervisor"
ORIGIN = "https://localhost:9443"
OPERATOR = (("CN", "demo operator"),)
ORDERED_OPERATOR = (("O", "Example Ops"), ("CN", "demo operator"))
VIEWER = (("O", "Example Ops"), ("CN", "viewer"))


async def within(d: Deferred[Any], timeout: float, what: str = "") -> Any:
    """Await ``d`` but fail the test if it takes longer than ``timeout``."""
    timer = reactor.callLater(timeout, d.cancel)
    try:
        return await d
    except Exception as e:
        if not timer.active():
            raise AssertionError(f"timed out after {timeout}s: {what}") from e
        raise
    finally:
        if timer.active():
            timer.cancel()


@attrs.frozen
class PKI:
    """Certificates for a test run, all generated with supervisor.certs."""

    directory: str
    ca: certs.CertKey
    server: certs.CertKey
    operator: certs.CertKey
    ordered_operator: certs.CertKey
    viewer: certs.CertKey
    unknown_ca_client: certs.CertKey
    expired: certs.CertKey
    not_yet_valid: certs.CertKey
    server_only: certs.CertKey

    @property
    def ca_path(self) -> str:
        return os.path.join(self.directory, "ca.pem")

    @property
    def server_cert_path(self) -> str:
        return os.path.join(self.directory, "relay.pem")

    @property
    def server_key_path(self) -> str:
        return os.path.join(self.directory, "relay-key.pem")


def make_pki(directory: str) -> PKI:
    ca = certs.generate_ca("relay test CA")
    other_ca = certs.generate_ca("unknown CA")
    server = certs.issue_server_cert(ca)
    ca.write(os.path.join(directory, "ca.pem"), os.path.join(directory, "ca-key.pem"))
    server.write(os.path.join(directory, "relay.pem"), os.path.join(directory, "relay-key.pem"))
    before, after = certs.expired_window()
    future_before, future_after = certs.future_window()
    return PKI(
        directory=directory, ca=ca, server=server,
        operator=certs.issue_client_cert(ca, OPERATOR),
        ordered_operator=certs.issue_client_cert(ca, ORDERED_OPERATOR),
        viewer=certs.issue_client_cert(ca, VIEWER),
        unknown_ca_client=certs.issue_client_cert(other_ca, OPERATOR),
        expired=certs.issue_client_cert(ca, OPERATOR, not_before=before, not_after=after),
        not_yet_valid=certs.issue_client_cert(ca, OPERATOR, not_before=future_before,
                                              not_after=future_after),
        server_only=certs.issue_server_cert(ca),
    )


def config_dict(sockdir: str, pki: PKI, **sections: Any) -> dict[str, Any]:
    """A relay config mapping for tests (port 0, short timeouts); sections override."""
    data: dict[str, Any] = {
        "listen": {"bind": "127.0.0.1:0", "public_url": PUBLIC_URL},
        "tls": {"certificate_path": pki.server_cert_path,
                "private_key_path": pki.server_key_path, "client_ca_path": pki.ca_path},
        "registration": {"listen_path": os.path.join(sockdir, "reg.sock"),
                         "permissions": "0600",
                         "allowed_ipc_path_prefixes": [sockdir + "/"],
                         "default_lease_seconds": 30, "max_lease_seconds": 120},
        "authorization": {"operators": [
            {"principal": "CN=demo operator", "commands": "all"},
            {"principal": "O=Example Ops, CN=demo operator",
             "commands": ["pause_child", "resume_child", "remove_child"]},
        ]},
        "audit": {"path": os.path.join(sockdir, "audit.sqlite3")},
        "limits": {"max_sessions": 16, "max_message_bytes": 65536, "session_queue": 1000},
        "timeouts": {"ipc_request_seconds": 2, "reconnect_initial_ms": 50,
                     "reconnect_max_ms": 200, "lease_sweep_interval_ms": 50,
                     "registration_read_seconds": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def make_config(sockdir: str, pki: PKI, **sections: Any) -> RelayConfig:
    return parse_relay_config(config_dict(sockdir, pki, **sections), sockdir)


# registration client ------------------------------------------------------------------------

class _OneShot(Protocol):
    def __init__(self, line: bytes, done: Deferred[bytes]) -> None:
        self._line = line
        self._done = done
        self._data = b""

    def connectionMade(self) -> None:
        if self._line:
            self.transport.write(self._line)

    def dataReceived(self, data: bytes) -> None:
        self._data += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self._done.called:
            self._done.callback(self._data)


async def register_raw(path: str, line: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the registration socket; returns everything the relay wrote."""
    done: Deferred[bytes] = Deferred()
    endpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)
    await endpoint.connect(Factory.forProtocol(lambda: _OneShot(line, done)))
    return await within(done, timeout, "registration ack")


async def register(path: str, payload: Any) -> dict[str, Any]:
    raw = await register_raw(path, json.dumps(payload).encode() + b"\n")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
    return json.loads(raw)


# websocket client ---------------------------------------------------------------------------

class WSClient(WebSocketClientProtocol):
    """Collects JSON messages; ``next()`` awaits the next one (of a type)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []  # everything ever received, in order
        self.closed_d: Deferred[Any] = Deferred()
        self.close_code: int | None = None
        self.was_opened = False

    def onOpen(self) -> None:
        self.was_opened = True
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        self.messages.append(message)
        self.received.append(message)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.close_code = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed before open: {reason}"))
        if not self.closed_d.called:
            self.closed_d.callback((code, reason))

    def send(self, obj: Any) -> None:
        self.sendMessage(json.dumps(obj).encode(), isBinary=False)

    async def next(self, kind: str | None = None, timeout: float = 5.0,
                   target_id: str | None = None) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for index, message in enumerate(self.messages):
                if (kind is None or message.get("type") == kind) and (
                        target_id is None or message.get("target_id") == target_id):
                    return self.messages.pop(index)
            return None

        found: list[dict[str, Any]] = []

        def check() -> bool:
            message = find()
            if message is not None:
                found.append(message)
            return bool(found)

        await eventually(check, timeout, f"message {kind} ({target_id})")
        return found[0]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == kind]

    async def hello(self) -> dict[str, Any]:
        """server_hello was sent on open; send client_hello and return the target_list."""
        await self.next("server_hello")
        self.send({"type": "client_hello", "client_store_id": "store-1", "resume_cursor": {}})
        return await self.next("target_list")


def client_tls(pki: PKI, client: certs.CertKey | None) -> Any:
    trust = Certificate.loadPEM(pki.ca.cert_pem())
    # the client's certificate and key as cryptography objects (pyOpenSSL's are deprecated)
    mine = {} if client is None else {"certificate": client.cert, "privateKey": client.key}
    return optionsForClientTLS("localhost", trustRoot=trust, extraCertificateOptions=mine)


async def connect_ws(port: int, pki: PKI, client: certs.CertKey | None, *,
                     origin: str | None = ORIGIN, headers: dict[str, str] | None = None,
                     timeout: float = 5.0) -> WSClient:
    """Open a wss:// session with a client certificate; raises if no session opens."""
    factory = WebSocketClientFactory(url=PUBLIC_URL, origin=origin, headers=headers,
                                     reactor=reactor)
    factory.protocol = WSClient
    factory.opened = Deferred()
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, client_tls(pki, client),
                                  timeout=timeout)
    proto = await endpoint.connect(factory)
    try:
        return await within(factory.opened, timeout, "websocket open")
    except BaseException:
        proto.transport.abortConnection()
        raise


async def close_ws(ws: WSClient) -> None:
    if not ws.closed_d.called:
        ws.sendClose(1000)
        try:
            await within(ws.closed_d, 5, "websocket close")
        except AssertionError:
            ws.transport.abortConnection()


class RelayHarness:
    """A RelayService on the real reactor plus the targets and sessions a test opened."""

    def __init__(self, sockdir: str, pki: PKI) -> None:
        self.sockdir = sockdir
        self.pki = pki
        self.service: RelayService | None = None
        self.targets: list[FakeTarget] = []
        self.sessions: list[WSClient] = []

    def start(self, **sections: Any) -> RelayService:
        config = make_config(self.sockdir, self.pki, **sections)
        self.service = RelayService(config, reactor=reactor)
        self.service.startService()
        return self.service

    @property
    def registration_path(self) -> str:
        assert self.service is not None
        return self.service.config.registration.listen_path

    def target(self, target_id: str = "payments-worker-a", **kw: Any) -> FakeTarget:
        path = os.path.join(self.sockdir, f"{target_id}.sock")
        target = FakeTarget(reactor, target_id, path, **kw).start()
        self.targets.append(target)
        return target

    async def register(self, target: FakeTarget, lease: int = 30) -> dict[str, Any]:
        return await register(self.registration_path,
                              registration_payload(target.target_id, target.path, lease))

    async def session(self, client: Any = None, **kw: Any) -> WSClient:
        assert self.service is not None
        cert = self.pki.operator if client is None else (client or None)
        ws = await connect_ws(self.service.https_port, self.pki, cert, **kw)
        self.sessions.append(ws)
        return ws

    async def close(self) -> None:
        for ws in self.sessions:
            await close_ws(ws)
        for target in self.targets:
            d = target.stop()
            if d is not None:
                await d
        if self.service is not None and self.service.running:
            await self.service.stopService()


async def ready(relay, target=None, client=None):
    """A relay with one registered target and an established, bound session."""
    if relay.service is None:
        relay.start()
    target = target or relay.target()
    await relay.register(target)
    ws = await relay.session(client)
    await ws.hello()
    await ws.next("state", target_id=target.target_id)
    await eventually(lambda: "logs.tail" in target.methods())
    return target, ws


NOBODY = 65534
AS_NOBODY = (
    "import json, os, socket, sys\n"
    f"os.setgid({NOBODY}); os.setuid({NOBODY})\n"
    "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode() + b'\\n')\n"
    "data = b''\n"
    "while not data.endswith(b'\\n'):\n"
    "    chunk = s.recv(4096)\n"
    "    if not chunk: break\n"
    "    data += chunk\n"
    "print(data.decode().strip())\n"
)


def register_as_nobody(registration_path: str, body: dict) -> dict:
    """One registration sent by a child process running as uid 65534 (blocking)."""
    out = subprocess.run([sys.executable, "-c", AS_NOBODY, registration_path, json.dumps(body)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def open_to_nobody(relay) -> None:
    if os.getuid() != 0:
        pytest.fail("this test needs root to register as another uid")
    os.chmod(relay.sockdir, 0o755)
