"""Hypothesis against the relay's two network listeners, over real sockets, relay in a
``twistd`` subprocess: the registration socket (§2) and the wss:// endpoint (§3).

Every input gets a defined answer (a well-formed failure ack / ``error`` message with a
known code, or a WebSocket close with a protocol close code) or a clean close; afterwards the
relay is alive, its file descriptors are back to the baseline (``/proc/<pid>/fd``), its RSS
grew by less than a fixed bound, and a well-behaved peer is still served.

Example counts are modest by default; ``FUZZ_EXAMPLES=N`` runs N per test (``make fuzz``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from supervisor.wire.bounds import COMMAND_TIMEOUT_SECONDS_RANGE, SEQUENCE_RANGE
from tests.fuzz_strategies import (
    decodable,
    huge_numbers as bounded_numbers,
    in_range,
    long_names,
    many_ids,
    safe_int,
)
from rel_support import (
    ERROR_KEYS,
    SESSION_CODES,
    ClosedError,
    RawWS,
    RelayProcess,
    check_registration_reply,
    client_context,
    fd_count,
    registration_exchange,
    rss_kb,
    short_dir,
    wait_until,
    ws_frame,
)

MAX_MESSAGE_BYTES = 8192
# RSS may grow while allocator arenas and caches fill; a leak of even one small object per
# example would exceed this over the `make fuzz` run, a bounded working set does not.
RSS_BOUND_KB = 24 * 1024


def examples(default: int) -> int:
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def fuzz_settings(default: int) -> settings:
    return settings(max_examples=examples(default), deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    database=None)


SECTIONS: dict[str, Any] = {
    "limits": {"max_message_bytes": MAX_MESSAGE_BYTES, "max_sessions": 64},
    "registration": {"default_lease_seconds": 1, "max_lease_seconds": 2},
    # a frame must end within websocket_frame_seconds of its first byte; the clients here
    # wait 10 s for an answer, so a frame random bytes leave open is closed well before
    "timeouts": {"registration_read_seconds": 3, "auto_ping_interval_seconds": 600,
                 "http_idle_seconds": 2, "websocket_frame_seconds": 1},
}


class Fuzzed:
    """A relay process plus its resource baseline."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.fds = 0
        self.rss = 0

    def baseline(self) -> None:
        # the relay is up once its reactor runs and the audit store is open (the last files
        # it opens at start, from a thread); only then are its fds a baseline
        wait_until(self.audit_open, 10, "relay audit store open")
        wait_until(lambda: self.settled_fds() is not None, 10, "relay fds settle")
        self.fds = fd_count(self.relay.pid)
        self.rss = rss_kb(self.relay.pid)

    def audit_open(self) -> bool:
        folder = f"/proc/{self.relay.pid}/fd"
        targets = []
        for name in os.listdir(folder):
            try:
                targets.append(os.readlink(os.path.join(folder, name)))
            except OSError:
                pass  # closed meanwhile
        return any(t.endswith("-shm") for t in targets)

    def settled_fds(self) -> int | None:
        first = fd_count(self.relay.pid)
        return first if first == fd_count(self.relay.pid) else None

    def check_after(self) -> dict[str, int]:
        assert self.relay.alive(), self.relay.output()
        wait_until(lambda: fd_count(self.relay.pid) <= self.fds, 15,
                   f"relay fds back to {self.fds} (now {fd_count(self.relay.pid)})")
        grown = rss_kb(self.relay.pid) - self.rss
        assert grown < RSS_BOUND_KB, f"relay RSS grew by {grown} KiB"
        log = self.relay.output(10_000_000)
        assert "Traceback" not in log and "Unhandled" not in log, log[-6000:]
        # hostile input must never cost an audit record (e.g. text SQLite cannot store)
        assert "cannot audit" not in log and "audit write failed" not in log, log[-6000:]
        return {"fds": fd_count(self.relay.pid), "rss_growth_kb": grown}


