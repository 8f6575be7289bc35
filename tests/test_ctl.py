"""``python -m supervisor.ctl`` against scripted peers on real Unix sockets: what the operator
reads when the target is missing, silent, closes, refuses, floods, or is interrupted."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import pytest

TIMEOUT = 30
CONTRACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contract_examples")


@pytest.fixture
def sockpath() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="ctl", dir="/tmp")
    yield os.path.join(folder, "t.sock")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def listener(sockpath: str) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sockpath)
    server.listen(4)
    server.settimeout(TIMEOUT)
    yield server
    server.close()


def ctl(sockpath: str | None, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    where = ["--socket", sockpath] if sockpath else []
    return subprocess.Popen([sys.executable, "-m", "supervisor.ctl", *where, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


class Peer:
    """The accepted end of one ctl connection, driven line by line from the test."""

    def __init__(self, server: socket.socket) -> None:
        self.sock, _ = server.accept()
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""

    def request(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "ctl closed the connection"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def send(self, obj: Any) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def answer(self, result: dict[str, Any]) -> dict[str, Any]:
        request = self.request()
        self.send({"request_id": request["request_id"], "ok": True, "result": result})
        return request


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def hello(peer: Peer) -> dict[str, Any]:
    return peer.answer({"type": "hello", "protocol_version": "dashboard-ipc.v1",
                        "target_id": "t1", "registration": None})


def test_a_missing_socket_is_one_line_naming_the_path(sockpath):
    assert finish(ctl(sockpath, "status")) == (
        1, "", f"error: cannot connect to {sockpath}: No such file or directory\n")


def test_a_target_that_never_answers_times_out(sockpath, listener):
    # the listener accepts nothing: the connection is queued and the request never read
    assert finish(ctl(sockpath, "--timeout", "0.5", "status")) == (
        1, "", "error: the target did not answer in time\n")


def test_a_target_that_closes_mid_call(sockpath, listener):
    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    assert peer.request()["method"] == "hello"
    peer.sock.close()
    assert finish(proc) == (1, "", "error: the target closed the connection\n")


def test_a_refusal_is_shown_as_code_and_message(sockpath, listener):
    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    request = peer.request()
    peer.send({"request_id": request["request_id"], "ok": False,
               "error": {"code": "peer_cred_uid_mismatch", "stage": "peer_check",
                         "target_id": None, "message": "uid 7 may not use this socket",
                         "retryable": False}})
    assert finish(proc) == (1, "", "error: peer_cred_uid_mismatch: uid 7 may not use this "
                                   "socket\n")


def test_an_overlong_line_is_refused(sockpath, listener):
    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    peer.request()
    try:
        peer.sock.sendall(b"x" * (16 * 1024 * 1024 + 65536))
    except (BrokenPipeError, ConnectionResetError):
        pass  # ctl stopped reading once the line was too long
    assert finish(proc) == (1, "", "error: the target sent an overlong line\n")


def test_follow_prints_pushes_until_interrupted(sockpath, listener):
    proc = ctl(sockpath, "events", "--follow", "--since", "4")
    peer = Peer(listener)
    hello(peer)
    subscribe = peer.answer({"type": "subscription", "target_id": "t1",
                             "subscription": "events"})
    assert subscribe["method"] == "events.subscribe"
    assert subscribe["params"] == {"target_id": "t1", "session_established": True,
                                   "since_sequence": 4}
    event = {"target_id": "t1", "sequence": 5, "correlation_id": "c", "event_type":
             "child_paused", "severity": "info", "target_path": "/root/w", "child_id": "w",
             "occurred_at": "2026-11-28T13:05:15.123456Z",
             "occurred_at_unix_nanos": 1795871115123456000, "config_version": "v",
             "payload": {"b": 1, "a": 2}}
    peer.send({"type": "state_delta", "target_id": "t1", "delta": {"state_generation": 2}})
    peer.send({"type": "event", "target_id": "t1", "event": event})
    peer.send({"type": "dropped_count", "target_id": "t1", "dropped_event_count": 3,
               "dropped_log_count": 1})
    expected = ("2026-11-28T13:05:15.123456Z #5 info    child_paused               /root/w "
                '{"a": 2, "b": 1}\n'
                "!! dropped 3 events, 1 log lines\n")
    assert read_stdout(proc, len(expected)) == expected
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert (code, out) == (130, "")
    assert "Traceback" not in err


def test_a_command_result_is_one_line_and_the_exit_status(sockpath, listener):
    proc = ctl(sockpath, "--as", "ops", "pause", "/root/w", "--reason", "window")
    peer = Peer(listener)
    hello(peer)
    request = peer.request()
    assert request["method"] == "command.pause_child"
    params = request["params"]
    assert {k: params[k] for k in ("target_id", "command", "target", "reason", "requested_by",
                                   "confirmed")} == {
        "target_id": "t1", "command": "pause_child",
        "target": {"child_path": "/root/w", "child_manifest": None}, "reason": "window",
        "requested_by": "ops", "confirmed": False}
    assert params["correlation_id"] == params["command_id"]
    peer.send({"request_id": request["request_id"], "ok": True, "result": {
        "type": "command_result", "target_id": "t1", "result": {
            "command_id": params["command_id"], "correlation_id": params["command_id"],
            "target_id": "t1", "accepted": False, "status": "failed", "requested_by": "ops",
            "error": {"code": "illegal_transition", "stage": "command_execute",
                      "target_id": "t1", "message": "already paused", "retryable": False},
            "state_delta": None, "completed_at": "2026-11-28T13:05:15.123456Z"}}})
    assert finish(proc) == (
        2, "pause_child /root/w: failed (illegal_transition: already paused)\n", "")


def event(sequence: int, event_type: str = "child_paused") -> dict[str, Any]:
    return {"target_id": "t1", "sequence": sequence, "correlation_id": "c", "event_type": event_type,
            "severity": "info", "target_path": "/root/w", "child_id": "w",
            "occurred_at": "2026-11-28T13:05:15.123456Z",
            "occurred_at_unix_nanos": 1795871115123456000, "config_version": "v", "payload": {}}


def event_line(sequence: int) -> str:
    return (f"2026-11-28T13:05:15.123456Z #{sequence} info    child_paused               "
            "/root/w {}\n")


CUT = "-- events #1–#10 are no longer held by the target (evicted from its journal)\n"


def replay_with_a_cut(peer: Peer) -> None:
    """What a target whose journal starts at #11 sends for events.subscribe from 0."""
    hello(peer)
    subscribe = peer.answer({"type": "subscription", "target_id": "t1", "subscription": "events"})
    assert subscribe["params"] == {"target_id": "t1", "session_established": True, "since_sequence": 0}
    peer.send({"type": "dropped_count", "target_id": "t1", "dropped_event_count": 10,
               "dropped_log_count": 0})
    peer.send({"type": "event", "target_id": "t1", "event": event(11)})
    peer.send({"type": "event", "target_id": "t1", "event": event(12)})


