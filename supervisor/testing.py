"""Helpers for testing code that uses supervision trees, on a fake clock.

Works the same from a trial ``TestCase`` and from pytest::

    work = ManualTask()
    harness = TreeHarness(SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=work)]))
    harness.start()
    harness.crash("/root/w")
    harness.advance(1)
    assert harness.lifecycle("/root/w") == "running"
    assert [e.event_type for e in harness.events(path="/root/w")][-1] == "child_restarted"

Nothing here sleeps or touches real time: :meth:`TreeHarness.advance` steps a
``twisted.internet.task.Clock``. :class:`MemoryTarget` is a target for tests of code that
talks to targets (the relay, your own tools): the §1 IPC protocol without sockets.
"""

from __future__ import annotations

import collections
import random
import uuid
from typing import Any, Callable

import yaml
from twisted.internet import defer
from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (IAddress, IProtocol, IProtocolFactory, IReactorTime,
                                         IStreamClientEndpoint, ITransport)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from supervisor.config.target import parse_target_config
from supervisor.tree.children import ChildContext
from supervisor.tree.journal import EventRecord
from supervisor.tree.resources import Figures
from supervisor.tree.commands import CommandOutcome
from supervisor.tree.reconfigure import Reloaded
from supervisor.tree.runtime import Supervisor
from supervisor.tree.spec import SupervisorSpec
from supervisor.wire.errors import WireError
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.timestamps import rfc3339, unix_nanos
from supervisor.wire.vocabulary import COMMANDS, PROTOCOL_VERSION, event_severity


class TaskRun:
    """One run of a :class:`ManualTask`: the test decides when and how it ends."""

    def __init__(self, ctx: ChildContext, cooperative: bool) -> None:
        self.ctx = ctx
        self.deferred: defer.Deferred[None] = defer.Deferred()
        if cooperative:
            ctx.cancellation.addCallback(lambda _: self.finish())

    def finish(self) -> None:
        """End normally (the task returned)."""
        if not self.deferred.called:
            self.deferred.callback(None)

    def fail(self, exc: BaseException | None = None) -> None:
        """End abnormally (the task raised)."""
        if not self.deferred.called:
            self.deferred.errback(exc or RuntimeError("task failed"))

    @property
    def ended(self) -> bool:
        return self.deferred.called


class ManualTask:
    """A task factory that records every run; ``cooperative`` runs stop when asked to."""

    def __init__(self, cooperative: bool = True, heartbeat: bool = False, ready: bool = True) -> None:
        self.cooperative = cooperative
        self.heartbeat = heartbeat
        self.ready = ready
        self.runs: list[TaskRun] = []

    def __call__(self, ctx: ChildContext) -> defer.Deferred[None]:
        run = TaskRun(ctx, self.cooperative)
        self.runs.append(run)
        if self.heartbeat:
            ctx.heartbeat()
        if self.ready:
            ctx.mark_ready()
        return run.deferred

    @property
    def current(self) -> TaskRun:
        return self.runs[-1]


class FakeSampler:
    """A resource sampler whose figures the test sets: ``groups[pgid]`` and ``own``.

    It answers only for the process groups it was given figures for, as the real one answers
    only for groups that exist; ``calls`` counts the samples taken.
    """

    def __init__(self) -> None:
        self.groups: dict[int, Figures] = {}
        self.own: Figures | None = None
        self.calls = 0

    def sample_groups(self, pgids: Any) -> dict[int, Figures]:
        self.calls += 1
        return {pgid: self.groups[pgid] for pgid in pgids if pgid in self.groups}

    def sample_self(self) -> Figures | None:
        return self.own


