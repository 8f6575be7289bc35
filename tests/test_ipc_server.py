"""The target IPC socket, driven over a real Unix socket (CONTRACTS.md §1)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import stat
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from supervisor.config.target import AddChildPolicy, IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.spec import ChildKind, ChildSpec, ShutdownPolicy, SupervisorSpec
from tests.waiting import eventually
from tests.ipc_support import TARGET_ID, SocketBackedTransport, Target

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def keys(obj):
    return set(obj)


@pytest_twisted.ensureDeferred
async def test_hello_and_state_match_the_contract_shapes():
    target = Target().start()
    try:
        client = await target.connect()
        hello = await client.call("hello", None, "r1")
        assert hello["request_id"] == "r1" and hello["ok"] is True
        assert hello["result"] == {"type": "hello", "protocol_version": "dashboard-ipc.v1",
                                   "target_id": TARGET_ID, "registration": None}
        state = await client.call("state", {"target_id": TARGET_ID}, "r2")
        want = example("ipc.state.response.json")
        assert keys(state) == keys(want) and keys(state["result"]) == keys(want["result"])
        # beside the example's fields, the documented extension field (docs/protocol.md)
        assert keys(state["result"]["state"]) == keys(want["result"]["state"]) | {"target_resources"}
        paths = [n["path"] for n in state["result"]["state"]["topology"]["nodes"]]
        assert paths == ["/root", "/root/worker", "/root/invoice_writer"]
        stat_mode = stat.S_IMODE(os.stat(target.path).st_mode)
        assert stat_mode == 0o600
    finally:
        await target.stop()
    assert not os.path.exists(target.path), "socket removed on clean shutdown"


@pytest_twisted.ensureDeferred
async def test_protocol_errors_keep_the_connection_open():
    target = Target().start()
    try:
        client = await target.connect()
        client.send_raw(b"{not json\n")
        bad = await client.next()
        assert bad == example("ipc.error-invalid-json.json") | {"error": bad["error"]}
        assert bad["request_id"] == "invalid-request" and bad["error"]["code"] == "invalid_json"
        client.send_raw(b"\n")
        assert (await client.next())["error"]["code"] == "invalid_json"
        client.send_raw(b"[1, 2]\r\n")
        assert (await client.next())["error"]["message"] == "request line is not a JSON object"
        client.send({"method": "hello"})
        missing = await client.next()
        assert missing["request_id"] == "invalid-request" and missing["error"]["code"] == "invalid_request"
        for method in ("restart", "stop_child", "dashboard.snapshot", "tailLogs", "HELLO"):
            reply = await client.call(method, None, "r6")
            assert reply["request_id"] == "r6"
            assert reply["error"]["code"] == "unsupported_method"
            assert set(reply["error"]) == {"code", "stage", "target_id", "message", "retryable"}
        wrong = await client.call("state", {"target_id": "someone-else"}, "r7")
        assert wrong["error"]["code"] == "validation_failed" and wrong["error"]["stage"] == "state"
        assert (await client.call("hello", None, "r8"))["ok"] is True
        assert not client.closed
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_oversized_request_gets_request_too_large_then_close():
    target = Target(max_request_bytes=2048).start()
    try:
        client = await target.connect()
        client.send_raw(b'{"request_id": "big", "method": "hello", "params": "' + b"x" * 4096 + b'"}\n')
        reply = await client.next()
        assert reply["error"]["code"] == "request_too_large"
        await eventually(lambda: client.closed, what="connection closed")
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_responses_come_in_request_order_even_behind_a_slow_command():
    target = Target().start()
    try:
        client = await target.connect()
        command = {"command_id": "c1", "correlation_id": None, "target_id": TARGET_ID,
                   "command": "restart_child", "target": {"child_path": "/root/worker"},
                   "reason": "r", "requested_by": "CN=op", "confirmed": False}
        client.send({"request_id": "a", "method": "command.restart_child", "params": command})
        client.send({"request_id": "b", "method": "hello", "params": None})
        client.send({"request_id": "c", "method": "state", "params": None})
        ids = [(await client.next())["request_id"] for _ in range(3)]
        assert ids == ["a", "b", "c"]
    finally:
        await target.stop()


@pytest.mark.parametrize("max_backlog_lines, pauses", [(4, True), (8, False)])
def test_a_pipelining_client_waits_beyond_max_backlog_lines(max_backlog_lines, pauses):
    stubborn = ManualTask(cooperative=False)  # ignores the polite stop: restart takes 1 s
    harness = TreeHarness(SupervisorSpec(
        children=[ChildSpec("w", ChildKind.TASK, factory=stubborn)],
        shutdown=ShutdownPolicy(graceful_timeout_ms=1000, abort_wait_ms=100),
    ), target_id=TARGET_ID).start()
    config = IpcConfig(enabled=True, target_id=TARGET_ID, path="/unused",
                       max_backlog_lines=max_backlog_lines)
    protocol = IpcServer(harness.supervisor, config, None, harness.clock).buildProtocol(None)
    transport = SocketBackedTransport()
    protocol.makeConnection(transport)
    restart = {"command_id": "c1", "correlation_id": None, "target_id": TARGET_ID,
               "command": "restart_child", "target": {"child_path": "/root/w"},
               "reason": "r", "requested_by": "CN=op", "confirmed": False}
    lines = [{"request_id": "cmd", "method": "command.restart_child", "params": restart}]
    lines += [{"request_id": f"h{i}", "method": "hello", "params": None} for i in range(6)]
    protocol.dataReceived(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    # the restart is still running: one request in hand, six read but unanswered
    assert transport.value() == b""
    assert transport.producerState == ("paused" if pauses else "producing")
    harness.advance(2)
    replies = [json.loads(line) for line in transport.value().splitlines()]
    assert [r["request_id"] for r in replies] == ["cmd"] + [f"h{i}" for i in range(6)]
    assert replies[0]["result"]["result"]["status"] == "completed"
    assert transport.producerState == "producing"


def _connect_as(uid: int, path: str) -> str:
    script = (
        "import os, socket, sys\n"
        f"os.setuid({uid})\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.connect({path!r})\n"
        "s.settimeout(5)\n"
        "try:\n"
        "    s.sendall(b'{\"request_id\": \"x\", \"method\": \"hello\", \"params\": null}\\n')\n"
        "except BrokenPipeError:\n"
        "    pass  # a refused peer is cut off on accept, maybe before it writes\n"
        "print(s.recv(65536).decode())\n"
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20).stdout


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")
@pytest_twisted.ensureDeferred
async def test_peers_with_another_uid_are_refused_unless_allowed():
    from twisted.internet import threads

    target = Target(permissions=0o666).start()
    allowed = Target(permissions=0o666, allowed_uids=(65534,)).start()
    try:
        os.chmod(target.dir, 0o755)
        os.chmod(allowed.dir, 0o755)
        refused = json.loads(await threads.deferToThread(_connect_as, 65534, target.path))
        assert refused["error"]["code"] == "peer_cred_uid_mismatch"
        accepted = json.loads(await threads.deferToThread(_connect_as, 65534, allowed.path))
        assert accepted["ok"] is True
    finally:
        await target.stop()
        await allowed.stop()


@pytest_twisted.ensureDeferred
async def test_idle_connections_are_closed_but_subscribed_ones_stay():
    target = Target(idle_timeout_seconds=0.3).start()
    try:
        idle = await target.connect()
        follower = await target.connect()
        await follower.call("events.subscribe", {"target_id": TARGET_ID, "session_established": True})
        await eventually(lambda: idle.closed, what="idle connection closed")
        assert not follower.closed
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_subscriptions_need_a_session():
    target = Target().start()
    try:
        client = await target.connect()
        for method in ("events.subscribe", "logs.tail"):
            reply = await client.call(method, {"target_id": TARGET_ID})
            assert reply["error"]["code"] == "session_required"
            assert reply["error"]["stage"] == "subscription"
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_events_replay_after_since_sequence_then_stream_live_to_two_subscribers():
    target = Target().start()
    try:
        journal = target.supervisor.events
        start_seq = journal.last_sequence
        first, second = await target.connect(), await target.connect()
        ack = await first.call("events.subscribe",
                               {"target_id": TARGET_ID, "session_established": True, "since_sequence": 2})
        assert ack["result"] == {"type": "subscription", "target_id": TARGET_ID, "subscription": "events"}
        replayed = [await first.next() for _ in range(start_seq - 2)]
        assert [p["event"]["sequence"] for p in replayed] == list(range(3, start_seq + 1))
        assert all(p["type"] == "event" and "request_id" not in p for p in replayed)
        await second.call("events.subscribe", {"target_id": TARGET_ID, "session_established": True,
                                               "since_sequence": start_seq})
        target.worker.current.fail(RuntimeError("boom"))
        for client in (first, second):
            failed = await client.until(lambda l: l["type"] == "event" and l["event"]["event_type"] == "child_failed")
            assert failed["event"]["target_path"] == "/root/worker"
            delta = await client.until(lambda l: l["type"] == "state_delta")
            assert set(delta["delta"]) <= {"state_generation", "topology", "runtime_state",
                                           "dropped_event_count", "dropped_log_count"}
            restarted = await client.until(lambda l: l["type"] == "event" and l["event"]["event_type"] == "child_restarted")
            assert restarted["event"]["sequence"] > failed["event"]["sequence"]
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_logs_tail_replays_the_last_lines_then_follows_process_output():
    script = "import time\nfor i in range(1000):\n    print(f'line {i}', flush=True)\n    time.sleep(0.05)\n"
    target = Target(children=[ChildSpec("printer", ChildKind.PROCESS, command=[sys.executable, "-u", "-c", script])]).start()
    try:
        await eventually(lambda: len(target.supervisor.logs) >= 3)
        client = await target.connect()
        ack = await client.call("logs.tail", {"target_id": TARGET_ID, "session_established": True, "lines": 2})
        assert ack["result"]["subscription"] == "logs"
        replay = [await client.next() for _ in range(2)]
        assert all(p["type"] == "log" for p in replay)
        live = await client.until(lambda l: l["log"]["sequence"] > replay[-1]["log"]["sequence"])
        assert live["log"]["fields"] == {"stream": "stdout", "child_path": "/root/printer"}
        assert live["log"]["message"].startswith("line ")
        assert set(live["log"]) == set(example("ipc.push-log.json")["log"])
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_a_slow_subscriber_overflows_with_dropped_counts_and_others_get_everything():
    target = Target(max_pending_pushes=32).start()
    try:
        slow, fast = await target.connect(), await target.connect()
        for client in (slow, fast):
            await client.call("logs.tail", {"target_id": TARGET_ID, "session_established": True, "lines": 0})
        slow.transport.pauseProducing()  # stop reading: the server's socket buffer fills up
        connection = next(c for c in target.ipc_service.server.connections if "logs" in c.subscriptions
                          and c.dropped_logs == 0)
        bulk = "y" * 1000
        count = 3000
        for batch in range(0, count, 10):
            for i in range(batch, batch + 10):
                target.supervisor.tree.log("info", f"{i} {bulk}", {})
            for c in target.ipc_service.server.connections:
                assert c.out.pending <= 32
            await task.deferLater(reactor, 0, lambda: None)
        await eventually(lambda: len(fast.lines) >= count + 1, what="fast reader got every line")
        assert [l["log"]["message"].split()[0] for l in fast.lines[1:]] == [str(i) for i in range(count)]
        slow_connection = max(target.ipc_service.server.connections, key=lambda c: c.dropped_logs)
        assert slow_connection.dropped_logs > 0 and connection is not None
        slow.transport.resumeProducing()
        report = await slow.until(lambda l: l["type"] == "dropped_count", timeout=10)
        assert report["dropped_log_count"] == slow_connection.dropped_logs
        assert report["dropped_event_count"] == 0
        received = sum(1 for l in slow.lines if l.get("type") == "log")
        assert received + report["dropped_log_count"] == count
    finally:
        await target.stop()


def command(name: str, path: str | None = "/root/worker", **extra) -> dict:
    params = {"command_id": f"cmd-{name}", "correlation_id": None, "target_id": TARGET_ID,
              "command": name, "target": {"child_path": path, "child_manifest": None},
              "reason": "maintenance window", "requested_by": "O=Example Ops, CN=demo operator",
              "confirmed": False, "requested_at": "2026-11-28T13:05:15.123456Z",
              "requested_at_unix_nanos": 1795871115123456000}
    params.update(extra)
    return params


@pytest_twisted.ensureDeferred
async def test_commands_tell_the_truth():
    target = Target(add_child=AddChildPolicy(allowed_callables=("supervisor.demo",))).start()
    try:
        client = await target.connect()
        await client.call("events.subscribe", {"target_id": TARGET_ID, "session_established": True,
                                               "since_sequence": target.supervisor.events.last_sequence})
        client.send({"request_id": "p", "method": "command.pause_child", "params": command("pause_child")})
        reply = await client.until(lambda l: l.get("request_id") == "p")
        result = reply["result"]["result"]
        assert reply["ok"] is True and result["accepted"] is True and result["status"] == "completed"
        assert result["correlation_id"] == "cmd-pause_child" and result["error"] is None
        assert result["state_delta"]["runtime_state"][0]["lifecycle_state"] == "paused"
        assert set(result) == set(example("ipc.command.response.json")["result"]["result"])
        caused = [l["event"] for l in client.lines if l.get("type") == "event"]
        assert caused and all(e["correlation_id"] == "cmd-pause_child" for e in caused)
        assert "child_paused" in [e["event_type"] for e in caused]

        async def run(name, request_id, **kw):
            client.send({"request_id": request_id, "method": f"command.{name}",
                         "params": command(name, **kw)})
            return await client.until(lambda l: l.get("request_id") == request_id)

        again = (await run("pause_child", "p2"))["result"]["result"]
        assert (again["accepted"], again["status"], again["error"]["code"]) == (False, "failed", "illegal_transition")
        unknown = (await run("restart_child", "u", target={"child_path": "/root/nope"}))["result"]["result"]
        assert unknown["error"] == example("ipc.command.response-failed.json")["result"]["result"]["error"]
        blank = (await run("resume_child", "b", reason=" "))["result"]["result"]
        assert (blank["status"], blank["error"]["code"]) == ("rejected", "empty_reason")
        danger = (await run("remove_child", "d"))["result"]["result"]
        assert (danger["status"], danger["error"]["code"]) == ("rejected", "confirmation_required")
        mismatch = await run("pause_child", "m", command="resume_child")
        assert mismatch["ok"] is False and mismatch["error"]["code"] == "invalid_command_params"
        other = await run("pause_child", "o", target_id="elsewhere")
        assert other["error"]["code"] == "validation_failed" and other["error"]["stage"] == "command_validate"
        client.send({"request_id": "x", "method": "command.pause_child", "params": {"command": "pause_child"}})
        missing = await client.until(lambda l: l.get("request_id") == "x")
        assert missing["error"]["code"] == "invalid_command_params"
        added = (await run("add_child", "a", confirmed=True,
                           target={"child_path": None,
                                   "child_manifest": "{name: extra, kind: task, callable: 'supervisor.demo:steady_worker'}"}))
        assert added["result"]["result"]["status"] == "completed"
        assert "/root/extra" in [n["path"] for n in added["result"]["result"]["state_delta"]["topology"]["nodes"]]
        resumed = (await run("resume_child", "r"))["result"]["result"]
        assert resumed["status"] == "completed"
        assert resumed["state_delta"]["runtime_state"][0]["lifecycle_state"] == "running"
    finally:
        await target.stop()


def test_bind_modes(tmp_path):
    from supervisor.ipc.socketpath import SocketPathRefused, prepare_socket_path

    short = pathlib.Path(os.path.realpath(tmp_path))
    regular = short / "file.sock"
    regular.write_text("x")
    link = short / "link.sock"
    link.symlink_to(regular)
    stale = str(short / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # bound, never listening: a stale socket
    live = str(short / "live.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(live)
    server.listen(1)
    try:
        with pytest.raises(SocketPathRefused, match="create_new"):
            prepare_socket_path(stale, "create_new")
        for path, why in ((str(regular), "not a socket"), (str(link), "symlink"), (live, "listening")):
            with pytest.raises(SocketPathRefused, match=why):
                prepare_socket_path(path, "replace_stale")
        prepare_socket_path(stale, "replace_stale")
        assert not os.path.exists(stale)
        prepare_socket_path(str(short / "absent.sock"), "create_new")
    finally:
        server.close()


@pytest_twisted.ensureDeferred
async def test_create_new_refuses_an_existing_path_and_leaves_it_alone():
    target = Target()
    pathlib.Path(target.path).write_text("someone else's file")
    target.start()
    try:
        assert "already exists" in target.ipc_service.failure
        assert pathlib.Path(target.path).read_text() == "someone else's file"
    finally:
        await target.stop()


def _logs_a_non_utf8_filename(ctx):
    ctx.logger.info("wrote {name}", name=os.fsdecode(b"report-\xff.csv"))
    ctx.mark_ready()
    return ctx.cancellation


@pytest_twisted.ensureDeferred
async def test_lone_surrogates_never_make_the_state_unencodable():
    target = Target(children=[ChildSpec("writer", ChildKind.TASK, factory=_logs_a_non_utf8_filename)],
                    add_child=AddChildPolicy(allowed_callables=("supervisor.demo",)))
    target.start()
    try:
        client = await target.connect()
        state = await client.call("state", {"target_id": TARGET_ID}, request_id="s1")
        assert state["ok"] is True, state
        logged = [l for l in state["result"]["state"]["recent_logs"] if "report-" in l["message"]]
        assert logged[0]["message"] == "wrote report-\ufffd.csv"
        assert logged[0]["fields"]["name"] == "report-\ufffd.csv"
        # json.dumps writes a lone surrogate as the escape "\udcff": the request carries it
        manifest = {"name": "extra", "kind": "task", "callable": "supervisor.demo:steady_worker",
                    "display_name": "report-\udcff", "tags": ["t\ud800"]}
        client.send({"request_id": "a", "method": "command.add_child", "params": command(
            "add_child", None, confirmed=True, reason="import \udcff",
            requested_by="CN=op\ud800", target={"child_path": None, "child_manifest": manifest})})
        added = await client.until(lambda l: l.get("request_id") == "a")
        result = added["result"]["result"]
        assert (added["ok"], result["status"], result["error"]) == (True, "completed", None)
        assert result["requested_by"] == "CN=op\ufffd"
        node = [n for n in result["state_delta"]["topology"]["nodes"] if n["path"] == "/root/extra"][0]
        assert (node["name"], node["tags"]) == ("report-\ufffd", ["t\ufffd"])
        again = await client.call("state", {"target_id": TARGET_ID}, request_id="s2")
        assert again["ok"] is True
        received = [e for e in again["result"]["state"]["recent_events"]
                    if e["event_type"] == "command_received"]
        assert received[-1]["payload"]["reason"] == "import \ufffd"
    finally:
        await target.stop()


FAKE_RELAY = r"""
import json, socket, sys
registration, ipc_path, target_id = sys.argv[1:4]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(registration)
listener.listen(1)
print("listening", flush=True)
conn, _ = listener.accept()
conn.makefile().readline()
conn.sendall(json.dumps({"ok": True, "target_id": target_id, "status": "registered",
                         "retryable": False}).encode() + b"\n")