def fuzzed_process(pki: Any, prefix: str) -> Any:
    """A relay process for one module of fuzz tests, stopped and cleaned up afterwards."""
    sockdir = short_dir(prefix)
    relay = RelayProcess(sockdir, pki, **SECTIONS)
    try:
        relay.start_and_wait()
        yield Fuzzed(relay)
    finally:
        relay.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(scope="module")
def fuzzed_relay(pki: Any) -> Any:
    yield from fuzzed_process(pki, "rfz")


# strategies ----------------------------------------------------------------------------------

EDGE_STRINGS = ["", " ", "\x00", "\ud800", "\udcff", "\udfff\ud800", "\u202e\u202d", "\ufeff",
                "\uffff", "\U0010ffff", "a\u0301", "𝕏𝕐", "..", "/", "\\", "\n", "\r", "\t",
                "%s%n", "' OR 1=1 --", "x" * 300, "ä" * 200]
edge_text = st.sampled_from(EDGE_STRINGS) | st.text(max_size=40) | st.text(
    alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=4)
huge_numbers = st.sampled_from([2 ** 63, -2 ** 63 - 1, 10 ** 300, 1e308, -0.0, 1e-320,
                                float("nan"), float("inf"), float("-inf"),
                                2 ** 1000]) | st.integers() | st.floats(allow_nan=False) \
    | bounded_numbers
json_leaf = st.none() | st.booleans() | huge_numbers | edge_text | long_names
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(edge_text, children,
                                                                       max_size=4),
    max_leaves=10,
)


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def encode_json(obj: Any, ascii_only: bool) -> bytes:
    """JSON bytes; lone surrogates become \\uXXXX escapes or (invalid) raw UTF-8 bytes."""
    text = json.dumps(obj, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def valid_payload(sockdir: str, target_id: str = "fz") -> dict[str, Any]:
    return {
        "target_id": target_id, "display_name": "fuzzed",
        "ipc_path": os.path.join(sockdir, f"{target_id}.sock"), "lease_seconds": 1,
        "supported_commands": [{"name": "pause_child", "idempotent": False,
                                "timeout_seconds": 5}],
    }


@st.composite
def mutated_registration(draw: Any, sockdir: str) -> bytes:
    payload: dict[str, Any] = valid_payload(sockdir, draw(st.sampled_from(["fz", "fz2"])))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["replace", "add", "delete", "command", "deep", "huge",
                                    "unicode"]))
        key = draw(st.sampled_from(sorted(payload) or ["target_id"]))
        if how == "unicode":  # a plausible value with an edge-case string inside
            field = draw(st.sampled_from(["target_id", "display_name", "ipc_path"]))
            text = draw(edge_text)
            payload[field] = os.path.join(sockdir, text + ".sock") if field == "ipc_path" \
                else "t" + text
        elif how == "replace":
            payload[key] = draw(json_values)
        elif how == "add":
            payload[draw(edge_text)] = draw(json_values)
        elif how == "delete":
            payload.pop(key, None)
        elif how == "command":
            payload["supported_commands"] = draw(st.lists(
                st.fixed_dictionaries({"name": edge_text | json_values,
                                       "idempotent": st.booleans() | json_values,
                                       "timeout_seconds": huge_numbers | json_values}),
                max_size=70))
        elif how == "deep":
            payload[key] = "@@DEEP@@"
        else:
            payload[key] = draw(huge_numbers)
    line = encode_json(payload, draw(st.booleans()))
    if b'"@@DEEP@@"' in line:
        nested = deep(draw(st.integers(1, 3000)), draw(st.sampled_from(["list", "dict"])))
        line = line.replace(b'"@@DEEP@@"', nested.encode())
    return line


def expected_for_number(field: str, value: Any) -> str:
    """The ack code of a valid payload whose ``field`` is ``value`` (the fuzzed relay grants
    leases of 1 or 2 s)."""
    if field == "lease_seconds" and value is None:
        return "ok"
    if not decodable(value) or not safe_int(value):
        return "invalid_registration_json"
    if field == "lease_seconds":
        return "ok" if in_range(value, (1, 2)) else "invalid_lease_seconds"
    return "ok" if in_range(value, COMMAND_TIMEOUT_SECONDS_RANGE) else "unsupported_command_schema"