class TreeHarness:
    """A :class:`Supervisor` on a fake clock with shortcuts for driving and inspecting it.

    Process figures come from ``sampler`` (a :class:`FakeSampler` unless given), so a test
    that does not set any sees none.
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        seed: int = 0,
        target_id: str = "test-target",
        manifest_parser: Callable[[Any], Any] | None = None,
        reactor: Any = None,
        sampler: Any = None,
        config_loader: Callable[[], Any] | None = None,
    ) -> None:
        self.clock = Clock()
        self.sampler = sampler if sampler is not None else FakeSampler()
        self.supervisor = Supervisor(
            spec,
            clock=self.clock,
            reactor=reactor if reactor is not None else self.clock,
            target_id=target_id,
            rng=random.Random(seed),
            manifest_parser=manifest_parser,
            sampler=self.sampler,
            config_loader=config_loader,
        )
        #: the YAML :meth:`reload` reads (set by :meth:`from_yaml`)
        self.yaml_text: str | None = None

    @classmethod
    def from_yaml(cls, text: str, base_dir: str = ".", **kwargs: Any) -> "TreeHarness":
        """Build from the same YAML a target config file holds; :meth:`reload` reads it again."""
        config = parse_target_config(yaml.safe_load(text), base_dir)
        kwargs.setdefault("manifest_parser", config.manifest_parser())
        kwargs.setdefault("target_id", config.ipc.target_id)

        def load() -> Reloaded:
            fresh = parse_target_config(yaml.safe_load(harness.yaml_text or "{}"), base_dir)
            return Reloaded(fresh.spec, fresh.manifest_parser())

        kwargs.setdefault("config_loader", load)
        harness = cls(config.spec, **kwargs)
        harness.yaml_text = text
        return harness

    def reload(self, text: str | None = None, *, dry_run: bool = False, requested_by: str = "test",
               reason: str = "test", **kwargs: Any) -> CommandOutcome:
        """Run ``reload_config`` to completion on fake time, reading ``text`` (else the YAML
        given before)."""
        if text is not None:
            self.yaml_text = text
        return self.command("reload_config", requested_by=requested_by, reason=reason,
                            dry_run=dry_run, **kwargs)

    def start(self) -> "TreeHarness":
        self.supervisor.startService()
        return self

    def advance(self, seconds: float) -> None:
        """Move fake time forward call by call, so timers set along the way also run."""
        target = self.clock.seconds() + seconds
        for _ in range(1_000_000):
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= target]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        else:
            raise AssertionError("timers keep rescheduling themselves without time passing")
        self.clock.advance(max(0.0, target - self.clock.seconds()))

    def resolve(self, d: defer.Deferred[Any], limit: float = 600.0) -> Any:
        """Advance fake time until ``d`` fires (at most ``limit`` fake seconds); its result."""
        results: list[Any] = []
        d.addBoth(results.append)
        waited = 0.0
        while not results and waited < limit:
            self.advance(0.05)
            waited += 0.05
        if not results:
            raise AssertionError(f"Deferred did not fire within {limit} fake seconds")
        result = results[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def stop(self) -> dict[str, Any]:
        """Run the staged shutdown to completion; the shutdown report."""
        return self.resolve(self.supervisor.stopService())

    def crash(self, path: str, reason: str = "crashed by test") -> None:
        """Make the child at ``path`` fail now, whatever its kind."""
        child = self.supervisor.child(path)
        if child.runner is None:
            raise AssertionError(f"{path} is not running ({child.state.value})")
        child.runner.fail(reason)

    def command(self, command: str, path: str | None = None, *, requested_by: str = "test",
                reason: str = "test", **kwargs: Any) -> CommandOutcome:
        """Run a command to completion on fake time."""
        return self.resolve(
            self.supervisor.command(command, path, requested_by=requested_by, reason=reason, **kwargs)
        )

    def events(self, event_type: str | None = None, path: str | None = None) -> list[EventRecord]:
        return [
            e
            for e in self.supervisor.events
            if (event_type is None or e.event_type == event_type)
            and (path is None or e.target_path == path)
        ]

    def event_types(self, path: str | None = None) -> list[str]:
        return [e.event_type for e in self.events(path=path)]

    def row(self, path: str) -> dict[str, Any]:
        return self.supervisor.rows([path])[0]

    def lifecycle(self, path: str) -> str:
        return self.supervisor.child(path).state.value


# an in-memory target ------------------------------------------------------------------------

_COMMAND_OUTCOMES = {"restart_child": ("running", "child_restarted"),
                     "pause_child": ("paused", "child_paused"),
                     "resume_child": ("running", "child_resumed"),
                     "quarantine_child": ("quarantined", "child_quarantined")}


class MemoryTarget:
    """A target that speaks the ``dashboard-ipc.v1`` protocol (CONTRACTS.md §1) in memory.

    For tests of code that talks to targets (the relay, a
    :class:`~supervisor.relay.targetlink.TargetLink`, a tool of your own) without sockets or
    processes, as treq's ``StubTreq`` is for HTTP clients. It holds a flat tree (the root and
    named children, each with a lifecycle state) and bounded journals of events and logs with
    sequences, and answers ``hello``, ``state``, ``events.subscribe`` (replaying after
    ``since_sequence``), ``logs.tail`` and every command of the vocabulary as a real target does, pushing
    events, logs and deltas to the connections that subscribed::

        clock = Clock()
        target = MemoryTarget("payments", clock)
        link = TargetLink(entry, reactor=clock, ..., connector=lambda path: target.endpoint())
        target.emit_event("child_failed", child_id="worker")
        clock.advance(0)   # bytes move on the next reactor turn, as over a socket

    What a test can do to it: :meth:`emit_event`, :meth:`emit_log`, :meth:`report_dropped`,
    :meth:`freeze` / :meth:`thaw` (a SIGSTOPped process: connections stay open, requests
    wait), :meth:`stop` / :meth:`start` (connections dropped, new ones refused meanwhile) and
    :meth:`restart` (a new process: new ``instance_id``, sequences from 1). What it can look
    at: :attr:`requests` (every ``(method, params)`` received), :meth:`methods`,
    :attr:`connections`, :attr:`events`, :attr:`logs`, :attr:`children`.
    """

    def __init__(self, target_id: str, clock: IReactorTime, *,
                 children: dict[str, str] | None = None, display_name: str | None = None,
                 ipc_path: str | None = None, journal_capacity: int = 1024) -> None:
        self.target_id = target_id
        self.clock = clock
        self.display_name = display_name or target_id
        self.ipc_path = ipc_path or f"/memory/{target_id}.sock"
        #: child id → lifecycle state
        self.children: dict[str, str] = dict(children or {"worker": "running"})
        self.events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=journal_capacity)
        self.logs: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=journal_capacity)
        self.requests: collections.deque[tuple[Any, Any]] = collections.deque(
            maxlen=journal_capacity)
        self.connections: list[_TargetConnection] = []
        self.listening = True
        self.frozen = False
        self.instance_id = uuid.uuid4().hex
        self.generation = 1
        self._next_event = 1
        self._next_log = 1

    # what a test does
    def endpoint(self) -> IStreamClientEndpoint:
        """A client endpoint that connects to this target in memory."""
        return _MemoryEndpoint(self)

    def protocol(self) -> "_TargetConnection":
        """The server side of one connection (serve it over any transport you like)."""
        return _TargetConnection(self)

    def registration(self, lease_seconds: int = 30,
                     command_timeout_seconds: int = 30) -> dict[str, Any]:
        """This target's §2 registration payload."""
        return {"target_id": self.target_id, "display_name": self.display_name,
                "ipc_path": self.ipc_path, "lease_seconds": lease_seconds,
                "supported_commands": [{"name": name, "idempotent": False,
                                        "timeout_seconds": command_timeout_seconds}
                                       for name in COMMANDS]}

    def emit_event(self, event_type: str = "child_running", child_id: str = "worker", *,
                   severity: str | None = None, correlation_id: str | None = None,
                   payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Journal one EventRecord and push it to event subscribers; returns it."""
        now = self.clock.seconds()
        sequence, self._next_event = self._next_event, self._next_event + 1
        event = {"target_id": self.target_id, "sequence": sequence,
                 "correlation_id": correlation_id or f"corr-{sequence}",
                 "event_type": event_type,
                 "severity": severity or event_severity(event_type),
                 "target_path": f"/root/{child_id}", "child_id": child_id,
                 "occurred_at": rfc3339(now), "occurred_at_unix_nanos": unix_nanos(now),
                 "config_version": "memory-1", "payload": payload or {}}
        self.events.append(event)
        self._push("events", {"type": "event", "target_id": self.target_id, "event": event})
        return event

    def emit_log(self, message: str = "hello", child_id: str = "worker", *,
                 severity: str = "info", fields: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """Journal one LogRecord (a line of the child's stdout, with extra ``fields``) and
        push it; returns it."""
        now = self.clock.seconds()
        sequence, self._next_log = self._next_log, self._next_log + 1
        log = {"target_id": self.target_id, "sequence": sequence, "correlation_id": None,
               "severity": severity, "message": message,
               "fields": {"stream": "stdout", "child_path": f"/root/{child_id}",
                          **(fields or {})},
               "occurred_at": rfc3339(now), "occurred_at_unix_nanos": unix_nanos(now)}
        self.logs.append(log)
        self._push("logs", {"type": "log", "target_id": self.target_id, "log": log})
        return log

    def report_dropped(self, events: int, logs: int) -> None:
        """Push a ``dropped_count`` (as a target whose subscriber fell behind does)."""
        self._push("events", {"type": "dropped_count", "target_id": self.target_id,
                              "dropped_event_count": events, "dropped_log_count": logs})

    def freeze(self) -> None:
        """Stop answering: requests wait until :meth:`thaw`, connections stay open."""
        self.frozen = True

    def thaw(self) -> None:
        """Answer every request that waited, in order, and go on answering."""
        self.frozen = False
        for connection in list(self.connections):
            connection.answer_waiting()

    def stop(self) -> None:
        """Drop every connection and refuse new ones (the process died)."""
        self.listening = False
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abortConnection()

    def start(self) -> None:
        """Accept connections again."""
        self.listening = True

    def restart(self) -> None:
        """A new process: connections dropped, a new instance, journals and sequences anew."""
        self.stop()
        self.events.clear()
        self.logs.clear()
        self._next_event = self._next_log = 1
        self.instance_id = uuid.uuid4().hex
        self.generation = 1
        self.start()

    def methods(self) -> list[Any]:
        """The methods of :attr:`requests`, in order."""
        return [method for method, _ in self.requests]

    # the model
    def runtime(self, child_id: str) -> dict[str, Any]:
        """The RuntimeState row of one child."""
        lifecycle = self.children[child_id]
        running = lifecycle == "running"
        return {"child_path": f"/root/{child_id}", "lifecycle_state": lifecycle,
                "health": "healthy" if running else "unknown",
                "readiness": "ready" if running else "not_ready",
                "generation": self.generation, "attempt": 1, "restart_count": 0,
                "last_failure": None, "last_policy_decision": None, "shutdown_state": "idle",
                "resources": None}

    def state(self) -> dict[str, Any]:
        """The DashboardState of this target now."""
        def node(path: str, child_id: str | None, kind: str, summary: str) -> dict[str, Any]:
            return {"node_id": path, "child_id": child_id, "path": path,
                    "name": child_id or "root supervisor", "kind": kind, "tags": [],
                    "criticality": "critical" if child_id is None else "standard",
                    "state_summary": summary, "diagnostics": {}}

        root = node("/root", None, "root_supervisor", "running")
        nodes = [root] + [node(f"/root/{c}", c, "child_task", s)
                          for c, s in self.children.items()]
        now = self.clock.seconds()
        return {
            "target": {"target_id": self.target_id, "display_name": self.display_name,
                       "registration_state": "active", "connection_state": "connected",
                       "instance_id": self.instance_id},
            "topology": {"root": root, "nodes": nodes,
                         "edges": [{"edge_id": f"parent:/root->{n['path']}",
                                    "source_path": "/root", "target_path": n["path"],
                                    "kind": "parent_child", "order": index}
                                   for index, n in enumerate(nodes[1:])],
                         "declaration_order": [n["path"] for n in nodes]},
            "runtime_state": [self.runtime(c) for c in self.children],
            "recent_events": list(self.events)[-128:],
            "recent_logs": list(self.logs)[-128:],
            "dropped_event_count": 0, "dropped_log_count": 0,
            "config_version": "memory-1", "generated_at": rfc3339(now),
            "generated_at_unix_nanos": unix_nanos(now), "state_generation": self.generation,
            "target_resources": None,
        }

    def _push(self, kind: str, push: dict[str, Any]) -> None:
        for connection in list(self.connections):
            if kind in connection.subscribed:
                connection.send(push)

    def handle(self, connection: "_TargetConnection", method: Any, params: Any
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One §1 request: its result and the pushes that follow the response."""
        tid = self.target_id
        if method == "hello":
            return {"type": "hello", "protocol_version": PROTOCOL_VERSION, "target_id": tid,
                    "registration": self.registration()}, []
        if not isinstance(method, str) or not (
                method in ("state", "events.subscribe", "logs.tail")
                or method.startswith("command.")):
            raise WireError("unsupported_method", "protocol_parse",
                            f"unsupported method {method!r}", tid)
        if not isinstance(params, dict) or params.get("target_id") != tid:
            stage = "command_validate" if method.startswith("command.") else "state"
            raise WireError("validation_failed", stage, "params.target_id is not this target",
                            tid)
        if method == "state":
            return {"type": "state", "target_id": tid, "state": self.state()}, []
        if method.startswith("command."):
            return self._command(method, params), []
        if params.get("session_established") is not True:
            raise WireError("session_required", "subscription",
                            "subscriptions need session_established: true", tid)
        since = params.get("since_sequence")
        since = since if isinstance(since, int) and not isinstance(since, bool) else 0
        if method == "events.subscribe":
            connection.subscribed.add("events")
            replay = [{"type": "event", "target_id": tid, "event": e}
                      for e in self.events if e["sequence"] > since]
            return {"type": "subscription", "target_id": tid, "subscription": "events"}, replay
        connection.subscribed.add("logs")
        lines = params.get("lines", 100)
        lines = lines if isinstance(lines, int) and lines > 0 else 0
        held = [r for r in self.logs if r["sequence"] > since][-lines:] if lines else []
        replay = [{"type": "log", "target_id": tid, "log": r} for r in held]
        return {"type": "subscription", "target_id": tid, "subscription": "logs"}, replay

    def _command(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        tid = self.target_id
        command = params.get("command")
        if method != f"command.{command}" or command not in COMMANDS:
            raise WireError("invalid_command_params", "command_validate",
                            f"method {method} does not carry command {command!r}", tid)
        target = params.get("target") if isinstance(params.get("target"), dict) else {}
        path = target.get("child_path") or ""
        child_id = path.rsplit("/", 1)[-1] if path.startswith("/root/") else ""
        result = {"command_id": params.get("command_id"),
                  "correlation_id": params.get("correlation_id"), "target_id": tid,
                  "requested_by": params.get("requested_by"),
                  "completed_at": rfc3339(self.clock.seconds())}
        correlation = str(params.get("command_id"))

        def failed(code: str, message: str) -> dict[str, Any]:
            result.update(accepted=False, status="failed", state_delta=None,
                          error={"code": code, "stage": "command_execute", "target_id": tid,
                                 "message": message, "retryable": False})
            return {"type": "command_result", "target_id": tid, "result": result}

        if command == "shutdown_tree":
            for name in self.children:
                self.children[name] = "stopped"
            event_type: str | None = "tree_stopped"
            changed = list(self.children)
        elif command == "add_child":
            manifest = target.get("child_manifest")
            name = manifest.get("name") if isinstance(manifest, dict) else None
            if not isinstance(name, str) or not name:
                return failed("invalid_manifest", "the manifest needs a name")
            if name in self.children:
                return failed("child_exists", f"a child named {name} exists")
            self.children[name] = "running"
            child_id, event_type, changed = name, "child_added", [name]
        elif child_id not in self.children:
            return failed("unknown_child", f"no child at {path or 'null'}")
        elif command == "remove_child":
            del self.children[child_id]
            event_type, changed = "child_removed", []
        elif command == "signal_child":
            event_type, changed = None, [child_id]  # a signal changes no state
        else:
            self.children[child_id], event_type = _COMMAND_OUTCOMES[command]
            changed = [child_id]
        self.generation += 1
        delta: dict[str, Any] = {"state_generation": self.generation,
                                 "runtime_state": [self.runtime(c) for c in changed]}
        if command in ("add_child", "remove_child"):
            delta["topology"] = self.state()["topology"]
            delta["runtime_state"] = [self.runtime(c) for c in self.children]
        if event_type is not None:
            self.emit_event(event_type, child_id or "root", correlation_id=correlation)
        self._push("events", {"type": "state_delta", "target_id": tid, "delta": delta})
        result.update(accepted=True, status="completed", error=None, state_delta=delta)
        return {"type": "command_result", "target_id": tid, "result": result}


class _TargetConnection(NDJSONReceiver):
    """The target's end of one connection: answers requests in order, pushes when subscribed."""

    def __init__(self, target: MemoryTarget) -> None:
        super().__init__()
        self.target = target
        self.subscribed: set[str] = set()
        # requests a frozen target has not read yet (bounded like a socket's buffer)
        self._waiting: collections.deque[bytes] = collections.deque(maxlen=1024)

    def connectionMade(self) -> None:
        self.target.connections.append(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self in self.target.connections:
            self.target.connections.remove(self)

    def send(self, obj: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(encode(obj))

    def lineReceived(self, line: bytes) -> None:
        if self.target.frozen or self._waiting:
            self._waiting.append(line)
            return
        self._answer(line)

    def answer_waiting(self) -> None:
        while self._waiting and not self.target.frozen:
            self._answer(self._waiting.popleft())

    def _answer(self, line: bytes) -> None:
        try:
            request = decode(line)
        except WireError as e:
            self.send({"request_id": "invalid-request", "ok": False, "error": e.to_json()})
            return
        if not isinstance(request, dict) or not isinstance(request.get("request_id"), str):
            self.send({"request_id": "invalid-request", "ok": False, "error": WireError(
                "invalid_request", "protocol_parse", "a request needs a string request_id",
                self.target.target_id).to_json()})
            return
        method, params = request.get("method"), request.get("params")
        self.target.requests.append((method, params))
        try:
            result, pushes = self.target.handle(self, method, params)
        except WireError as e:
            self.send({"request_id": request["request_id"], "ok": False, "error": e.to_json()})
            return
        self.send({"request_id": request["request_id"], "ok": True, "result": result})
        for push in pushes:
            self.send(push)


@implementer(IStreamClientEndpoint)
class _MemoryEndpoint:
    """Connects a client protocol to a :class:`MemoryTarget` on the next reactor turn."""

    def __init__(self, target: MemoryTarget) -> None:
        self._target = target

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        target = self._target
        d: defer.Deferred[IProtocol] = defer.Deferred(lambda _: call.cancel())

        def made() -> None:
            if not target.listening:
                d.errback(ConnectionRefusedError(f"nobody listens at {target.ipc_path}"))
                return
            address = UNIXAddress(target.ipc_path)
            client = factory.buildProtocol(address)
            if client is None:
                d.errback(ConnectionRefusedError("the factory refused the connection"))
                return
            _MemoryPipe(target.clock, client, target.protocol(), address)
            d.callback(client)

        call = target.clock.callLater(0, made)
        return d


@implementer(ITransport)
class _MemoryTransport:
    """One end of a :class:`_MemoryPipe`."""

    def __init__(self, pipe: "_MemoryPipe", address: IAddress) -> None:
        self._pipe = pipe
        self._address = address
        self.disconnecting = False
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self._pipe.send(self, data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._pipe.close(self, abort=False)

    def abortConnection(self) -> None:
        self._pipe.close(self, abort=True)

    def getPeer(self) -> IAddress:
        return self._address

    def getHost(self) -> IAddress:
        return self._address

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class _MemoryPipe:
    """Two protocols joined in memory: what one writes the other receives a turn later;
    closing delivers what was written first (abort does not), then both ends are lost."""

    def __init__(self, clock: IReactorTime, client: IProtocol, server: IProtocol,
                 address: IAddress) -> None:
        self._clock = clock
        self._ends = [(_MemoryTransport(self, address), client),
                      (_MemoryTransport(self, address), server)]
        self._pending: dict[int, bytearray] = {0: bytearray(), 1: bytearray()}
        self._lost: Failure | None = None
        self._call: Any = None
        for transport, protocol in self._ends:
            protocol.makeConnection(transport)

    def _side(self, transport: _MemoryTransport) -> int:
        return 0 if self._ends[0][0] is transport else 1

    def send(self, transport: _MemoryTransport, data: bytes) -> None:
        if transport.disconnecting or self._lost is not None:
            return
        self._pending[self._side(transport)] += data
        self._schedule()

    def close(self, transport: _MemoryTransport, abort: bool) -> None:
        transport.disconnecting = True
        if abort:
            self._pending[0].clear()
            self._pending[1].clear()
            self._lost = Failure(ConnectionAborted())
        elif self._lost is None:
            self._lost = Failure(ConnectionDone())
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self._clock.callLater(0, self._run)

    def _run(self) -> None:
        self._call = None
        if not self._ends:
            return
        for side in (0, 1):
            data = bytes(self._pending[side])
            self._pending[side].clear()
            peer_transport, peer = self._ends[1 - side]
            if data and not peer_transport.disconnecting:
                peer.dataReceived(data)
        if any(self._pending.values()):
            self._schedule()
        elif self._lost is not None and self._ends:
            ends, self._ends = self._ends, []
            for transport, protocol in ends:
                transport.disconnecting = True
                protocol.connectionLost(self._lost)
