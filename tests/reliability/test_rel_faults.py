"""Faults: registration socket deleted or replaced under the relay, audit store that cannot
be opened, certificate files replaced (SIGHUP reload), relay SIGKILL and restart with real
targets, and a target link that comes back after missing events (gap → dropped count)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
from typing import Any

import pytest_twisted
from cryptography.hazmat.primitives import serialization

from rel_support import (
    ClosedError,
    RawWS,
    RelayProcess,
    TargetProcess,
    client_context,
    wait_until,
)
from relay_faketarget import fixture, registration_payload
from relay_helpers import eventually, register
from supervisor import certs

HELLO = {"type": "client_hello", "client_store_id": "faults", "resume_cursor": {}}


def critical_messages(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import LogLevel, formatEvent

    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.critical]


# registration socket deleted / replaced --------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_deleted_registration_socket_is_recreated_loudly(relay, captured_logs):
    service = relay.start()
    path = relay.registration_path
    listener = service.registration
    first_inode = os.lstat(path).st_ino
    target = relay.target()
    assert (await relay.register(target))["ok"] is True
    os.unlink(path)
    await eventually(lambda: os.path.exists(path) and listener.socket_intact(), 5,
                     "registration socket re-bound")
    assert listener.rebinds == 1
    assert any("was deleted" in m for m in critical_messages(captured_logs)), captured_logs
    assert oct(os.lstat(path).st_mode & 0o777) == oct(0o600), "mode in force again"
    # targets register through the new socket (a heartbeat renews the same entry)
    again = await register(path, registration_payload(target.target_id, target.path))
    assert again["ok"] is True
    assert os.lstat(path).st_ino != first_inode or listener.rebinds == 1


@pytest_twisted.ensureDeferred
async def test_replaced_registration_socket_is_left_alone_until_free(relay, captured_logs):
    service = relay.start()
    path = relay.registration_path
    listener = service.registration
    os.unlink(path)
    with open(path, "w") as f:  # someone else's file now sits at the path
        f.write("not a socket\n")
    await eventually(lambda: listener.rebind_error is not None, 5, "re-bind refused")
    messages = critical_messages(captured_logs)
    assert any("cannot re-bind" in m and "not a socket" in m for m in messages), messages
    with open(path) as f:
        assert f.read() == "not a socket\n", "the foreign file was not touched"
    assert listener.port is None
    os.unlink(path)  # the operator clears the path: the next check re-binds
    await eventually(lambda: listener.socket_intact(), 5, "re-bound after the path was freed")
    target = relay.target()
    assert (await relay.register(target))["ok"] is True
    # stopping the relay removes only its own socket
    await service.stopService()
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_stopping_never_removes_a_socket_that_is_not_ours(relay):
    service = relay.start()
    path = relay.registration_path
    listener = service.registration
    listener._watchdog.stop()  # freeze the watchdog: simulate the window before it looks
    os.unlink(path)
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        foreign.bind(path)
        foreign.listen(1)
        await service.stopService()
        assert os.path.exists(path), "the relay deleted a socket it does not own"
    finally:
        foreign.close()
        os.unlink(path)


# audit store unusable --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_audit_store_that_cannot_open_refuses_commands_but_watching_continues(
        relay, sockdir, captured_logs):
    blocker = os.path.join(sockdir, "not-a-dir")
    with open(blocker, "w") as f:
        f.write("x")  # the audit folder path is a regular file: works even as root
    service = relay.start(audit={"path": os.path.join(blocker, "audit.sqlite3")})
    target = relay.target()
    await relay.register(target)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    assert any("audit store" in m and "cannot be opened" in m
               for m in critical_messages(captured_logs))
    ws.send(fixture("session.command.json"))
    error = (await ws.next("error", timeout=5))["error"]
    assert error["code"] == "audit_unavailable" and error["retryable"] is True
    assert "audit record could not be written" in error["message"]
    assert not [m for m, _ in target.requests if str(m).startswith("command.")]
    event = target.emit_event("child_failed", severity="error")
    assert (await ws.next("event"))["event"] == event
    assert service.running


# a link that comes back after missing events -------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_events_missed_while_the_link_was_down_are_reported_as_dropped(relay):
    relay.start(timeouts={"reconnect_initial_ms": 50, "reconnect_max_ms": 100})
    target = relay.target()
    await relay.register(target)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    seen = target.emit_event()
    assert (await ws.next("event"))["event"] == seen
    # the IPC link drops (the target process lives on) and 300 events happen meanwhile
    await target.stop()
    assert (await ws.next("connection_state", timeout=2))["state"] == "unavailable"
    for _ in range(300):
        target.emit_event("child_restarted", severity="warning")
    for _ in range(10):
        target.emit_log("while away")
    target.start()
    assert (await ws.next("connection_state", timeout=5))["state"] == "connected"
    state = (await ws.next("state"))["state"]
    held = [e["sequence"] for e in state["recent_events"]]
    assert held == list(range(301 - 127, 302))  # the newest 128 of 301
    dropped = await ws.next("dropped_count")
    # seq 2 .. 173 were neither streamed nor in the fresh state: 172 events
    assert dropped["dropped_event_count"] == held[0] - seen["sequence"] - 1 == 172
    assert dropped["dropped_log_count"] == 0
    fresh = target.emit_event()
    assert (await ws.next("event"))["event"]["sequence"] == fresh["sequence"] == 302


# certificate files replaced: reload on SIGHUP --------------------------------------------------

def _peer_fingerprint(port: int, ctx: ssl.SSLContext) -> str:
    import hashlib

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def _fingerprint(cert: certs.CertKey) -> str:
    import hashlib

    return hashlib.sha256(cert.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _open(port: int, ctx: ssl.SSLContext) -> RawWS:
    ws = RawWS(port, ctx)
    ws.upgrade()
    assert ws.recv_json()["type"] == "server_hello"
    ws.send_json(HELLO)
    ws.target_list = ws.recv_json()
    assert ws.target_list["type"] == "target_list"
    return ws


def _still_served(ws: RawWS) -> None:
    ws.send_json({"type": "probe"})
    assert ws.recv_json()["error"]["code"] == "unsupported_message_type"


def _replace(path: str, data: bytes) -> None:
    """Atomic replacement, as deployment tools (and certbot) do it."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _connects(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        _open(port, ctx).close()
        return True
    except (ssl.SSLError, ClosedError, ConnectionError, OSError):
        return False