@st.composite
def registration_input(draw: Any, sockdir: str) -> tuple[bytes, bool, str]:
    """(bytes to send, whether to half-close afterwards, what kind of input it is); a kind
    ``numbers:CODE`` is a valid payload but for one number, which must be acked with CODE."""
    kind = draw(st.sampled_from(["bytes", "mutated", "truncated", "oversized", "deep",
                                 "multi", "huge_digits", "bad_utf8", "numbers", "long",
                                 "many"]))
    if kind == "numbers":
        payload = valid_payload(sockdir, "num")
        field = draw(st.sampled_from(["lease_seconds", "timeout_seconds"]))
        value = draw(bounded_numbers | st.none())
        if field == "lease_seconds":
            payload["lease_seconds"] = value
        else:
            payload["supported_commands"][0]["timeout_seconds"] = value
        if field == "timeout_seconds" and value is None:
            return json.dumps(payload).encode() + b"\n", False, "numbers:invalid_registration_json"
        return (json.dumps(payload).encode() + b"\n", False,
                "numbers:" + expected_for_number(field, value))
    if kind == "long":  # names around and past the 256-character limits
        payload = valid_payload(sockdir, "long")
        field = draw(st.sampled_from(["target_id", "display_name"]))
        payload[field] = draw(long_names)
        return encode_json(payload, draw(st.booleans()))[:MAX_MESSAGE_BYTES * 2] + b"\n", \
            False, kind
    if kind == "many":  # many commands (ids), most past the 64-command limit or the line cap
        payload = valid_payload(sockdir, "many")
        payload["supported_commands"] = [{"name": name, "idempotent": False, "timeout_seconds": 5}
                                         for name in draw(many_ids)]
        return json.dumps(payload).encode()[:MAX_MESSAGE_BYTES * 2] + b"\n", False, kind
    if kind == "bytes":
        data = draw(st.binary(max_size=600))
        return data, b"\n" not in data or draw(st.booleans()), kind
    if kind == "mutated":
        return draw(mutated_registration(sockdir)) + b"\n", draw(st.booleans()), kind
    if kind == "truncated":
        line = json.dumps(valid_payload(sockdir)).encode()
        return line[: draw(st.integers(0, len(line) - 1))], True, kind
    if kind == "oversized":
        size = draw(st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES * 4))
        newline = draw(st.booleans())
        return b'{"target_id":"' + b"x" * size + (b'"}\n' if newline else b""), True, kind
    if kind == "deep":
        nested = deep(draw(st.integers(1, 4000)), draw(st.sampled_from(["list", "dict"])))
        return nested.encode()[:MAX_MESSAGE_BYTES - 1] + b"\n", draw(st.booleans()), kind
    if kind == "huge_digits":
        payload = json.dumps(valid_payload(sockdir)).encode()
        digits = b"9" * draw(st.integers(1, 6000))
        return payload.replace(b'"lease_seconds": 1', b'"lease_seconds": ' + digits)[
            :MAX_MESSAGE_BYTES] + b"\n", True, kind
    if kind == "bad_utf8":
        line = json.dumps(valid_payload(sockdir)).encode()
        at = draw(st.integers(0, len(line)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                     b"\xc0\xaf", b"\x00"]))
        return line[:at] + junk + line[at:] + b"\n", draw(st.booleans()), kind
    # several lines in one write: exactly one ack, for the first
    lines = [draw(mutated_registration(sockdir)) for _ in range(draw(st.integers(2, 4)))]
    return b"\n".join(lines) + b"\n", draw(st.booleans()), kind


# registration ------------------------------------------------------------------------------

