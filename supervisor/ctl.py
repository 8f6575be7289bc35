"""Operator command line for a target's IPC socket, in the spirit of ``supervisorctl``.

    python -m supervisor.ctl --socket PATH status
    python -m supervisor.ctl --socket PATH events --follow
    python -m supervisor.ctl --socket PATH logs --follow --lines 50
    python -m supervisor.ctl --socket PATH restart /root/worker --reason "stuck"
    python -m supervisor.ctl --socket PATH add /root --manifest child.yaml --reason "scale" --yes

Human-readable tables by default, one JSON document per line with ``--json``. Blocking
sockets with a timeout on every read; ``--follow`` streams until interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
import sys
import uuid
from typing import Any, Iterable, Iterator, TextIO

from supervisor.wire.vocabulary import DANGEROUS_COMMANDS

MAX_LINE_BYTES = 16 * 1024 * 1024
CHILD_COMMANDS = {
    "restart": "restart_child",
    "pause": "pause_child",
    "resume": "resume_child",
    "quarantine": "quarantine_child",
    "remove": "remove_child",
}


class CtlError(Exception):
    """Something the operator should read; printed without a traceback."""


class Connection:
    """One blocking NDJSON connection to a target."""

    def __init__(self, path: str, timeout: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as e:
            raise CtlError(f"cannot connect to {path}: {e.strerror or e}") from None
        self._buffer = b""
        self._ids = 0

    def close(self) -> None:
        self._sock.close()

    def read(self, timeout: float | None = -1.0) -> dict[str, Any]:
        if timeout != -1.0:
            self._sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                raise CtlError("the target did not answer in time") from None
            if not chunk:
                raise CtlError("the target closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise CtlError("the target sent an overlong line")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, method: str, params: Any) -> dict[str, Any]:
        self._ids += 1
        request_id = f"ctl-{self._ids}"
        payload = {"request_id": request_id, "method": method, "params": params}
        self._sock.sendall(json.dumps(payload).encode() + b"\n")
        while True:
            reply = self.read()
            if reply.get("request_id") in (request_id, "invalid-request"):
                break
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise CtlError(f"{error.get('code')}: {error.get('message')}")
        return reply["result"]

    def pushes(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.read(timeout=None)


def _operator() -> str:
    try:
        return f"unix_user:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:
        return f"unix_uid:{os.getuid()}"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _print_status(state: dict[str, Any], out: TextIO) -> None:
    kinds = {n["path"]: n["kind"].replace("child_", "") for n in state["topology"]["nodes"]}
    rows = [["PATH", "KIND", "STATE", "HEALTH", "READY", "RESTARTS", "LAST FAILURE"]]
    for row in state["runtime_state"]:
        rows.append([
            row["child_path"], kinds.get(row["child_path"], "?"), row["lifecycle_state"],
            row["health"], row["readiness"], str(row["restart_count"]), row["last_failure"] or "-",
        ])
    target = state["target"]
    out.write(f"{target['display_name']} ({target['target_id']}), generation {state['state_generation']}\n")
    _table(rows, out)


def _print_push(push: dict[str, Any], out: TextIO) -> None:
    kind = push.get("type")
    if kind == "event":
        e = push["event"]
        out.write(f"{e['occurred_at']} #{e['sequence']} {e['severity']:<7} {e['event_type']:<26} "
                  f"{e['target_path']} {json.dumps(e['payload'], sort_keys=True)}\n")
    elif kind == "log":
        r = push["log"]
        where = r["fields"].get("child_path", "")
        out.write(f"{r['occurred_at']} {r['severity']:<7} {where} {r['message']}\n")
    elif kind == "dropped_count":
        out.write(f"!! dropped {push['dropped_event_count']} events, {push['dropped_log_count']} log lines\n")
    out.flush()


def _show(pushes: Iterable[dict[str, Any]], args: argparse.Namespace, out: TextIO) -> None:
    for push in pushes:
        if push.get("type") == "state_delta":
            continue
        if args.json:
            out.write(json.dumps(push) + "\n")
            out.flush()
        else:
            _print_push(push, out)


def run(argv: list[str], out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.ctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the target's ipc.path")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=float, default=35.0, help="seconds to wait for an answer")
    parser.add_argument("--as", dest="requested_by", default=_operator(), help="operator identity")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("status", help="one line per child")
    events = sub.add_parser("events", help="recent events (and live ones with --follow)")
    events.add_argument("--follow", action="store_true")
    events.add_argument("--since", type=int, default=0, help="only events after this sequence")
    logs = sub.add_parser("logs", help="recent log records (and live ones with --follow)")
    logs.add_argument("--follow", action="store_true")
    logs.add_argument("--lines", type=int, default=50)
    for name in CHILD_COMMANDS:
        p = sub.add_parser(name, help=f"{CHILD_COMMANDS[name]} on one child")
        p.add_argument("child", help="child path, e.g. /root/worker")
        p.add_argument("--reason", required=True)
        p.add_argument("--yes", action="store_true", help="confirm a dangerous command")
    add = sub.add_parser("add", help="add_child from a YAML manifest")
    add.add_argument("parent", nargs="?", default="/root")
    add.add_argument("--manifest", required=True, help="YAML file describing one child")
    add.add_argument("--reason", required=True)
    add.add_argument("--yes", action="store_true")
    shutdown = sub.add_parser("shutdown", help="shutdown_tree")
    shutdown.add_argument("--reason", required=True)
    shutdown.add_argument("--yes", action="store_true")
    args = parser.parse_args(argv)

    try:
        conn = Connection(args.socket, args.timeout)
        try:
            return _dispatch(conn, args, out)
        finally:
            conn.close()
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    target_id = conn.call("hello", None)["target_id"]
    scope = {"target_id": target_id}
    if args.action == "status":
        state = conn.call("state", scope)["state"]
        out.write(json.dumps(state) + "\n") if args.json else _print_status(state, out)
        return 0
    if args.action in ("events", "logs") and not args.follow:
        # what the target still holds, as a snapshot: no subscription needed
        state = conn.call("state", scope)["state"]
        if args.action == "events":
            records = [{"type": "event", "target_id": target_id, "event": e}
                       for e in state["recent_events"] if e["sequence"] > args.since]
        else:
            records = [{"type": "log", "target_id": target_id, "log": r}
                       for r in state["recent_logs"][-args.lines:]] if args.lines else []
        _show(records, args, out)
        return 0
    if args.action == "events":
        conn.call("events.subscribe", {**scope, "session_established": True, "since_sequence": args.since})
        _show(conn.pushes(), args, out)
        return 0
    if args.action == "logs":
        conn.call("logs.tail", {**scope, "session_established": True, "lines": args.lines})
        _show(conn.pushes(), args, out)
        return 0
    target: dict[str, Any] = {"child_path": None, "child_manifest": None}
    if args.action in CHILD_COMMANDS:
        command = CHILD_COMMANDS[args.action]
        target["child_path"] = args.child
    elif args.action == "add":
        command = "add_child"
        target["child_path"] = args.parent
        try:
            with open(args.manifest, encoding="utf-8") as f:
                target["child_manifest"] = f.read()
        except OSError as e:
            raise CtlError(f"cannot read {args.manifest}: {e.strerror}") from None
    else:
        command = "shutdown_tree"
    if command in DANGEROUS_COMMANDS and not args.yes:
        raise CtlError(f"{command} is dangerous; repeat with --yes to confirm")
    command_id = f"ctl-{uuid.uuid4().hex[:12]}"
    params = {
        "command_id": command_id, "correlation_id": command_id, "target_id": target_id,
        "command": command, "target": target, "reason": args.reason,
        "requested_by": args.requested_by, "confirmed": bool(getattr(args, "yes", False)),
    }
    result = conn.call(f"command.{command}", params)["result"]
    if args.json:
        out.write(json.dumps(result) + "\n")
    else:
        error = result["error"]
        detail = f" ({error['code']}: {error['message']})" if error else ""
        out.write(f"{command} {target['child_path'] or ''}: {result['status']}{detail}\n")
    return 0 if result["accepted"] else 2


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