def test_events_and_events_follow_start_from_the_same_history_and_say_it_was_cut(sockpath, listener):
    proc = ctl(sockpath, "events")
    peer = Peer(listener)
    replay_with_a_cut(peer)
    assert hello(peer)["method"] == "hello", "the replay ends with the answer that follows it"
    assert finish(proc) == (0, CUT + event_line(11) + event_line(12), "")

    proc = ctl(sockpath, "events", "--follow")
    peer = Peer(listener)
    replay_with_a_cut(peer)
    peer.send({"type": "dropped_count", "target_id": "t1", "dropped_event_count": 13,
               "dropped_log_count": 2})
    expected = CUT + event_line(11) + event_line(12) + "!! dropped 3 events, 2 log lines\n"
    assert read_stdout(proc, len(expected)) == expected
    proc.send_signal(signal.SIGINT)
    assert finish(proc)[0] == 130


def test_logs_without_follow_print_the_tail_the_subscription_replays(sockpath, listener):
    proc = ctl(sockpath, "logs", "--lines", "2")
    peer = Peer(listener)
    hello(peer)
    tail = peer.answer({"type": "subscription", "target_id": "t1", "subscription": "logs"})
    assert (tail["method"], tail["params"]["lines"]) == ("logs.tail", 2)
    for n in (1, 2):
        peer.send({"type": "log", "target_id": "t1", "log": {
            "target_id": "t1", "sequence": n, "correlation_id": None, "severity": "info",
            "message": f"tick {n}", "fields": {"child_path": "/root/p", "stream": "stdout"},
            "occurred_at": "2026-11-28T13:05:15.123456Z"}})
    hello(peer)
    assert finish(proc) == (0, "".join(f"2026-11-28T13:05:15.123456Z info    /root/p tick {n}\n"
                                       for n in (1, 2)), "")