def test_fuzz_registration_socket(fuzzed_relay: Fuzzed) -> None:
    relay = fuzzed_relay.relay
    path = relay.registration_path
    # warm up (first-use allocations), then take the baseline
    for _ in range(20):
        check_registration_reply(registration_exchange(path, b"{}\n", half_close=False))
    fuzzed_relay.baseline()
    seen: dict[str, int] = {}

    def surrogate(field: str) -> tuple[bytes, bool, str]:
        payload = valid_payload(relay.sockdir, "sur")
        payload[field] = (os.path.join(relay.sockdir, "\ud800.sock") if field == "ipc_path"
                          else "s\udfff")
        return json.dumps(payload).encode() + b"\n", False, "mutated"

    @fuzz_settings(300)
    @given(registration_input(relay.sockdir))
    @example(surrogate("target_id"))
    @example(surrogate("display_name"))
    @example(surrogate("ipc_path"))
    def one(case: tuple[bytes, bool, str]) -> None:
        data, half_close, kind = case
        reply = registration_exchange(path, data, half_close=half_close)
        ack = check_registration_reply(reply)
        first_line_complete = b"\n" in data and data.index(b"\n") <= MAX_MESSAGE_BYTES
        if kind == "oversized" or len(data.split(b"\n", 1)[0]) > MAX_MESSAGE_BYTES:
            assert ack is not None and ack["error"]["code"] == "invalid_registration_json"
            assert "exceeds" in ack["error"]["message"]
        elif first_line_complete:
            # a complete line always gets its one ack (no silent drops)
            assert ack is not None, (kind, data[:200])
        elif half_close:
            # an unterminated line followed by EOF: closed without an ack
            assert ack is None or ack["error"]["code"] == "registration_timeout", ack
        if ack is not None:
            code = "ok" if ack["ok"] else ack["error"]["code"]
            seen[code] = seen.get(code, 0) + 1
            if kind.startswith("numbers:"):
                assert code == kind.split(":", 1)[1], (data[:300], ack)
        assert relay.alive(), relay.output()

    one()
    # the listener still serves a well-behaved target
    good = registration_exchange(path, json.dumps(valid_payload(relay.sockdir, "good")).encode()
                                 + b"\n", half_close=False)
    assert check_registration_reply(good) == {"ok": True, "target_id": "good",
                                              "status": "registered", "retryable": False}
    figures = fuzzed_relay.check_after()
    assert "invalid_registration_json" in seen, seen
    print(f"registration fuzz: {examples(300)} examples, ack codes {seen}, {figures}")


# wss:// ------------------------------------------------------------------------------------

HELLO = {"type": "client_hello", "client_store_id": "fuzz", "resume_cursor": {}}
SENTINEL = {"type": "fuzz_sentinel"}
PROTOCOL_CLOSE_CODES = {1002, 1003, 1007, 1009, 4002}


def open_session(port: int, ctx: ssl.SSLContext, hello: bool = True) -> RawWS:
    ws = RawWS(port, ctx)
    ws.upgrade()
    assert ws.recv_json()["type"] == "server_hello"
    if hello:
        ws.send_json(HELLO)
        assert ws.recv_json()["type"] == "target_list"
    return ws


def check_error(message: dict[str, Any]) -> str:
    assert message["type"] == "error", message
    assert set(message) == {"type", "command_id", "error"}, message
    assert set(message["error"]) == ERROR_KEYS, message
    assert message["command_id"] is None or isinstance(message["command_id"], str), message
    assert message["error"]["code"] in SESSION_CODES, message
    return message["error"]["code"]


def replies_until_sentinel(ws: RawWS) -> list[str]:
    """Error codes the relay sent before answering the sentinel (sent in order after)."""
    ws.send_json(SENTINEL)
    codes = []
    while True:
        message = ws.recv_json()
        if message["type"] == "target_list":
            continue  # a (fuzzed but valid) client_hello established the session
        code = check_error(message)
        if code == "unsupported_message_type" and "fuzz_sentinel" in message["error"]["message"]:
            return codes
        codes.append(code)


message_types = st.sampled_from(["client_hello", "command", "log_event_filter_conditions",
                                 "filter_update", "sequence_checkpoint", "state", "", "error"])