def test_sighup_reloads_replaced_certificates_for_new_connections(sockdir, pki, procs):
    # the relay gets its own copies of the PKI files, so replacing them affects only it
    tls_dir = os.path.join(sockdir, "tls")
    os.mkdir(tls_dir)
    paths = {k: os.path.join(tls_dir, f"{k}.pem") for k in ("cert", "key", "ca")}
    _replace(paths["cert"], pki.server.cert_pem())
    _replace(paths["key"], pki.server.key_pem())
    _replace(paths["ca"], pki.ca.cert_pem())
    relay = RelayProcess(sockdir, pki, tls={"certificate_path": paths["cert"],
                                            "private_key_path": paths["key"],
                                            "client_ca_path": paths["ca"]})
    procs.append(relay)
    relay.start_and_wait()
    old_ctx = client_context(pki, pki.operator, sockdir)
    assert _peer_fingerprint(relay.port, old_ctx) == _fingerprint(pki.server)
    old_session = _open(relay.port, old_ctx)

    # rotate everything: a new CA signs the new server and client certificates
    new_ca = certs.generate_ca("rotated CA")
    new_server = certs.issue_server_cert(new_ca)
    new_operator = certs.issue_client_cert(new_ca, (("CN", "demo operator"),))
    new_ca_file = os.path.join(sockdir, "new-ca.pem")
    with open(new_ca_file, "wb") as f:
        f.write(new_ca.cert_pem())
    new_ctx = ssl.create_default_context(cafile=new_ca_file)
    operator_file = os.path.join(sockdir, "new-operator.pem")
    with open(operator_file, "wb") as f:
        f.write(new_operator.cert_pem() + new_operator.key_pem())
    new_ctx.load_cert_chain(operator_file)
    _replace(paths["key"], new_server.key_pem())
    _replace(paths["cert"], new_server.cert_pem())
    _replace(paths["ca"], new_ca.cert_pem())
    assert not _connects(relay.port, new_ctx), "nothing changes before the signal"
    relay.send(signal.SIGHUP)
    wait_until(lambda: _connects(relay.port, new_ctx), 10, "new certificates in use")
    assert _peer_fingerprint(relay.port, new_ctx) == _fingerprint(new_server)
    assert not _connects(relay.port, old_ctx), "the old CA is no longer trusted"
    _still_served(old_session)  # established sessions are not cut
    assert "TLS certificates reloaded" in relay.output()

    # a broken replacement (key of another certificate) is refused; the old ones stay
    _replace(paths["key"], certs.issue_server_cert(new_ca).key_pem())
    relay.send(signal.SIGHUP)
    wait_until(lambda: "TLS reload failed" in relay.output(), 10, "reload refused")
    assert relay.alive()
    assert _peer_fingerprint(relay.port, new_ctx) == _fingerprint(new_server)
    _still_served(old_session)
    old_session.close()


# relay SIGKILL and restart with real targets ---------------------------------------------------

HEARTBEAT = 2


