"""``twistd supervisor-relay`` as a real subprocess: --check, config errors, smoke, restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from relay_faketarget import FakeTarget, fixture, registration_payload
from relay_helpers import close_ws, config_dict, connect_ws, eventually, register
from tests.ports import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def env() -> dict[str, str]:
    # the repository root on sys.path makes twisted/plugins/supervisor_plugins.py visible
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}




def write_config(sockdir: str, pki: Any, **sections: Any) -> str:
    data = config_dict(sockdir, pki, **sections)
    path = os.path.join(sockdir, "relay.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def run_check(config: str, cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TWISTD, "supervisor-relay", "--config", config, "--check"],
                          cwd=cwd, env=env(), capture_output=True, text=True, timeout=60)


class Relay:
    """A ``twistd -n supervisor-relay`` child process."""

    def __init__(self, config: str, cwd: str, port: int) -> None:
        self.config, self.cwd, self.port = config, cwd, port
        self.log = open(os.path.join(cwd, "relay.log"), "ab")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--logfile=-", "supervisor-relay", "--config", config],
            cwd=cwd, env=env(), stdout=self.log, stderr=subprocess.STDOUT)

    def listening(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def output(self) -> str:
        with open(os.path.join(self.cwd, "relay.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def processes():
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.stop(signal.SIGKILL)


def test_check_ok_and_errors_name_the_key(sockdir, pki):
    config = write_config(sockdir, pki)
    ok = run_check(config, sockdir)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok"
    assert not os.path.exists(os.path.join(sockdir, "reg.sock"))  # nothing was started
    bad = write_config(sockdir, pki, registration={"allowed_ipc_path_prefixes": "nope"})
    result = run_check(bad, sockdir)
    assert result.returncode != 0
    assert "registration.allowed_ipc_path_prefixes" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    bad = write_config(sockdir, pki, listen={"public_url": "ws://localhost:1/x"})
    result = run_check(bad, sockdir)
    assert result.returncode != 0 and "listen.public_url" in result.stderr
    bad = write_config(sockdir, pki, tls={"client_ca_path": "/nonexistent/ca.pem"})
    result = run_check(bad, sockdir)
    assert result.returncode != 0 and "tls.client_ca_path" in result.stderr


def test_normal_start_with_bad_config_exits_nonzero_without_traceback(sockdir, pki):
    bad = write_config(sockdir, pki, limits={"session_queue": "many"})
    result = subprocess.run([TWISTD, "-n", "supervisor-relay", "--config", bad], cwd=sockdir,
                            env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "limits.session_queue" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_listener_that_cannot_bind_ends_start_up_with_its_message(sockdir, pki):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_config(sockdir, pki, listen={"bind": f"127.0.0.1:{port}"})
        result = subprocess.run([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                                 "--config", config], cwd=sockdir, env=env(),
                                capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot listen for HTTPS/WSS on 127.0.0.1:{port}" in output, output[-2000:]
    assert "Traceback" not in output
    # the registration path held by something that is not a socket: the same
    registration = os.path.join(sockdir, "reg.sock")
    if os.path.lexists(registration):
        os.unlink(registration)  # left by the run that could not bind (stale: cleared at start)
    with open(registration, "w") as f:
        f.write("not a socket")
    config = write_config(sockdir, pki, listen={"bind": f"127.0.0.1:{free_port()}"})
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                             "--config", config], cwd=sockdir, env=env(),
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "cannot listen for registrations on" in output and "not a socket" in output


def test_demo_config_checks_with_demo_certs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(os.path.join(REPO, "etc", "demo-relay.yaml"), etc / "demo-relay.yaml")
    out = subprocess.run([sys.executable, "-m", "supervisor.certs", "--out",
                          str(tmp_path / ".local" / "certs")], env=env(), cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = run_check(str(etc / "demo-relay.yaml"), str(tmp_path))
    assert result.returncode == 0, result.stderr + result.stdout


async def _session_state(port: int, pki: Any, target_id: str):
    ws = await connect_ws(port, pki, pki.operator)
    await ws.hello()
    await ws.next("state", target_id=target_id, timeout=10)
    return ws


@pytest_twisted.ensureDeferred
async def test_twistd_smoke_and_audit_survives_crash_restart(sockdir, pki, processes):
    port = free_port()
    config = write_config(sockdir, pki, listen={"bind": f"127.0.0.1:{port}"})
    relay = Relay(config, sockdir, port)
    processes.append(relay)
    await eventually(relay.listening, 30, "relay listening")
    assert os.path.exists(os.path.join(sockdir, "supervisor-relay.pid"))
    target = FakeTarget(reactor, "payments-worker-a",
                        os.path.join(sockdir, "payments-worker-a.sock")).start()
    try:
        registration = os.path.join(sockdir, "reg.sock")
        ack = await register(registration, registration_payload(target.target_id, target.path))
        assert ack["ok"] is True
        ws = await _session_state(port, pki, target.target_id)
        await eventually(lambda: "logs.tail" in target.methods(), 10)
        event = target.emit_event("child_failed", severity="error")
        assert (await ws.next("event"))["event"] == event
        message = fixture("session.command.json")
        ws.send(message)
        result = (await ws.next("command_result", timeout=10))["result"]
        assert result["status"] == "completed"
        await ws.next("audit_event")
        await ws.next("audit_event")
        # crash the relay: no clean shutdown, no chance to flush anything late
        await deferToThread(relay.stop, signal.SIGKILL)
        await ws.closed_d
        await eventually(lambda: target.connections == [], 5)
        relay2 = Relay(config, sockdir, port)
        processes.append(relay2)
        await eventually(relay2.listening, 30, "relay restarted")
        ack = await register(registration, registration_payload(target.target_id, target.path))
        assert ack["ok"] is True
        ws2 = await _session_state(port, pki, target.target_id)
        replay = [await ws2.next("audit_event", timeout=10) for _ in range(2)]
        assert [(a["audit"]["command_id"], a["audit"]["result"]) for a in replay] == [
            ("cmd-7f3a", "accepted"), ("cmd-7f3a", "completed")]
        await close_ws(ws2)
        code = await deferToThread(relay2.stop)
        # twistd re-raises the stopping signal on itself after a clean shutdown
        assert code in (0, -signal.SIGTERM), relay2.output()
        assert "Server Shut Down." in relay2.output()
        assert "sent 4 bytes" not in relay2.output(), "autobahn debug logging is off"
        assert not os.path.exists(registration), "registration socket removed on stop"
    finally:
        await target.stop()
    conn = sqlite3.connect(os.path.join(sockdir, "audit.sqlite3"))
    try:
        rows = conn.execute("SELECT result FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert rows == [("accepted",), ("completed",)]


def audit_rows(path: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT command_id, result, detail FROM audit ORDER BY seq"
                            ).fetchall()
    finally:
        conn.close()


def finished(target: FakeTarget, command_id: str, status: str, error: str | None = None):
    """The ``command_completed`` event a target journals when it finishes a command."""
    return target.emit_event("command_completed", "invoice_writer", correlation_id=command_id,
                             payload={"command": "pause_child", "status": status,
                                      "error": error})


@pytest_twisted.ensureDeferred
async def test_commands_in_flight_at_a_relay_crash_are_interrupted_then_settled(
        sockdir, pki, processes):
    port = free_port()
    config = write_config(sockdir, pki, listen={"bind": f"127.0.0.1:{port}"})
    database = os.path.join(sockdir, "audit.sqlite3")
    registration = os.path.join(sockdir, "reg.sock")
    relay = Relay(config, sockdir, port)
    processes.append(relay)
    await eventually(relay.listening, 30, "relay listening")
    target = FakeTarget(reactor, "payments-worker-a",
                        os.path.join(sockdir, "payments-worker-a.sock")).start()
    try:
        ack = await register(registration, registration_payload(target.target_id, target.path))
        assert ack["ok"] is True
        ws = await _session_state(port, pki, target.target_id)
        await eventually(lambda: "logs.tail" in target.methods(), 10)
        target.freeze()  # the commands reach the target; no answer comes back
        ids = ["cmd-done", "cmd-failed", "cmd-late", "cmd-unknown"]
        for command_id in ids:
            ws.send({**fixture("session.command.json"), "command_id": command_id})
        accepted = [await ws.next("audit_event", timeout=10) for _ in ids]
        assert {a["audit"]["result"] for a in accepted} == {"accepted"}
        await deferToThread(relay.stop, signal.SIGKILL)  # mid-command
        await ws.closed_d
        await eventually(lambda: target.connections == [], 5)
        # while the relay was down the target finished two of them
        done = finished(target, "cmd-done", "completed")
        failed = finished(target, "cmd-failed", "failed", "illegal_transition")
        target.thaw()
        assert [r[1] for r in audit_rows(database)] == ["accepted"] * 4

        relay2 = Relay(config, sockdir, port)
        processes.append(relay2)
        await eventually(relay2.listening, 30, "relay restarted")
        await eventually(lambda: len(audit_rows(database)) == 8, 10, "interrupted marked")
        marks = audit_rows(database)[4:]
        assert [(c, r) for c, r, _ in marks] == [(c, "interrupted") for c in ids]
        ack = await register(registration, registration_payload(target.target_id, target.path))
        assert ack["ok"] is True
        ws2 = await _session_state(port, pki, target.target_id)
        # settled from the events in the first state, and from one streamed later
        await eventually(lambda: len(audit_rows(database)) == 10, 10, "settled from state")
        await eventually(lambda: "logs.tail" in target.methods(), 10)
        late = finished(target, "cmd-late", "completed")
        await eventually(lambda: len(audit_rows(database)) == 11, 10, "settled from a push")
        settled = {c: (r, d) for c, r, d in audit_rows(database)[8:]}
        assert settled["cmd-done"][0] == "completed"
        assert f"sequence {done['sequence']}" in settled["cmd-done"][1]
        assert settled["cmd-failed"][0] == "failed"
        assert "illegal_transition" in settled["cmd-failed"][1]
        assert f"sequence {failed['sequence']}" in settled["cmd-failed"][1]
        assert settled["cmd-late"][0] == "completed"
        assert f"sequence {late['sequence']}" in settled["cmd-late"][1]
        assert "cmd-unknown" not in settled  # the target never said: it stays interrupted

        def seen() -> dict[str, set[str]]:
            out: dict[str, set[str]] = {}
            for m in ws2.of_type("audit_event"):
                out.setdefault(m["audit"]["command_id"], set()).add(m["audit"]["result"])
            return out

        await eventually(lambda: seen().get("cmd-late", set()) >= {"completed"}, 10)
        assert seen()["cmd-done"] == {"accepted", "interrupted", "completed"}
        assert seen()["cmd-failed"] == {"accepted", "interrupted", "failed"}
        assert seen()["cmd-unknown"] == {"accepted", "interrupted"}
        await close_ws(ws2)
        await deferToThread(relay2.stop)
    finally:
        await target.stop()
    # a further restart marks nothing again and settles nothing twice
    relay3 = Relay(config, sockdir, port)
    processes.append(relay3)
    await eventually(relay3.listening, 30, "relay restarted again")
    assert len(audit_rows(database)) == 11
    await deferToThread(relay3.stop)
    assert len(audit_rows(database)) == 11


def _write_cert(directory: str, name: str, cert: Any) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(cert.cert_pem())
    return path


def _start_output(config: str, cwd: str) -> tuple[int, str]:
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                             "--config", config], cwd=cwd, env=env(), capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def _bad_certificate_configs(sockdir: str, pki: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(key named, words of the message, config sections) of each unusable set-up."""
    from supervisor import certs

    before, after = certs.expired_window()
    expired_server = certs.issue_server_cert(pki.ca, not_before=before, not_after=after)
    expired_server.write(os.path.join(sockdir, "expired.pem"),
                         os.path.join(sockdir, "expired-key.pem"))
    expired_ca = _write_cert(sockdir, "expired-ca.pem",
                             certs.generate_ca("old CA", not_before=before, not_after=after))
    leaf_ca = _write_cert(sockdir, "leaf-ca.pem", pki.operator)
    return [
        ("tls.certificate_path", "expired", {"tls": {
            "certificate_path": os.path.join(sockdir, "expired.pem"),
            "private_key_path": os.path.join(sockdir, "expired-key.pem")}}),
        ("tls.client_ca_path", "expired", {"tls": {"client_ca_path": expired_ca}}),
        ("tls.client_ca_path", "not a CA certificate", {"tls": {"client_ca_path": leaf_ca}}),
        ("listen.public_url", "not named in the server certificate", {"listen": {
            "public_url": "wss://relay.example.org:9443/supervisor"}}),
    ]