command_like = st.fixed_dictionaries(
    {"type": st.just("command")},
    optional={"command_id": json_values, "correlation_id": json_values,
              "target_id": json_values, "command": st.sampled_from(
                  ["pause_child", "shutdown_tree", "restart"]) | json_values,
              "target": json_values | st.fixed_dictionaries(
                  {}, optional={"child_path": json_values, "child_id": json_values,
                                "child_manifest": json_values, "x": json_values}),
              "reason": json_values, "confirmed": json_values, "requested_by": json_values})
filter_like = st.fixed_dictionaries(
    {"type": st.just("log_event_filter_conditions")},
    optional={k: json_values | st.lists(edge_text, max_size=3)
              for k in ("target_ids", "child_paths", "lifecycle_states", "event_types",
                        "severities", "sequence_min", "correlation_id", "bogus")})
typed_message = st.dictionaries(st.just("type"), message_types | json_values, min_size=1) | \
    st.builds(lambda d, t: {**d, "type": t}, st.dictionaries(edge_text, json_values,
                                                             max_size=4), message_types)


@st.composite
def number_message(draw: Any) -> tuple[str, bytes]:
    """A valid filter but for ``sequence_min``, kind ``numbers:CODE``: answered with CODE
    (``numbers:`` alone: no error)."""
    value = draw(bounded_numbers | st.none())
    message = {"type": "log_event_filter_conditions", "target_ids": [], "child_paths": [],
               "lifecycle_states": [], "event_types": [], "severities": [],
               "sequence_min": value, "correlation_id": None}
    if not decodable(value):
        expected = "invalid_message_json"
    elif value is None or in_range(value, SEQUENCE_RANGE):
        expected = ""
    else:
        expected = "invalid_message_schema"
    return "numbers:" + expected, json.dumps(message).encode()


@st.composite
def session_message(draw: Any) -> tuple[str, bytes]:
    """A text message within the size cap (the session must answer and stay open)."""
    kind = draw(st.sampled_from(["json", "typed", "command", "filter", "text", "deep",
                                 "digits", "binary", "unicode", "numbers", "long", "many"]))
    if kind == "numbers":
        return draw(number_message())
    if kind == "long":  # a command with names around and past every length limit
        fields = {"type": "command", "command_id": draw(long_names), "correlation_id": None,
                  "target_id": draw(long_names), "command": "pause_child",
                  "target": {"child_path": "/root/" + draw(long_names)},
                  "reason": draw(long_names), "confirmed": False}
        data = encode_json(fields, draw(st.booleans()))
    elif kind == "many":  # thousands of ids in a filter
        key = draw(st.sampled_from(["target_ids", "child_paths", "event_types"]))
        data = encode_json({"type": "log_event_filter_conditions", key: draw(many_ids)}, True)
    elif kind == "unicode":  # a well-formed command or hello with edge-case strings in it
        fields = {"type": draw(st.sampled_from(["command", "client_hello"])),
                  "command_id": "c" + draw(edge_text), "target_id": draw(edge_text),
                  "command": "pause_child", "target": {"child_path": "/root/" + draw(edge_text)},
                  "reason": draw(edge_text), "confirmed": False}
        if fields["type"] == "client_hello":
            fields = {"type": "client_hello", "client_store_id": draw(edge_text),
                      "resume_cursor": {}}
        data = encode_json(fields, draw(st.booleans()))
    elif kind == "json":
        data = encode_json(draw(json_values), True)
    elif kind == "typed":
        data = encode_json(draw(typed_message), draw(st.booleans()))
    elif kind == "command":
        data = encode_json(draw(command_like), draw(st.booleans()))
    elif kind == "filter":
        data = encode_json(draw(filter_like), draw(st.booleans()))
    elif kind == "text":
        data = draw(st.text(max_size=300)).encode()
    elif kind == "deep":
        data = deep(draw(st.integers(1, 2000)), draw(st.sampled_from(["list", "dict"]))).encode()
    elif kind == "digits":
        data = b'{"type":"command","command_id":' + b"7" * draw(st.integers(1, 6000)) + b"}"
    else:
        data = draw(st.binary(max_size=300))
    data = data[:MAX_MESSAGE_BYTES]  # a cut may split a character: decoded after the cut
    if kind != "binary":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            kind = "bad_utf8"  # raw surrogates: the relay must close with 1007
    return kind, data


