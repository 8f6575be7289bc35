"""Operator command line for a target's IPC socket, in the spirit of ``supervisorctl``.

    python -m supervisor.ctl --socket PATH status
    python -m supervisor.ctl --socket PATH events --follow
    python -m supervisor.ctl --socket PATH logs --follow --lines 50
    python -m supervisor.ctl --socket PATH restart /root/worker --reason "stuck"
    python -m supervisor.ctl --socket PATH add /root --manifest child.yaml --reason "scale" --yes

Human-readable tables by default, one JSON document per line with ``--json``. Every answer
has a deadline (``--timeout``); ``--follow`` streams until interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import uuid
from typing import Any, Callable, Iterable, NoReturn, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react

from supervisor.wire.client import NDJSONClientProtocol, RemoteError, connect_unix
from supervisor.wire.errors import WireError
from supervisor.wire.vocabulary import DANGEROUS_COMMANDS, ipc_method

MAX_LINE_BYTES = 16 * 1024 * 1024
CHILD_COMMANDS = {
    "restart": "restart_child",
    "pause": "pause_child",
    "resume": "resume_child",
    "quarantine": "quarantine_child",
    "remove": "remove_child",
}
#: What the operator reads for the client's own failures (the target's are code: message).
_EXPLAINED = {
    "connection_lost": "the target closed the connection",
    "ipc_timeout": "the target did not answer in time",
    "ipc_response_too_large": "the target sent an overlong line",
}


class CtlError(Exception):
    """Something the operator should read; printed without a traceback."""


def _explain(error: WireError) -> CtlError:
    """The one line the operator reads for ``error``."""
    if not isinstance(error, RemoteError):
        if error.code in _EXPLAINED:
            return CtlError(_EXPLAINED[error.code])
        if error.code == "ipc_connect_failed":
            return CtlError(error.message)  # "cannot connect to PATH: why"
    return CtlError(f"{error.code}: {error.message}")


class Connection:
    """One NDJSON connection to a target (the wire client), failing with :class:`CtlError`."""

    def __init__(self, client: NDJSONClientProtocol) -> None:
        self._client = client

    @classmethod
    async def open(cls, reactor: Any, path: str, timeout: float,
                   on_push: Callable[[dict[str, Any]], None]) -> "Connection":
        def build() -> NDJSONClientProtocol:
            return NDJSONClientProtocol(reactor, default_timeout=timeout,
                                        max_line_bytes=MAX_LINE_BYTES, on_push=on_push)

        try:
            return cls(await connect_unix(reactor, path, build, timeout=timeout))
        except WireError as e:
            raise _explain(e) from None

    def close(self) -> None:
        self._client.close()

    async def call(self, method: str, params: Any) -> dict[str, Any]:
        try:
            return await self._client.request(method, params)
        except WireError as e:
            raise _explain(e) from None

    async def until_closed(self) -> NoReturn:
        """Wait while pushes stream in; a followed stream ends only with its connection."""
        raise _explain(await self._client.closed)


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


def _parser() -> argparse.ArgumentParser:
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
    return parser


def run(argv: list[str], out: TextIO = sys.stdout) -> NoReturn:
    """Run one ctl command line and exit with its status (130 when interrupted)."""
    react(_main, (_parser().parse_args(argv), out))


async def _main(reactor: IReactorCore, args: argparse.Namespace, out: TextIO) -> NoReturn:
    work = Deferred.fromCoroutine(_session(reactor, args, out))
    # Ctrl-C stops the reactor; stop the command with it rather than leave it half-read
    reactor.addSystemEventTrigger("before", "shutdown", work.cancel)
    try:
        status = await work
    except CtlError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 1
    except CancelledError:
        status = 130
    raise SystemExit(status)


async def _session(reactor: Any, args: argparse.Namespace, out: TextIO) -> int:
    # pushes come only after events.subscribe or logs.tail, i.e. with --follow
    conn = await Connection.open(reactor, args.socket, args.timeout,
                                 lambda push: _show([push], args, out))
    try:
        return await _dispatch(conn, args, out)
    finally:
        conn.close()


async def _dispatch(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    target_id = (await conn.call("hello", None))["target_id"]
    scope = {"target_id": target_id}
    if args.action == "status":
        state = (await conn.call("state", scope))["state"]
        out.write(json.dumps(state) + "\n") if args.json else _print_status(state, out)
        return 0
    if args.action in ("events", "logs") and not args.follow:
        # what the target still holds, as a snapshot: no subscription needed
        state = (await conn.call("state", scope))["state"]
        if args.action == "events":
            records = [{"type": "event", "target_id": target_id, "event": e}
                       for e in state["recent_events"] if e["sequence"] > args.since]
        else:
            records = [{"type": "log", "target_id": target_id, "log": r}
                       for r in state["recent_logs"][-args.lines:]] if args.lines else []
        _show(records, args, out)
        return 0
    if args.action == "events":
        await conn.call("events.subscribe", {**scope, "session_established": True,
                                             "since_sequence": args.since})
        await conn.until_closed()
    if args.action == "logs":
        await conn.call("logs.tail", {**scope, "session_established": True, "lines": args.lines})
        await conn.until_closed()
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
    result = (await conn.call(ipc_method(command), params))["result"]
    if args.json:
        out.write(json.dumps(result) + "\n")
    else:
        error = result["error"]
        detail = f" ({error['code']}: {error['message']})" if error else ""
        out.write(f"{command} {target['child_path'] or ''}: {result['status']}{detail}\n")
    return 0 if result["accepted"] else 2


def main() -> NoReturn:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
