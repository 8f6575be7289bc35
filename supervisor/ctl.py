"""Operator command line for a target's IPC socket, in the spirit of ``supervisorctl``.

Human-readable tables by default, one JSON document per line with ``--json``. Every answer
has a deadline (``--timeout``); ``--follow`` streams until interrupted. The target is named
by ``--socket PATH``, else by the ``ipc.path`` of ``--config FILE`` (its YAML), else by
``$SUPERVISOR_SOCKET``. See :data:`EXAMPLES` for the command lines.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
import uuid
from typing import Any, Callable, NoReturn, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react

from supervisor.config._common import ConfigError
from supervisor.config.target import load_ipc_config
from supervisor.wire.client import NDJSONClientProtocol, RemoteError, connect_unix
from supervisor.wire.errors import WireError
from supervisor.wire.vocabulary import DRY_RUN_COMMANDS, ipc_method, needs_confirmation

MAX_LINE_BYTES = 16 * 1024 * 1024
SOCKET_ENV = "SUPERVISOR_SOCKET"
DESCRIPTION = "Operator command line for a target's IPC socket, in the spirit of supervisorctl."
EXAMPLES = f"""\
the target:
  --socket PATH, else the ipc.path of --config FILE (the target's YAML),
  else ${SOCKET_ENV}

examples:
  python -m supervisor.ctl --socket /run/app/target.sock status
  python -m supervisor.ctl --config etc/demo-target.yaml events --follow
  {SOCKET_ENV}=/run/app/target.sock python -m supervisor.ctl logs --follow --lines 50
  python -m supervisor.ctl --config target.yaml restart /root/worker --reason "stuck"
  python -m supervisor.ctl --config target.yaml add /root --manifest child.yaml --reason "scale" --yes
  python -m supervisor.ctl --config target.yaml restart 'worker:*' --reason "deploy"
  python -m supervisor.ctl --config target.yaml signal HUP /root/web
  python -m supervisor.ctl --config target.yaml reload --dry-run --reason "check the edit"
  python -m supervisor.ctl --config target.yaml reload --reason "new worker" --yes

children are named by path (/root/web, /root/web/web_00) or as supervisorctl names them:
'web:*' is the group /root/web (every instance of a numprocs child), 'web:web_00' one of
its instances, and a bare name a child of the root.

events and logs print what the target still holds (all of its event journal after --since,
the last --lines log records); --follow then keeps streaming. When older events were
evicted from the journal, a line says so.
"""
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


def child_path(name: str) -> str:
    """A child path from ``/root/a/b``, supervisorctl's ``group:*`` / ``group:name``, or a bare
    name (a child of the root)."""
    if name.startswith("/"):
        return name
    group, colon, member = name.partition(":")
    if not colon:
        return f"/root/{name}"
    if member in ("", "*"):
        return f"/root/{group}"
    return f"/root/{group}/{member}"


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

    async def status(self, scope: dict[str, Any]) -> dict[str, Any]:
        """The lean ``status`` read; made from ``state`` on a target that has no ``status``."""
        try:
            return await self._client.request("status", scope)
        except RemoteError as e:
            if e.code != "unsupported_method":
                raise _explain(e) from None
        except WireError as e:
            raise _explain(e) from None
        return status_from_state((await self.call("state", scope))["state"])

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


def status_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """The ``status`` result made from a full DashboardState, for a target without ``status``
    (it tells no pids and no start times)."""
    kinds = {n["path"]: n["kind"] for n in state["topology"]["nodes"]}
    return {
        "type": "status",
        "target_id": state["target"]["target_id"],
        "display_name": state["target"]["display_name"],
        "instance_id": state["target"].get("instance_id"),
        "state_generation": state["state_generation"],
        "generated_at": state["generated_at"],
        "generated_at_unix_nanos": state.get("generated_at_unix_nanos"),
        "rows": [{
            "child_path": row["child_path"], "kind": kinds.get(row["child_path"], "unknown"),
            "lifecycle_state": row["lifecycle_state"], "health": row["health"],
            "readiness": row["readiness"], "pid": None, "generation": row["generation"],
            "restart_count": row["restart_count"],
            "last_failure": row["last_failure"], "started_at": None, "started_at_unix_nanos": None,
            "resources": row.get("resources"),
        } for row in state["runtime_state"]],
    }


def _size(n: int) -> str:
    """Bytes as a short binary size: ``512B``, ``40.0M``, ``1.5G``."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _figures(resources: Any) -> list[str]:
    """The CPU and RSS cells of a row (``-`` when the row has no figures)."""
    if not isinstance(resources, dict):
        return ["-", "-"]
    return [f"{resources.get('cpu_percent', 0):.1f}%", _size(int(resources.get("rss_bytes", 0)))]


def _status(status: dict[str, Any]) -> dict[str, Any]:
    """What ``--json status`` prints: the target, its state generation and one status row
    per child (under ``runtime_state``, the key this output has always had)."""
    return {"target": {"target_id": status["target_id"], "display_name": status["display_name"],
                       "instance_id": status.get("instance_id")},
            "state_generation": status["state_generation"],
            "generated_at": status["generated_at"],
            "generated_at_unix_nanos": status["generated_at_unix_nanos"],
            "runtime_state": status["rows"]}


def uptime(started_at_unix_nanos: int | None, now_unix_nanos: int) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 07s``, ``12s``; ``-`` when not running."""
    if started_at_unix_nanos is None:
        return "-"
    seconds = max(0, (now_unix_nanos - started_at_unix_nanos) // 1_000_000_000)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _print_status(status: dict[str, Any], out: TextIO) -> None:
    now = time.time_ns()
    rows = [["PATH", "KIND", "STATE", "HEALTH", "READY", "PID", "RESTARTS", "UPTIME", "CPU", "RSS",
             "LAST FAILURE"]]
    for row in status["rows"]:
        rows.append([
            row["child_path"], row["kind"].replace("child_", ""), row["lifecycle_state"],
            row["health"], row["readiness"], "-" if row["pid"] is None else str(row["pid"]),
            str(row["restart_count"]), uptime(row["started_at_unix_nanos"], now),
            *_figures(row.get("resources")), row["last_failure"] or "-",
        ])
    out.write(f"{status['display_name']} ({status['target_id']}), "
              f"generation {status['state_generation']}\n")
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


class Pushes:
    """Prints what a subscription streams (state deltas are left out).

    In tables, a replay that starts after the events asked for (``--since``) begins with a
    line naming the events the journal no longer holds; ``dropped_count`` lines say what this
    reader lost beyond that cut. ``--json`` prints every push as it came.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self._json = args.json
        self._out = out
        self._since = getattr(args, "since", 0)
        self._first = True  # no event or log line yet
        self._cut = 0  # events already evicted when the subscription began
        self._held: dict[str, Any] | None = None  # a dropped_count ahead of the first line

    def __call__(self, push: dict[str, Any]) -> None:
        kind = push.get("type")
        if kind == "state_delta":
            return
        if self._json:
            self._out.write(json.dumps(push) + "\n")
        elif kind == "dropped_count":
            if self._first:
                self._held = push  # the subscription's own gap comes first; see the first event
            else:
                self._dropped(push)
        else:
            if self._first:
                self._begin(push)
            _print_push(push, self._out)
        self._out.flush()

    def _begin(self, push: dict[str, Any]) -> None:
        self._first = False
        if push.get("type") == "event":
            self._cut = max(0, push["event"]["sequence"] - self._since - 1)
        if self._cut:
            self._out.write(f"-- events #{self._since + 1}–#{self._since + self._cut} are no longer "
                            "held by the target (evicted from its journal)\n")
        if self._held is not None:
            self._dropped(self._held)

    def _dropped(self, push: dict[str, Any]) -> None:
        events, logs = push["dropped_event_count"] - self._cut, push["dropped_log_count"]
        if events or logs:
            self._out.write(f"!! dropped {events} events, {logs} log lines\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor.ctl", description=DESCRIPTION,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the target's IPC socket (its ipc.path)")
    where.add_argument("--config", metavar="FILE", help="the target's YAML file, to read ipc.path from")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=float, default=35.0, help="seconds to wait for an answer")
    parser.add_argument("--as", dest="requested_by", default=_operator(), help="operator identity")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("status", help="one line per child")
    events = sub.add_parser("events", help="the events the target holds (and live ones with --follow)")
    events.add_argument("--follow", action="store_true", help="keep streaming new events")
    events.add_argument("--since", type=int, default=0, help="only events after this sequence")
    logs = sub.add_parser("logs", help="the last log records (and live ones with --follow)")
    logs.add_argument("--follow", action="store_true", help="keep streaming new records")
    logs.add_argument("--lines", type=int, default=50, help="how many of the last records")
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
    sig = sub.add_parser("signal", help="signal_child: send a signal to a process child or group")
    sig.add_argument("signal", help="signal name, e.g. HUP or SIGUSR1")
    sig.add_argument("child", help="child path, e.g. /root/web or 'web:*'")
    sig.add_argument("--reason", help="why (default: names the signal and ctl)")
    reload = sub.add_parser("reload", help="reload_config: re-read the target's YAML and apply it")
    reload.add_argument("--dry-run", action="store_true",
                        help="print what would change and change nothing")
    reload.add_argument("--reason", required=True)
    reload.add_argument("--yes", action="store_true", help="confirm (not needed with --dry-run)")
    shutdown = sub.add_parser("shutdown", help="shutdown_tree")
    shutdown.add_argument("--reason", required=True)
    shutdown.add_argument("--yes", action="store_true")
    return parser


def run(argv: list[str], out: TextIO = sys.stdout) -> NoReturn:
    """Run one ctl command line and exit with its status (130 when interrupted)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.socket or args.config or os.environ.get(SOCKET_ENV)):
        parser.error(f"which target? give --socket PATH or --config FILE, or set {SOCKET_ENV}")
    react(_main, (args, out))


def _socket_path(args: argparse.Namespace) -> str:
    """``--socket``, else ``ipc.path`` of ``--config``, else ``$SUPERVISOR_SOCKET``."""
    if args.socket:
        return args.socket
    if args.config:
        try:
            ipc = load_ipc_config(args.config)
        except ConfigError as e:
            raise CtlError(f"{args.config}: {e}") from None
        if not ipc.path:
            raise CtlError(f"{args.config} gives the target no IPC socket (ipc.enabled is false)")
        return ipc.path
    return os.environ[SOCKET_ENV]


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
    # pushes come only after events.subscribe or logs.tail
    conn = await Connection.open(reactor, _socket_path(args), args.timeout, Pushes(args, out))
    try:
        return await _dispatch(conn, args, out)
    finally:
        conn.close()


async def _dispatch(conn: Connection, args: argparse.Namespace, out: TextIO) -> int:
    target_id = (await conn.call("hello", None))["target_id"]
    scope = {"target_id": target_id}
    if args.action == "status":
        status = await conn.status(scope)
        out.write(json.dumps(_status(status)) + "\n") if args.json else _print_status(status, out)
        return 0
    if args.action in ("events", "logs"):
        # one rule with and without --follow: the subscription replays what the target holds
        subscribe = {**scope, "session_established": True}
        if args.action == "events":
            await conn.call("events.subscribe", {**subscribe, "since_sequence": args.since})
        else:
            await conn.call("logs.tail", {**subscribe, "lines": args.lines})
        if args.follow:
            await conn.until_closed()
        # answers come in request order, after the pushes queued before them: once this one
        # is in, the replay has been printed
        await conn.call("hello", None)
        return 0
    target: dict[str, Any] = {"child_path": None, "child_manifest": None}
    reason = args.reason
    if args.action in CHILD_COMMANDS:
        command = CHILD_COMMANDS[args.action]
        target["child_path"] = child_path(args.child)
    elif args.action == "signal":
        command = "signal_child"
        target["child_path"] = child_path(args.child)
        target["signal"] = args.signal
        reason = reason or f"signal {args.signal} sent with ctl"
    elif args.action == "add":
        command = "add_child"
        target["child_path"] = args.parent
        try:
            with open(args.manifest, encoding="utf-8") as f:
                target["child_manifest"] = f.read()
        except OSError as e:
            raise CtlError(f"cannot read {args.manifest}: {e.strerror}") from None
    elif args.action == "reload":
        command = "reload_config"
    else:
        command = "shutdown_tree"
    dry_run = bool(getattr(args, "dry_run", False))
    if needs_confirmation(command, dry_run) and not args.yes:
        raise CtlError(f"{command} is dangerous; repeat with --yes to confirm"
                       + (" (or try --dry-run)" if command in DRY_RUN_COMMANDS else ""))
    command_id = f"ctl-{uuid.uuid4().hex[:12]}"
    params = {
        "command_id": command_id, "correlation_id": command_id, "target_id": target_id,
        "command": command, "target": target, "reason": reason,
        "requested_by": args.requested_by, "confirmed": bool(getattr(args, "yes", False)),
    }
    if dry_run:
        params["dry_run"] = True
    result = (await conn.call(ipc_method(command), params))["result"]
    if args.json:
        out.write(json.dumps(result) + "\n")
    elif command == "reload_config":
        _print_reload(result, dry_run, out)
    else:
        error = result["error"]
        detail = f" ({error['code']}: {error['message']})" if error else ""
        out.write(f"{command} {target['child_path'] or ''}: {result['status']}{detail}\n")
        if command == "signal_child" and result["accepted"]:
            for row in (result.get("state_delta") or {}).get("runtime_state") or []:
                out.write(f"  {target['signal']} -> {row['child_path']}\n")
    return 0 if result["accepted"] else 2


def _print_reload(result: dict[str, Any], dry_run: bool, out: TextIO) -> None:
    """The reload's outcome and, when it was read, its diff (docs/protocol.md)."""
    error = result["error"]
    if error:
        out.write(f"reload_config: {result['status']} ({error['code']}: {error['message']})\n")
        return
    out.write(f"reload_config{' (dry run, nothing changed)' if dry_run else ''}: "
              f"{result['status']}\n")
    diff = result.get("diff") or {}
    out.write(format_diff(diff))


def format_diff(diff: dict[str, Any]) -> str:
    """A reload diff as lines: added, removed, changed (with their keys), the rest counted."""
    lines = []
    for path in diff.get("added", []):
        lines.append(f"  + {path}  (added: starts)")
    for path in diff.get("removed", []):
        lines.append(f"  - {path}  (removed: stops)")
    for change in diff.get("changed", []):
        what = "restarts" if change["restart"] else "applied without a restart"
        lines.append(f"  ~ {change['path']}  {', '.join(change['keys'])}  ({what})")
    for level in diff.get("supervisors", []):
        lines.append(f"  ~ {level['path']}  {', '.join(level['keys'])}  (applied without a restart)")
    for path in diff.get("added_at_run_time", []):
        lines.append(f"  = {path}  (added at run time, not in the file: kept)")
    for path in diff.get("removed_at_run_time", []):
        lines.append(f"  = {path}  (removed at run time, still in the file: stays removed)")
    for key in diff.get("not_applied", []):
        lines.append(f"  ! {key}  (read only at start: restart the target to apply)")
    lines.append(f"  {diff.get('unchanged', 0)} unchanged")
    return "\n".join(lines) + "\n"


def main() -> NoReturn:
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