def test_check_and_start_refuse_certificates_no_client_could_use(sockdir, pki):
    for key, words, sections in _bad_certificate_configs(sockdir, pki):
        config = write_config(sockdir, pki, **sections)
        checked = run_check(config, sockdir)
        assert checked.returncode == 2, (key, checked.stdout)
        assert checked.stdout.strip() != "ok"
        assert key in checked.stderr and words in checked.stderr, checked.stderr
        code, output = _start_output(config, sockdir)
        assert code != 0, (key, output[-2000:])
        assert key in output and words in output, output[-2000:]
        assert "Usage:" not in output and "Traceback" not in output, output[-2000:]
        assert not os.path.exists(os.path.join(sockdir, "reg.sock")), "nothing was started"


def test_a_proxy_mode_relay_need_not_name_the_public_host(sockdir, pki):
    config = write_config(sockdir, pki, listen={"public_url": "wss://relay.example.org/s"},
                          trusted_proxy={"enabled": True, "allowed_remote_addrs": ["127.0.0.1"]})
    checked = run_check(config, sockdir)
    assert checked.returncode == 0 and checked.stdout.strip() == "ok", checked.stderr


def test_config_errors_at_start_are_printed_without_usage_text(sockdir, pki):
    bad = write_config(sockdir, pki, limits={"session_queue": "many"})
    code, output = _start_output(bad, sockdir)
    assert code == 2
    assert "limits.session_queue" in output
    assert "Usage:" not in output and "--help" not in output, output
