"""What every level of one tree shares: time, the journals, correlation ids, the state generation.

:class:`Tree` knows nothing about children: whoever changes the state model hands it a
function that builds the delta (rows, topology), built only when somebody listens.
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any, Callable

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import ILogObserver, LogLevel, Logger, formatEvent, globalLogPublisher
from zope.interface import provider

from supervisor.tree.descendants import tree_mark
from supervisor.tree.journal import (
    EventRecord,
    LogRecord,
    LogRing,
    RecordSink,
    Ring,
    encode_log_lines,
    encode_record,
)
from supervisor.tree.lifecycle import ShutdownPhase
from supervisor.tree.spec import SupervisorSpec
from supervisor.wire.ndjson import encodable, has_lone_surrogate
from supervisor.wire.vocabulary import event_severity

_LEVELS = {
    LogLevel.debug: "debug",
    LogLevel.info: "info",
    LogLevel.warn: "warning",
    LogLevel.error: "error",
    LogLevel.critical: "error",
}

#: Marks log events that were already put in a tree's log ring by a child logger.
RECORDED_KEY = "supervisor_log_recorded"


def severity_of(level: LogLevel | None) -> str:
    """The log record severity of a twisted.logger level."""
    return _LEVELS.get(level, "info") if level is not None else "info"


def config_version(spec: SupervisorSpec, reloads: int = 0) -> str:
    """A short, human-readable digest of the settings that shape the tree's behaviour
    (with the number of config reloads applied, once there was one)."""
    return (
        f"supervisor-{spec.strategy.value}"
        f"-policy-{spec.policy.child_restart_limit}-{spec.policy.supervisor_failure_limit}"
        f"-shutdown-{spec.shutdown.graceful_timeout_ms}"
        f"-observe-{spec.observability.event_journal_capacity}"
    ) + (f"-reload-{reloads}" if reloads else "")


def _none(*args: Any) -> None:
    return None


class OutputGate:
    """Every running process child's output pipes, paused together while the history's
    writer is behind (see :mod:`supervisor.history.store`), so children wait rather than
    lines being dropped."""

    def __init__(self) -> None:
        self.paused = False
        self._children: set[Any] = set()

    def register(self, child: Any) -> None:
        """``child`` has ``pauseReading`` / ``resumeReading`` (a started process child)."""
        self._children.add(child)
        if self.paused:
            child.pauseReading()

    def unregister(self, child: Any) -> None:
        self._children.discard(child)

    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        for child in list(self._children):
            child.pauseReading() if paused else child.resumeReading()


class Tree:
    """The context of one tree: clock and reactor, journals, ids, status and state publication."""

    def __init__(
        self,
        spec: SupervisorSpec,
        clock: IReactorTime,
        reactor: Any,
        target_id: str,
        rng: random.Random,
    ) -> None:
        self.clock = clock
        self.reactor = reactor
        self.target_id = encodable(target_id)
        #: this process's identity, inherited by every process child (see descendants)
        self.process_mark = tree_mark()
        #: new for every tree, i.e. every target process start: sequences restart with it
        self.instance_id = f"i-{uuid.uuid4().hex}"
        self.rng = rng
        #: the root supervisor's display name (the topology's root node)
        self.name = spec.name
        self.observability = spec.observability
        self.config_version = config_version(spec)
        #: config reloads applied so far
        self.reloads = 0
        self.events: Ring[EventRecord] = Ring(spec.observability.event_journal_capacity)
        self.logs = LogRing(spec.observability.log_journal_capacity)
        #: where records go besides the rings (the on-disk history), when there is one
        self.record_sink: RecordSink | None = None
        #: pauses the process children's output while the record sink catches up
        self.output_gate = OutputGate()
        self.state_generation = 0
        self.metrics: dict[str, int] = {}
        #: ``running`` | ``stopping`` | ``stopped``: the root node's state_summary
        self.status = "stopped"
        self.stop_reason: str | None = None
        #: set once the tree's shutdown began; nothing starts or restarts afterwards
        self.shutting_down = False
        #: how far the tree's shutdown got, and the correlation id its events share
        self.shutdown_phase = ShutdownPhase.IDLE
        self.shutdown_correlation = ""
        #: the published ``resources`` of a child path and of the target process (set by a
        #: resource monitor; none without one)
        self.resources_of: Callable[[str], dict[str, Any] | None] = _none
        self.own_resources: Callable[[], dict[str, Any] | None] = _none
        self._state_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._correlations = itertools.count(1)

    def now(self) -> float:
        return self.clock.seconds()

    def dropped_count(self, stream: str) -> int:
        """Records of ``stream`` (``"events"`` or ``"logs"``) no reader can get any more.

        With a history, what the rings evict is still on disk: only what the history could
        not keep counts. Without one, every record the ring evicted is gone.
        """
        if self.record_sink is not None:
            return self.record_sink.lost(stream)
        return (self.events if stream == "events" else self.logs).evicted

    def new_correlation(self) -> str:
        return f"incident-{next(self._correlations)}"

    def emit(
        self,
        event_type: str,
        path: str,
        child_id: str | None,
        correlation: str,
        payload: dict[str, Any],
    ) -> EventRecord:
        """Append one event to the journal (and count it when metrics are on).

        The record keeps ``payload`` itself (copied only when it holds lone surrogates, which
        become U+FFFD): the caller hands it over and does not change it afterwards."""
        if self.observability.metrics_enabled:
            self.metrics[event_type] = self.metrics.get(event_type, 0) + 1
        now = self.now()

        def build(sequence: int) -> EventRecord:
            record = EventRecord(self.target_id, sequence, correlation or self.new_correlation(),
                                 event_type, event_severity(event_type), path, child_id, now,
                                 self.config_version, payload)
            if has_lone_surrogate(record.json_text()):  # rare: the text finds them in one C pass
                record = attrs.evolve(record, payload=encodable(payload))
            return record

        record = self.events.append(build)
        if self.record_sink is not None:
            self.record_sink.write("events", encode_record(record, self.instance_id), 1)
        return record

    def log(
        self,
        severity: str,
        message: str,
        fields: dict[str, Any],
        correlation: str | None = None,
    ) -> LogRecord:
        """Append one record to the log ring (and the history); its text is made encodable
        here, on entry."""
        now = self.now()
        message = encodable(message)
        fields = encodable(fields)
        record = self.logs.append(
            lambda sequence: LogRecord(
                target_id=self.target_id,
                sequence=sequence,
                correlation_id=correlation,
                severity=severity,
                message=message,
                fields=fields,
                occurred_at=now,
            )
        )
        if self.record_sink is not None:
            self.record_sink.write("logs", encode_record(record, self.instance_id), 1)
        return record

    def log_lines(
        self,
        severity: str,
        messages: list[str] | str,
        plain: bytes | None,
        fields: dict[str, Any],
        correlation: str | None = None,
    ) -> None:
        """Append one record per line of a process child's output, all sharing ``fields``.

        ``plain`` is the messages' UTF-8 joined by newlines when they need no JSON escaping
        (see :func:`~supervisor.tree.journal.encode_log_lines`), else None; with ``plain``,
        ``messages`` may be the messages joined by newlines (one string, split only if read).
        One time stamps every line of the call (one pipe read).
        """
        count = messages.count("\n") + 1 if isinstance(messages, str) else len(messages)
        if not count:
            return
        now = self.now()
        first = self.logs.extend_lines(self.target_id, correlation, severity, messages, fields,
                                       now, count)
        if self.record_sink is not None:
            data = encode_log_lines(self.target_id, self.instance_id, correlation, severity,
                                    first, messages, plain, fields, now, count)
            self.record_sink.write("logs", data, count)

    def child_logger(self, path: str) -> Logger:
        """A logger whose events land in this tree's log ring and then in the global log."""

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            fields = {
                k: v
                for k, v in event.items()
                if not k.startswith("log_") and isinstance(v, (str, int, float, bool, type(None)))
            }
            fields["child_path"] = path
            self.log(severity_of(event.get("log_level")), formatEvent(event), fields)
            event[RECORDED_KEY] = True
            globalLogPublisher(event)

        return Logger(namespace=f"supervisor.child{path.replace('/', '.')}", observer=observe)

    # state publication

    def subscribe_state(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(delta)`` after every change; returns the unsubscribe function."""
        self._state_listeners.append(listener)
        return lambda: self._state_listeners.remove(listener) if listener in self._state_listeners else None

    def state_changed(self, delta: Callable[[], dict[str, Any]]) -> None:
        """Count one change of the state model and send listeners ``delta()`` (built only for them)."""
        self.state_generation += 1
        if self._state_listeners:
            published = {"state_generation": self.state_generation, **delta()}
            for listener in list(self._state_listeners):
                listener(published)