def state_answer(peer: Peer) -> dict[str, Any]:
    with open(os.path.join(CONTRACT, "ipc.state.response.json")) as f:
        result = json.load(f)["result"]
    request = peer.answer({**result, "target_id": "t1"})
    assert request["method"] == "state"
    return result["state"]


def status_result(started_at_unix_nanos: int | None) -> dict[str, Any]:
    return {"type": "status", "target_id": "t1", "display_name": "payments worker a",
            "instance_id": "i-1", "state_generation": 57, "generated_at": "2026-11-28T13:05:15.123456Z",
            "generated_at_unix_nanos": 1795871115123456000, "rows": [
                {"child_path": "/root/web", "kind": "child_process", "lifecycle_state": "running",
                 "health": "healthy", "readiness": "ready", "pid": 4242, "generation": 2,
                 "restart_count": 1,
                 "last_failure": None, "started_at": "2026-11-25T08:35:15.123456Z",
                 "started_at_unix_nanos": started_at_unix_nanos},
                {"child_path": "/root/invoice_writer", "kind": "child_task",
                 "lifecycle_state": "paused", "health": "unknown", "readiness": "not_ready",
                 "pid": None, "generation": 3, "restart_count": 2, "last_failure": "exit status 3",
                 "started_at": None, "started_at_unix_nanos": None}]}


def test_json_status_prints_the_status_result_and_status_a_table(sockpath, listener):
    # started 3 days, 4 hours and 30 minutes ago: the table shows whole days and hours
    started = time.time_ns() - (3 * 86400 + 4 * 3600 + 1800) * 1_000_000_000
    proc = ctl(sockpath, "--json", "status")
    peer = Peer(listener)
    hello(peer)
    request = peer.answer(status_result(started))
    assert (request["method"], request["params"]) == ("status", {"target_id": "t1"})
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    want = status_result(started)
    assert json.loads(out) == {
        "target": {"target_id": "t1", "display_name": "payments worker a", "instance_id": "i-1"},
        "state_generation": 57, "generated_at": want["generated_at"],
        "generated_at_unix_nanos": want["generated_at_unix_nanos"], "runtime_state": want["rows"]}

    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    hello(peer)
    peer.answer(status_result(started))
    assert finish(proc) == (0, (
        "payments worker a (t1), generation 57\n"
        "PATH                  KIND     STATE    HEALTH   READY      PID   RESTARTS  UPTIME  CPU  RSS  LAST FAILURE\n"
        "/root/web             process  running  healthy  ready      4242  1         3d 4h   -    -    -\n"
        "/root/invoice_writer  task     paused   unknown  not_ready  -     2         -       -    -    exit status 3\n"), "")


def test_status_reads_the_full_state_from_a_target_without_the_status_method(sockpath, listener):
    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    hello(peer)
    request = peer.request()
    assert request["method"] == "status"
    peer.send({"request_id": request["request_id"], "ok": False, "error": {
        "code": "unsupported_method", "stage": "protocol_parse", "target_id": None,
        "message": "unsupported dashboard IPC method status", "retryable": False}})
    state_answer(peer)
    assert finish(proc) == (0, (
        "payments worker a (payments-worker-a), generation 57\n"
        "PATH                  KIND     STATE   HEALTH   READY      PID  RESTARTS  UPTIME  CPU  RSS  LAST FAILURE\n"
        "/root/invoice_writer  process  paused  unknown  not_ready  -    2         -       -    -    exit status 3\n"), "")