def _drain_until(ws: RawWS, predicate: Any, timeout: float, seen: list[dict[str, Any]]) -> Any:
    """Read messages (kept in ``seen``) until one satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    ws.sock.settimeout(0.2)
    try:
        while time.monotonic() < deadline:
            try:
                message = ws.recv_json()
            except (socket.timeout, TimeoutError, ssl.SSLError) as e:
                if isinstance(e, ssl.SSLError) and "timed out" not in str(e):
                    raise
                continue
            seen.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no matching message within {timeout}s; last: {seen[-3:]}")
    finally:
        ws.sock.settimeout(10)


def _command(command_id: str, target_id: str, command: str) -> dict[str, Any]:
    message = fixture("session.command.json")
    message.update(command_id=command_id, correlation_id=None, target_id=target_id,
                   command=command, target={"child_path": "/root/spare"},
                   reason="reliability test", confirmed=False)
    return message


def _audit_rows(path: str) -> list[tuple[str, str, str]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT audit_id, command_id, result FROM audit ORDER BY seq"
                            ).fetchall()
    finally:
        conn.close()


def test_relay_sigkill_restart_targets_reregister_sessions_resume_no_audit_lost(
        sockdir, pki, procs):
    relay = RelayProcess(sockdir, pki, timeouts={"reconnect_initial_ms": 100,
                                                 "reconnect_max_ms": 500})
    procs.append(relay)
    relay.start_and_wait()
    ids = ["tgt-a", "tgt-b"]
    for target_id in ids:
        procs.append(TargetProcess(sockdir, target_id, relay.registration_path,
                                   interval=HEARTBEAT, lease=10).start_and_wait())
    ctx = client_context(pki, pki.operator, sockdir)
    ws = _open(relay.port, ctx)
    seen: list[dict[str, Any]] = []
    stated: set[str] = set()

    def both_stated(message: dict[str, Any]) -> bool:
        if message["type"] == "state":
            stated.add(message["target_id"])
        return stated == set(ids)

    _drain_until(ws, both_stated, 30, seen)
    # commands, each awaited to its result; then one more, and the relay dies meanwhile
    for index in range(6):
        target_id = ids[index % 2]
        ws.send_json(_command(f"c{index}", target_id, ("pause_child", "resume_child")[
            (index // 2) % 2]))
        result = _drain_until(ws, lambda m, i=index: m["type"] == "command_result"
                              and m["result"]["command_id"] == f"c{i}", 15, seen)
        assert result["result"]["status"] == "completed", result
    ws.send_json(_command("in-flight", "tgt-a", "pause_child"))
    relay.stop(signal.SIGKILL)
    try:  # whatever the relay still managed to say before it died
        _drain_until(ws, lambda m: False, 1.0, seen)
    except (AssertionError, ClosedError, OSError):
        pass
    ws.close()
    announced = {m["audit"]["audit_id"]: (m["audit"]["command_id"], m["audit"]["result"])
                 for m in seen if m["type"] == "audit_event"}
    assert len(announced) >= 12

    restarted = RelayProcess(sockdir, pki, name="relay2", port=relay.port,
                             timeouts={"reconnect_initial_ms": 100, "reconnect_max_ms": 500})
    procs.append(restarted)
    restarted.start()
    wait_until(restarted.listening, 30, "relay restarted")
    ws = _open(restarted.port, ctx)
    seen2: list[dict[str, Any]] = []
    registered: set[str] = set()

    def all_listed(message: dict[str, Any]) -> bool:
        if message["type"] == "target_list":
            registered.update(t["target_id"] for t in message["targets"])
        return registered == set(ids)

    if not all_listed(ws.target_list):
        _drain_until(ws, all_listed, 30, seen2)
    # the contract: targets re-register within one heartbeat interval of the relay being
    # back, because no retry waits longer than the interval (the bound itself is checked on
    # a fake clock in tests/test_registration_heartbeat.py); here: what the targets chose
    for proc in procs:
        if isinstance(proc, TargetProcess):
            delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+) s", proc.output())]
            assert max(delays, default=0.0) <= HEARTBEAT, (proc.target_id, delays)
    stated.clear()
    if not any([both_stated(m) for m in seen2]):
        _drain_until(ws, both_stated, 30, seen2)
    # the new session replays the audit: every record announced before the crash is there
    replayed: dict[str, tuple[str, str]] = {}

    def replay_complete(message: dict[str, Any]) -> bool:
        if message["type"] == "audit_event":
            audit = message["audit"]
            replayed[audit["audit_id"]] = (audit["command_id"], audit["result"])
        return set(announced) <= set(replayed)

    for message in seen2:
        replay_complete(message)
    if not set(announced) <= set(replayed):
        _drain_until(ws, replay_complete, 15, seen2)
    for audit_id, record in announced.items():
        assert replayed[audit_id] == record
    rows = {a: (c, r) for a, c, r in _audit_rows(restarted.audit_path)}
    for audit_id, record in announced.items():
        assert rows[audit_id] == record
    for index in range(6):
        assert [r for c, r in rows.values() if c == f"c{index}"] == ["accepted", "completed"]
    # and commands work again through the restarted relay
    ws.send_json(_command("after", "tgt-b", "resume_child"))
    result = _drain_until(ws, lambda m: m["type"] == "command_result", 15, seen2)
    assert result["result"]["command_id"] == "after"
    ws.close()