def test_fuzz_wss_messages(fuzzed_wss: Fuzzed, pki: Any) -> None:
    relay = fuzzed_wss.relay
    ctx = client_context(pki, pki.operator, relay.sockdir)
    for _ in range(5):
        ws = open_session(relay.port, ctx)
        assert replies_until_sentinel(ws) == []
        ws.close()
    fuzzed_wss.baseline()
    seen: dict[str, int] = {}

    @fuzz_settings(150)
    @given(st.lists(session_message(), min_size=1, max_size=4)
           | st.lists(number_message(), min_size=1, max_size=4), st.booleans())
    def one(batch: list[tuple[str, bytes]], hello: bool) -> None:
        ws = open_session(relay.port, ctx, hello=hello)
        try:
            for kind, data in batch:
                if kind == "binary":
                    ws.send_raw(ws_frame(2, data))
                else:
                    ws.send_raw(ws_frame(1, data))
            closing = any(k == "bad_utf8" for k, _ in batch) or not hello
            try:
                codes = replies_until_sentinel(ws)
            except ClosedError as e:
                # only invalid UTF-8 or a pre-hello protocol error may end the session
                assert closing, (batch, e.code)
                assert e.code in PROTOCOL_CLOSE_CODES or e.code is None, e.code
                return
            if hello:
                assert len(codes) <= len(batch)
                if all(k.startswith("numbers:") for k, _ in batch):
                    expected = [k.split(":", 1)[1] for k, _ in batch]
                    assert codes == [c for c in expected if c], (batch, codes)
            for code in codes:
                seen[code] = seen.get(code, 0) + 1
        finally:
            ws.close()

    one()
    figures = fuzzed_wss.check_after()
    assert "invalid_message_json" in seen or "invalid_message_schema" in seen, seen
    print(f"wss message fuzz: {examples(150)} examples, error codes {seen}, {figures}")