def test_status_shows_cpu_and_rss_of_rows_with_figures(sockpath, listener):
    proc = ctl(sockpath, "status")
    peer = Peer(listener)
    hello(peer)
    result = status_result(time.time_ns())
    sampled = {"sampled_at": "2026-11-28T13:05:15.123456Z", "sampled_at_unix_nanos": 1}
    result["rows"][0]["resources"] = {"cpu_percent": 12.5, "rss_bytes": 41_943_040, "open_fds": 9,
                                      "threads": 3, **sampled}
    result["rows"][1]["resources"] = {**result["rows"][0]["resources"], "cpu_percent": 0,
                                      "rss_bytes": 900}
    peer.answer(result)
    code, out, err = finish(proc)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split() == ["PATH", "KIND", "STATE", "HEALTH", "READY", "PID", "RESTARTS",
                                "UPTIME", "CPU", "RSS", "LAST", "FAILURE"]
    assert lines[2].split()[8:10] == ["12.5%", "40.0M"]
    assert lines[3].split()[8:10] == ["0.0%", "900B"]


def test_uptime_is_shown_in_its_two_largest_units():
    from supervisor.ctl import uptime

    second = 1_000_000_000
    assert [uptime(0, n * second) for n in (0, 12, 247, 7500, 3 * 86400 + 4 * 3600 + 59)] == [
        "0s", "12s", "4m 07s", "2h 05m", "3d 4h"]
    assert uptime(None, 5) == "-" and uptime(10 * second, 0) == "0s"


def test_the_socket_comes_from_the_config_file_or_the_environment(sockpath, listener):
    folder = os.path.dirname(sockpath)
    config = os.path.join(folder, "target.yaml")
    with open(config, "w") as f:  # a callable ctl cannot import: only ipc.path is read
        f.write(f"children:\n  - {{name: w, kind: task, callable: 'not_installed.anywhere:main'}}\n"
                f"ipc: {{enabled: true, target_id: t1, path: {sockpath}}}\n")
    for where, env in (([None, "--config", config], {}), ([None], {"SUPERVISOR_SOCKET": sockpath}),
                       ([sockpath], {"SUPERVISOR_SOCKET": "/nonexistent/elsewhere.sock"})):
        proc = ctl(*where, "events", env=env)
        peer = Peer(listener)
        hello(peer)
        peer.answer({"type": "subscription", "target_id": "t1", "subscription": "events"})
        hello(peer)
        assert finish(proc) == (0, "", "")


def test_a_missing_target_says_how_to_name_one(sockpath):
    code, out, err = finish(ctl(None, "status", env={"SUPERVISOR_SOCKET": ""}))
    assert (code, out) == (2, "")
    assert err.endswith("error: which target? give --socket PATH or --config FILE, or set "
                        "SUPERVISOR_SOCKET\n")
    config = os.path.join(os.path.dirname(sockpath), "off.yaml")
    with open(config, "w") as f:
        f.write("ipc: {enabled: false}\n")
    assert finish(ctl(None, "--config", config, "status")) == (
        1, "", f"error: {config} gives the target no IPC socket (ipc.enabled is false)\n")
    assert finish(ctl(None, "--config", config + ".missing", "status")) == (
        1, "", f"error: {config}.missing: cannot read config file {config}.missing: "
               "No such file or directory\n")


def test_help_is_plain_text_with_examples():
    code, out, err = finish(ctl(None, "--help"))
    assert (code, err) == (0, "")
    assert "``" not in out and ":data:" not in out
    assert "--config FILE" in out and "SUPERVISOR_SOCKET" in out
    assert "python -m supervisor.ctl --config etc/demo-target.yaml events --follow" in out


def read_stdout(proc: subprocess.Popen, size: int) -> str:
    """Exactly ``size`` characters of ``proc``'s stdout, waiting at most TIMEOUT seconds."""
    deadline = time.monotonic() + TIMEOUT
    data = ""
    fd = proc.stdout.fileno()
    while len(data) < size:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"ctl printed only {data!r}"
        chunk = os.read(fd, size - len(data)).decode()
        assert chunk, f"ctl exited after printing {data!r}"
        data += chunk
    return data
