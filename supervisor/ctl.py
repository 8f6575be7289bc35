"""Operator command line for a target's IPC socket, in the spirit of ``supervisorctl``.

Human-readable tables by default, one JSON document per line with ``--json``. Every answer
has a deadline (``--timeout``); ``--follow`` streams until interrupted. The target is named
by ``--socket PATH``, else by the ``ipc.path`` of ``--config FILE`` (its YAML), else by
``$SUPERVISOR_SOCKET``. See :data:`EXAMPLES` for the command lines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pwd
import re
import sys
import time
import uuid
from typing import Any, Callable, NoReturn, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import deferLater, react

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

  python -m supervisor.ctl --config target.yaml logs --since 10m --grep timeout --child /root/api
  python -m supervisor.ctl --config target.yaml events --since 2026-11-28T13:00:00Z --follow

events and logs print what the target still holds (all of its event journal after --since
SEQUENCE, the last --lines log records); --follow then keeps streaming. When older events were
evicted from the journal, a line says so.

With --since TIME (10m, 2h, 1d, 30s or an RFC 3339 instant), --until, --grep, --child or
--severity they read the target's history instead (observability.history): every record
kept on disk that matches, oldest first; --follow then continues with live records, without
a gap or a repeat, filtered the same way.
"""
#: ``10m`` and friends: how far back ``--since`` reaches.
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: How long a follower waits for the history to catch up with the live stream.
CATCH_UP_SECONDS = 10.0
HISTORY_PAGE = 1000
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
        since = getattr(args, "since", 0)
        self._since = since if isinstance(since, int) else 0
        self._first = True  # no event or log line yet
        self._cut = 0  # events already evicted when the subscription began
        self._held: dict[str, Any] | None = None  # a dropped_count ahead of the first line
        self._holding: str | None = None  # pushes of this type wait (history --follow)
        self._waiting = []
        self._keep: Callable[[dict[str, Any]], bool] = lambda push: True

    def hold(self, key: str) -> None:
        """Keep ``key`` (``log`` / ``event``) pushes back until :meth:`release`."""
        self._holding = key
        self._waiting: list[dict[str, Any]] = []

    def first_held(self) -> int | None:
        return self._waiting[0][self._holding]["sequence"] if self._waiting else None

    def release(self, after: int, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Print the held pushes newer than sequence ``after`` that ``keep``, then stream."""
        key = self._holding
        self._holding = None
        self._keep = lambda push: push.get("type") != key or (keep(push[key]))
        for push in self._waiting:
            if push[key]["sequence"] > after:
                self(push)
        self._waiting = []

    def print_record(self, key: str, record: dict[str, Any]) -> None:
        """One record read from the history, printed as its push would be."""
        push = {"type": key, key: record}
        if self._json:
            self._out.write(json.dumps(push) + "\n")
        else:
            _print_push(push, self._out)
        self._first = False
        self._out.flush()

    def __call__(self, push: dict[str, Any]) -> None:
        kind = push.get("type")
        if kind == "state_delta":
            return
        if self._holding is not None and kind == self._holding:
            self._waiting.append(push)
            return
        if not self._keep(push):
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


def _instant(text: str) -> str:
    """``10m`` (that long ago) or an RFC 3339 instant, as an RFC 3339 UTC string."""
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
        moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (10m) or RFC 3339 time: {text}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a zone (Z or +hh:mm): {text}")
    return text


def _since(text: str) -> int | str:
    """A plain number is a sequence (the journal); anything else a time (the history)."""
    return int(text) if text.isdigit() else _instant(text)


def _wants_history(args: argparse.Namespace) -> bool:
    return (isinstance(args.since, str) or args.until is not None or args.grep is not None
            or args.child is not None or bool(args.severity))


class _LiveFilter:
    """The history filter, applied to live records on the client (same rules as the target)."""

    def __init__(self, args: argparse.Namespace, stream: str) -> None:
        self.stream = stream
        self.child = args.child.rstrip("/") if args.child else None
        self.text = args.grep
        self.severities = set(args.severity)

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.severities and record.get("severity") not in self.severities:
            return False
        if self.child:
            path = (record.get("fields") or {}).get("child_path") if self.stream == "logs" \
                else record.get("target_path")
            if not isinstance(path, str) or not (path == self.child or path.startswith(self.child + "/")):
                return False
        if self.text:
            haystack = record.get("message", "") if self.stream == "logs" else \
                record.get("event_type", "") + " " + json.dumps(record.get("payload"),
                                                                separators=(",", ":"),
                                                                ensure_ascii=False)
            if self.text not in haystack:
                return False
        return True


async def _from_history(reactor: Any, conn: Connection, args: argparse.Namespace, out: TextIO,
                        pushes: "Pushes", target_id: str) -> int:
    """Print the matching history, then (``--follow``) live records: no gap, no repeat.

    The live subscription starts first and its records wait; the history is read to its end
    (again, while it is behind the first waiting record: it is written within its flush
    interval); then the waiting records newer than the last one printed follow, and the rest
    as they come.
    """
    stream = args.action
    key = "log" if stream == "logs" else "event"
    scope = {"target_id": target_id}
    live = _LiveFilter(args, stream)
    instance = None
    if args.follow:
        state = (await conn.call("state", scope))["state"]
        instance = state["target"].get("instance_id")
        pushes.hold(key)
        subscribe = {**scope, "session_established": True}
        if stream == "events":
            recent = state["recent_events"]
            await conn.call("events.subscribe",
                            {**subscribe, "since_sequence": recent[-1]["sequence"] if recent else 0})
        else:
            await conn.call("logs.tail", {**subscribe, "lines": 0})
    params = {**scope, "limit": HISTORY_PAGE, "child_path": args.child,
              "severities": args.severity, "since": args.since if isinstance(args.since, str) else None,
              "until": args.until, "text": args.grep}
    method = f"history.{stream}"
    newest = 0  # the last sequence of the current instance printed
    last_page: set[tuple[Any, int]] = set()  # what the page read last held (read again)
    cursor = None
    final = False
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while True:
        start = cursor  # where the last page began: reading again starts there
        while True:
            page = await conn.call(method, {**params, "after": cursor, "before": None})
            marks = set()
            for record in page["records"]:
                mark = (record.get("instance_id"), record["sequence"])
                marks.add(mark)
                if mark in last_page:
                    continue
                pushes.print_record(key, record)
                if record.get("instance_id") == instance:
                    newest = max(newest, record["sequence"])
            last_page = marks
            if page["next_cursor"] is None:
                break
            cursor = start = page["next_cursor"]
        if not args.follow:
            return 0
        first_live = pushes.first_held()
        if final or first_live is None or first_live <= newest + 1:
            break
        # the live stream starts after what was printed: filtered out, or not on disk yet?
        tip = (await conn.call(method, {**scope, "limit": 1, "before": "end", "after": None}))
        top = tip["records"][-1] if tip["records"] else None
        cursor = start
        if top is not None and top.get("instance_id") == instance and top["sequence"] >= first_live - 1:
            final = True  # the history holds everything before the live stream: read it once more
            continue
        if time.monotonic() > deadline:
            out.write(f"-- the history did not catch up with the live stream: records before "
                      f"#{first_live} may be missing\n")
            break
        await deferLater(reactor, 0.1, lambda: None)
    pushes.release(newest, live)
    await conn.until_closed()


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
    events.add_argument("--since", type=_since, default=0,
                        help="a sequence (journal), or a time: 10m, 2h, 1d, RFC 3339 (history)")
    logs = sub.add_parser("logs", help="the last log records (and live ones with --follow)")
    logs.add_argument("--follow", action="store_true", help="keep streaming new records")
    logs.add_argument("--lines", type=int, default=50, help="how many of the last records")
    logs.add_argument("--since", type=_since, default=None,
                      help="from the history: records since 10m, 2h, 1d or an RFC 3339 time")
    for p in (events, logs):
        p.add_argument("--until", type=_instant, default=None, help="history: records before this time")
        p.add_argument("--grep", metavar="TEXT", default=None, help="history: records containing TEXT")
        p.add_argument("--child", metavar="PATH", default=None,
                       help="history: records of this child and its subtree")
        p.add_argument("--severity", action="append", default=[],
                       choices=["trace", "debug", "info", "warning", "error"],
                       help="history: only this severity (repeatable)")
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
    pushes = Pushes(args, out)
    conn = await Connection.open(reactor, _socket_path(args), args.timeout, pushes)
    try:
        return await _dispatch(conn, args, out, reactor, pushes)
    finally:
        conn.close()


async def _dispatch(conn: Connection, args: argparse.Namespace, out: TextIO,
                    reactor: Any = None, pushes: "Pushes | None" = None) -> int:
    target_id = (await conn.call("hello", None))["target_id"]
    scope = {"target_id": target_id}
    if args.action in ("events", "logs") and _wants_history(args):
        assert pushes is not None
        return await _from_history(reactor, conn, args, out, pushes, target_id)
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