conn.close()
link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
link.connect(ipc_path)
params = {"command_id": "via-relay", "correlation_id": None, "target_id": target_id,
          "command": "pause_child", "target": {"child_path": "/root/worker", "child_manifest": None},
          "reason": "relayed", "requested_by": "CN=operator", "confirmed": False}
link.sendall(json.dumps({"request_id": "1", "method": "command.pause_child", "params": params}).encode() + b"\n")
print(link.makefile().readline(), flush=True)
"""


@pytest_twisted.ensureDeferred
async def test_commands_that_did_not_come_through_the_relay_say_so(tmp_path):
    from supervisor.config.target import RegistrationConfig

    registration = str(tmp_path / "reg.sock")
    target = Target(registration=RegistrationConfig(enabled=True, relay_registration_path=registration,
                                                    display_name="t"))
    relay = subprocess.Popen([sys.executable, "-c", FAKE_RELAY, registration, target.path, TARGET_ID],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout.readline().strip() == "listening"
        target.start()
        await eventually(lambda: relay.poll() is not None, what="the relay's command was answered")
        answer = json.loads(relay.stdout.read())
        assert answer["result"]["result"]["status"] == "completed"
        client = await target.connect()
        forged = await client.call("command.resume_child", command(
            "resume_child", command_id="forged", requested_by="CN=operator", reason="not really"))
        assert forged["result"]["result"]["status"] == "completed"
        received = {e.correlation_id: e.payload for e in target.supervisor.events
                    if e.event_type == "command_received"}
        assert received["via-relay"]["origin"] == "relay" and "peer" not in received["via-relay"]
        assert received["forged"]["origin"] == "direct_ipc"
        assert received["forged"]["peer"] == {"pid": os.getpid(), "uid": os.getuid()}
        completed = {e.correlation_id: e.payload["origin"] for e in target.supervisor.events
                     if e.event_type == "command_completed"}
        assert completed == {"via-relay": "relay", "forged": "direct_ipc"}
        # commands from Python code in the target are marked too
        local = await target.supervisor.command("pause_child", "/root/worker", requested_by="py", reason="r")
        assert local.status == "completed"
        assert [e.payload["origin"] for e in target.supervisor.events
                if e.correlation_id == local.command_id and e.event_type.startswith("command_")] == [
            "in_process", "in_process"]
    finally:
        if relay.poll() is None:
            relay.kill()
        relay.wait()
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_history_methods_say_when_the_target_keeps_no_history():
    target = Target().start()
    try:
        client = await target.connect()
        for method in ("history.logs", "history.events"):
            answer = await client.call(method, {"target_id": TARGET_ID, "limit": 10}, method)
            assert answer["request_id"] == method and answer["ok"] is False
            assert (answer["error"]["code"], answer["error"]["stage"]) == ("history_disabled",
                                                                          "history")
        bad = await client.call("history.logs", {"target_id": "other"}, "r9")
        assert bad["error"]["code"] == "validation_failed"
        assert (await client.call("hello", None, "r10"))["ok"], "the connection survives"
    finally:
        await target.stop()