@st.composite
def frame_attack(draw: Any) -> tuple[str, bytes]:
    """Byte-level abuse of the WebSocket framing after the upgrade."""
    kind = draw(st.sampled_from(["random", "unmasked", "rsv", "bad_opcode", "big_control",
                                 "huge_length", "oversized", "fragments", "truncated",
                                 "bad_utf8"]))
    payload = draw(st.binary(max_size=200))
    if kind == "random":
        return kind, draw(st.binary(min_size=1, max_size=600))
    if kind == "unmasked":
        return kind, ws_frame(1, b'{"type":"x"}', mask=False)
    if kind == "rsv":
        return kind, ws_frame(1, payload, rsv=draw(st.integers(1, 7)))
    if kind == "bad_opcode":
        return kind, ws_frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])),
                              payload)
    if kind == "big_control":
        return kind, ws_frame(draw(st.sampled_from([8, 9, 10])), b"p" * draw(
            st.integers(126, 1000)))
    if kind == "huge_length":
        return kind, ws_frame(1, b"", length=draw(st.sampled_from(
            [MAX_MESSAGE_BYTES + 1, 2 ** 31, 2 ** 62, 2 ** 63 - 1])))
    if kind == "oversized":
        return kind, ws_frame(1, b"[" + b"1," * (MAX_MESSAGE_BYTES // 2) + b"1]")
    if kind == "fragments":
        parts = [ws_frame(1, b"x" * 3000, fin=False)]
        parts += [ws_frame(0, b"y" * 3000, fin=False) for _ in range(draw(st.integers(3, 6)))]
        return kind, b"".join(parts)
    if kind == "truncated":
        frame = ws_frame(1, b'{"type":"client_hello"}' + payload)
        return kind, frame[: draw(st.integers(1, len(frame) - 1))]
    return kind, ws_frame(1, b'{"type":"' + draw(st.sampled_from(
        [b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"])) + b'"}')


def test_fuzz_wss_frames_and_handshakes(fuzzed_wss: Fuzzed, pki: Any) -> None:
    relay = fuzzed_wss.relay
    ctx = client_context(pki, pki.operator, relay.sockdir)
    fuzzed_wss.baseline()
    closes: dict[str, int] = {}

    @fuzz_settings(120)
    @given(frame_attack(), st.booleans())
    @example(("random", b"\x88\x9c"), True)  # a close frame whose 28 bytes never all come
    def frames(case: tuple[str, bytes], hello: bool) -> None:
        kind, data = case
        ws = open_session(relay.port, ctx, hello=hello)
        try:
            ws.send_raw(data)
            if kind == "truncated":
                ws.sock.shutdown(socket.SHUT_WR)  # a half frame, then EOF: a clean close
            if kind in ("random", "truncated"):
                # random bytes may happen to be harmless (the sentinel is answered), be
                # refused (a protocol close), or leave a frame open that the sentinel does not
                # complete: the relay then closes at the frame deadline (4002), never waits
                # for the idle timeout; a read timing out here fails the test
                try:
                    replies_until_sentinel(ws)
                except ClosedError as e:
                    assert e.code in PROTOCOL_CLOSE_CODES or e.code is None, (kind, e.code)
                    closes[f"{kind}:{e.code}"] = closes.get(f"{kind}:{e.code}", 0) + 1
                return
            code = ws.until_closed()
            assert code in PROTOCOL_CLOSE_CODES or code is None, (kind, code)
            closes[f"{kind}:{code}"] = closes.get(f"{kind}:{code}", 0) + 1
        finally:
            ws.close()

    frames()

    @fuzz_settings(60)
    @given(st.binary(max_size=800), st.booleans())
    def handshakes(data: bytes, tls: bool) -> None:
        """Garbage instead of a TLS ClientHello, or instead of the HTTP upgrade request."""
        if tls:
            ws = RawWS(relay.port, ctx)
            sock = ws.sock
        else:
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
        try:
            sock.sendall(data + b"\r\n\r\n")
            sock.shutdown(socket.SHUT_WR) if not tls else None
            while True:  # the relay answers (e.g. 400) and/or closes
                try:
                    if not sock.recv(65536):
                        break
                except (ConnectionResetError, ssl.SSLError):
                    break
        finally:
            sock.close()

    handshakes()
    figures = fuzzed_wss.check_after()
    # the endpoint still opens sessions for a good client
    ws = open_session(relay.port, ctx)
    assert replies_until_sentinel(ws) == []
    ws.close()
    print(f"wss frame fuzz: {examples(120)}+{examples(60)} examples, closes {closes}, "
          f"{figures}")


@pytest.fixture(scope="module")
def fuzzed_wss(pki: Any) -> Any:
    yield from fuzzed_process(pki, "rfw")


def test_a_frame_that_never_completes_is_closed_at_its_deadline(fuzzed_wss: Fuzzed,
                                                                 pki: Any) -> None:
    """The frame deadline frees session slots: ``max_sessions`` peers each leave a frame
    open (every slot taken); each is closed with 4002, and a good client is served after."""
    relay = fuzzed_wss.relay
    ctx = client_context(pki, pki.operator, relay.sockdir)
    held = []
    try:
        for _ in range(SECTIONS["limits"]["max_sessions"]):
            ws = open_session(relay.port, ctx)
            held.append(ws)
            ws.send_raw(b"\x88\x9c")  # the header of a close frame; its payload never comes
        assert [ws.until_closed() for ws in held] == [4002] * len(held)
    finally:
        for ws in held:
            ws.close()

    def session() -> RawWS | None:
        try:  # refused (503) until the relay has seen the last of those connections go
            return open_session(relay.port, ctx)
        except ClosedError:
            return None

    ws = wait_until(session, 10, "a session slot free again")
    assert replies_until_sentinel(ws) == []
    ws.close()
