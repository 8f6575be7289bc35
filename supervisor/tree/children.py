"""Runners: one object per started generation of a child, one class per child kind.

A runner starts its child, reports ``running`` once, and reports exactly one
:class:`Outcome` when the child ends, through the :class:`RunnerHooks` it was given.
Stopping has two steps: :meth:`request_stop` (polite) and :meth:`abort` (forceful).
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
from typing import Any, Callable, Protocol

import attrs
from twisted.application.service import IService
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from supervisor.tree.descendants import MARK_TREE, alive, of_child, reap
from supervisor.tree.journal import plain_text
from supervisor.tree.logfile import RotatingLogFile
from supervisor.tree.spawn import ChildProcess, Identity, spawn_child
from supervisor.tree.spec import ChildSpec
from supervisor.wire.ndjson import encodable


@attrs.frozen
class Outcome:
    """How a child ended: ``normal`` exits are not failures; ``failed_start`` says it ended
    within its ``startsecs`` (it never counted as running)."""

    normal: bool
    #: exception text or a reason given by user code: made encodable on entry
    description: str = attrs.field(converter=encodable)
    failed_start: bool = False


@attrs.define
class RunnerHooks:
    """What a runner may tell its supervisor."""

    running: Callable[[], None]
    exited: Callable[[Outcome], None]
    heartbeat: Callable[[], None]
    ready: Callable[[], None]
    log: Callable[[str, str, dict[str, Any]], None]  # severity, message, fields
    #: severity, messages, their bytes joined by newlines when plain (or None), shared fields
    log_lines: Callable[[str, list[str] | str, bytes | None, dict[str, Any]], None]


class Runner(Protocol):
    def start(self) -> None: ...
    def request_stop(self) -> None: ...
    def abort(self) -> None: ...
    def fail(self, reason: str) -> None: ...


class ChildContext:
    """Handed to task and service factories: liveness, readiness, cancellation, logging."""

    def __init__(self, path: str, hooks: RunnerHooks, logger: Logger, clock: IReactorTime) -> None:
        self.path = path
        self.logger = logger
        #: the supervisor's clock: use it for timers so tests can drive them with a fake clock
        self.clock = clock
        self._hooks = hooks
        self.stopping = False
        #: fires (with None) when the supervisor asks the child to stop gracefully; cancelled
        #: when the child is aborted or failed, which makes it ``stopping`` too, so a loop on
        #: ``while not ctx.stopping`` that awaits it ends instead of spinning on a fired Deferred
        self.cancellation: defer.Deferred[None] = defer.Deferred(self._cancelled)
        self._fail_hook: Callable[[str], None] | None = None

    def heartbeat(self) -> None:
        """Tell the supervisor this child is alive; silence for ``stale_after_ms`` is stale."""
        self._hooks.heartbeat()

    def mark_ready(self) -> None:
        """Tell the supervisor this child can serve; dependents wait for it when asked to."""
        self._hooks.ready()

    def fail(self, reason: str) -> None:
        """Report that the child has failed even though it has not returned (services)."""
        if self._fail_hook is not None:
            self._fail_hook(reason)

    def _cancelled(self, _: "defer.Deferred[None]") -> None:
        self.stopping = True

    def _request_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.cancellation.callback(None)


#: Exceptions that steer the process itself (Ctrl-C, a generator being closed): they pass
#: through a user's factory untouched. Anything else a factory raises, ``SystemExit``
#: included, fails that child only.
PROCESS_CONTROL: tuple[type[BaseException], ...] = (KeyboardInterrupt, GeneratorExit)


def describe_failure(failure: Failure) -> str:
    value = failure.value
    text = str(value)
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


class _Once:
    """Deliver the exit outcome exactly once."""

    def __init__(self, hooks: RunnerHooks) -> None:
        self._hooks = hooks
        self.done = False

    def __call__(self, outcome: Outcome) -> None:
        if not self.done:
            self.done = True
            self._hooks.exited(outcome)


class TaskRunner:
    """An in-process task: ``factory(ctx)`` returning a Deferred, a coroutine or a value."""

    def __init__(self, spec: ChildSpec, ctx: ChildContext, hooks: RunnerHooks) -> None:
        self._spec = spec
        self._ctx = ctx
        self._hooks = hooks
        self._exit = _Once(hooks)
        self._deferred: defer.Deferred[Any] | None = None
        self._stop_requested = False
        self._injected: str | None = None
        ctx._fail_hook = self.fail

    def start(self) -> None:
        assert self._spec.factory is not None
        try:
            result = self._spec.factory(self._ctx)
            if inspect.iscoroutine(result):
                d = defer.Deferred.fromCoroutine(result)
            else:
                d = defer.maybeDeferred(lambda: result)
        except PROCESS_CONTROL:
            raise
        except BaseException:
            self._exit(Outcome(False, describe_failure(Failure())))
            return
        self._deferred = d
        self._hooks.running()
        d.addCallbacks(self._returned, self._raised)

    def _returned(self, _: object) -> None:
        if self._injected is not None:
            self._exit(Outcome(False, self._injected))
        else:
            self._exit(Outcome(True, "returned"))

    def _raised(self, failure: Failure) -> None:
        if self._injected is not None:
            self._exit(Outcome(False, self._injected))
        elif failure.check(defer.CancelledError) and self._stop_requested:
            self._exit(Outcome(True, "cancelled"))
        else:
            self._exit(Outcome(False, describe_failure(failure)))

    def request_stop(self) -> None:
        self._stop_requested = True
        self._ctx._request_stop()

    def abort(self) -> None:
        self._stop_requested = True
        if self._deferred is not None and not self._deferred.called:
            self._deferred.cancel()

    def fail(self, reason: str) -> None:
        if self._exit.done:
            return
        self._injected = reason
        if self._deferred is not None and not self._deferred.called:
            self._deferred.cancel()
        else:
            self._exit(Outcome(False, reason))


class ServiceRunner:
    """An ``IService`` built by ``factory(ctx)``; stopping it is ``stopService``."""

    def __init__(self, spec: ChildSpec, ctx: ChildContext, hooks: RunnerHooks) -> None:
        self._spec = spec
        self._ctx = ctx
        self._hooks = hooks
        self._exit = _Once(hooks)
        self._service: IService | None = None
        self._stopping: defer.Deferred[Any] | None = None
        ctx._fail_hook = self.fail

    def start(self) -> None:
        assert self._spec.factory is not None
        try:
            self._service = IService(self._spec.factory(self._ctx))
        except PROCESS_CONTROL:
            raise
        except BaseException:
            self._exit(Outcome(False, describe_failure(Failure())))
            return
        d = defer.maybeDeferred(self._service.startService)
        d.addCallbacks(lambda _: self._started(), self._start_failed)

    def _started(self) -> None:
        if not self._exit.done:
            self._hooks.running()

    def _start_failed(self, failure: Failure) -> None:
        self._exit(Outcome(False, "startService failed: " + describe_failure(failure)))

    def request_stop(self) -> None:
        self._ctx._request_stop()
        self._stop_service(Outcome(True, "stopped"))

    def _stop_service(self, outcome: Outcome) -> None:
        if self._stopping is not None or self._service is None:
            self._exit(outcome)
            return
        d = defer.maybeDeferred(self._service.stopService)
        self._stopping = d

        def stopped(result: object) -> None:
            if isinstance(result, Failure) and not result.check(defer.CancelledError):
                self._exit(Outcome(False, "stopService failed: " + describe_failure(result)))
            else:
                self._exit(outcome)

        d.addBoth(stopped)

    def abort(self) -> None:
        self._exit(Outcome(True, "abandoned after stop timeout"))
        if self._stopping is not None and not self._stopping.called:
            self._stopping.cancel()

    def fail(self, reason: str) -> None:
        if not self._exit.done:
            self._stop_service(Outcome(False, reason))


def signal_number(name: str) -> int:
    """``"SIGTERM"`` or ``"TERM"`` → its number; unknown names raise ValueError."""
    upper = name.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    try:
        return int(getattr(signal, upper))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r}") from None


def _has_long_line(body: bytes, limit: int) -> bool:
    """Whether a line of ``body`` (lines separated by newlines) is longer than ``limit``.

    One ``rfind`` per ``limit`` bytes rather than one object per line: every window of
    ``limit + 1`` bytes must hold a newline."""
    start = 0
    size = len(body)
    while size - start > limit:
        newline = body.rfind(b"\n", start, start + limit + 1)
        if newline < 0:
            return True
        start = newline + 1
    return False


class _LineSplitter:
    """Bounded line assembly for one output stream of a process child.

    Lines longer than ``limit`` bytes are cut into pieces of ``limit`` bytes, each but the
    last emitted as truncated; at most ``limit`` bytes of an unfinished line are buffered.
    Every read is split at once: ``emit(messages, plain)`` gets all its whole lines
    (``plain``: their bytes joined by newlines, when they need no JSON escaping, and then
    ``messages`` is their text joined by newlines too; else None and a list of messages),
    ``cut(message)`` each truncated piece, in the order they were written.
    """

    def __init__(
        self,
        emit: Callable[[list[str] | str, bytes | None], None],
        cut: Callable[[str], None],
        limit: int,
    ) -> None:
        self._emit = emit
        self._cut_piece = cut
        self._limit = limit
        self._pending = b""

    def feed(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        end = data.rfind(b"\n")
        if end >= 0:
            self._lines(data[:end])
            data = data[end + 1 :]
        limit = self._limit
        while len(data) > limit:
            self._cut_piece(self._text(data[:limit]))
            data = data[limit:]
        self._pending = data

    def _lines(self, body: bytes) -> None:
        """Emit the lines of ``body`` (no final newline): C-level splits in the common case."""
        limit = self._limit
        if b"\r" in body or _has_long_line(body, limit):
            self._one_by_one(body.split(b"\n"))
            return
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            self._emit([line.decode("utf-8", "replace") for line in body.split(b"\n")], None)
            return
        if plain_text(body):
            self._emit(text, body)  # the lines as one string: split only if somebody reads them
        else:
            self._emit(text.split("\n"), None)

    def _one_by_one(self, lines: list[bytes]) -> None:
        batch: list[str] = []
        limit = self._limit
        for line in lines:
            while len(line) > limit:
                if batch:
                    self._emit(batch, None)
                    batch = []
                self._cut_piece(self._text(line[:limit]))
                line = line[limit:]
            batch.append(self._text(line))
        if batch:
            self._emit(batch, None)

    def flush(self) -> None:
        if self._pending:
            self._one_by_one([self._pending])
            self._pending = b""

    @staticmethod
    def _text(raw: bytes) -> str:
        return raw.rstrip(b"\r").decode("utf-8", "replace")


class ProcessRunner(ProcessProtocol):
    """An OS process leading its own session, so that stopping it stops its whole group.

    It is started by :func:`supervisor.tree.spawn.spawn_child` (no fork, no extra exec).

    Its stdout and stderr lines become log records of at most ``max_line_bytes`` bytes, and
    with ``spec.log_file`` also lines of a plain text file (:mod:`supervisor.tree.logfile`).

    Descendants that left the group (``setsid``) are found by the ``marks`` they inherit
    (:mod:`supervisor.tree.descendants`): they get the stop signal with the group and are
    killed with it once the leader is gone (unless ``kill_as_group`` is off). After a stop,
    :attr:`processes` says which pids stopped on the polite signal, which had to be killed and
    which survived even that (still alive ``settle_seconds`` after SIGKILL); the exit is
    reported once that is known.
    """

    def __init__(
        self, spec: ChildSpec, path: str, hooks: RunnerHooks, reactor: Any, max_line_bytes: int,
        marks: dict[str, str] | None = None, settle_seconds: float = 1.0,
        clock: IReactorTime | None = None, gate: Any = None,
    ) -> None:
        self._spec = spec
        self._path = path
        self._hooks = hooks
        self._reactor = reactor
        #: the tree's OutputGate: reading pauses while the history catches up
        self._gate = gate
        self._clock: IReactorTime = clock if clock is not None else reactor
        #: fires after ``startsecs``: only then does the child count as running
        self._start_window: Any = None
        self._spawned_at: float | None = None
        self._exit = _Once(hooks)
        self._stop_requested = False
        self._injected: str | None = None
        self._pgid: int | None = None
        self._log_file = None if spec.log_file is None else RotatingLogFile(
            spec.log_file.path, spec.log_file.max_bytes, spec.log_file.backups,
            lambda problem: hooks.log("error", problem, {"child_path": path}))
        self._streams = {
            fd: self._splitter(stream, severity, max_line_bytes)
            for fd, stream, severity in ((1, "stdout", "info"), (2, "stderr", "warning"))
        }
        self.pid: int | None = None
        self._marks = marks or {}
        self._settle_seconds = settle_seconds
        self._child: Any = None
        self._aborted = False
        self._polite: set[int] = set()
        self._killed: list[int] = []
        self._settled = True
        self._ended: Failure | None = None
        #: after a stop: ``{"stopped": [pid], "killed": [pid], "survived": [pid]}``
        self.processes: dict[str, list[int]] | None = None

    def start(self) -> None:
        command = list(self._spec.command)
        env = dict(os.environ)
        env.update(self._spec.environment or {})
        env.update(self._marks)
        name = command[0]
        # a bare name is looked up on the child's PATH; a path (``./run``) is taken as it is,
        # relative to the child's cwd when it has one
        executable = name if "/" in name else shutil.which(name, path=env.get("PATH"))
        if executable is None:
            self._exit(Outcome(False, f"executable not found: {name}"))
            return
        try:
            identity = Identity(self._spec.user, self._spec.group, self._spec.umask)
            child = spawn_child(self._reactor, self, executable, command, env,
                                cwd=self._spec.cwd, identity=identity,
                                parent_death_signal=None if self._spec.parent_death_signal is None
                                else signal_number(self._spec.parent_death_signal))
        except Exception:
            self._exit(Outcome(False, "spawn failed: " + describe_failure(Failure())))
            return
        self.pid = child.pid
        self._child = child
        if self._gate is not None:
            self._gate.register(child)
        self._pgid = child.pid  # the child leads its own session and process group
        if self._spec.startsecs > 0:
            self._spawned_at = self._clock.seconds()
            self._start_window = self._clock.callLater(self._spec.startsecs, self._started)
        else:
            self._hooks.running()

    def _started(self) -> None:
        """The child lived through ``startsecs``: it is running."""
        self._start_window = None
        self._hooks.running()

    def _descendants(self, leader_alive: bool = True) -> list[int]:
        """Live processes carrying this child's marks (its group and any that escaped it).

        Once the leader has exited there is no subtree of it to walk: the kernel gave its
        children to the subreaper (or init) before the exit was reported."""
        if MARK_TREE not in self._marks:
            return []
        return of_child(self.pid if leader_alive else None, self._marks[MARK_TREE], self._path)

    def _escaped(self, descendants: list[int]) -> list[int]:
        """Those of ``descendants`` outside the child's process group."""
        found = []
        for pid in descendants:
            try:
                if os.getpgid(pid) != self._pgid:
                    found.append(pid)
            except ProcessLookupError:
                pass
        return found

    @staticmethod
    def _kill(pids: list[int], signum: int) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _splitter(self, stream: str, severity: str, limit: int) -> _LineSplitter:
        """The splitter of one stream; its records share one ``fields`` mapping (never mutated)."""
        fields: dict[str, Any] = {"stream": stream, "child_path": self._path}
        cut_fields: dict[str, Any] = {**fields, "truncated": True}
        hooks = self._hooks
        file = self._log_file
        if file is None:
            return _LineSplitter(
                lambda messages, plain: hooks.log_lines(severity, messages, plain, fields),
                lambda message: hooks.log_lines(severity, [message], None, cut_fields),
                limit,
            )

        def lines(messages: list[str] | str, plain: bytes | None) -> None:
            hooks.log_lines(severity, messages, plain, fields)
            if plain is not None:
                file.write_lines(plain + b"\n", plain.count(b"\n") + 1)
            else:
                file.write_lines("\n".join(messages).encode("utf-8", "replace") + b"\n",
                                 len(messages))

        def piece(message: str) -> None:
            hooks.log_lines(severity, [message], None, cut_fields)
            file.write_lines(message.encode("utf-8", "replace") + b"\n", 1)

        return _LineSplitter(lines, piece, limit)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        splitter = self._streams.get(childFD)
        if splitter is not None:
            splitter.feed(data)

    def processExited(self, reason: Failure) -> None:
        if not self._spec.kill_as_group:
            # Members left running on purpose may hold the output pipes: the child ended
            # with its leader; what the pipes hold is read, what members write later is not.
            if isinstance(self.transport, ChildProcess):
                self.transport.drainAndClose()
            return
        # The leader is gone; anything left in its group, or escaped from it, would be an orphan.
        remaining = self._descendants(leader_alive=False)
        self._signal_group(signal.SIGKILL)
        self._kill(remaining, signal.SIGKILL)
        killed = set(remaining)
        if self._aborted and self.pid is not None:
            killed.add(self.pid)
        self._killed = sorted(killed)
        stopped = sorted((self._polite | {self.pid}) - killed) if self._stop_requested else []
        self.processes = {"stopped": stopped, "killed": self._killed, "survived": []}
        if remaining:
            self._settled = False
            self._settle(self._reactor.seconds() + self._settle_seconds)

    def _settle(self, deadline: float) -> None:
        """Wait (polling) until the killed descendants are gone, or the deadline passes."""
        left = [pid for pid in self._killed if pid != self.pid and alive(pid)]
        if left and self._reactor.seconds() < deadline:
            self._reactor.callLater(0.01, self._settle, deadline)
            return
        reap(self._killed)  # orphans that came back to the target (as its subreaper)
        assert self.processes is not None
        self.processes["survived"] = left
        self._settled = True
        if self._child is not None:
            self._child.loseConnection()  # a survivor may hold the pipes: never leak them
        self._deliver()

    def processEnded(self, reason: Failure) -> None:
        for splitter in self._streams.values():
            splitter.flush()
        if self._log_file is not None:
            self._log_file.close()
        self._ended = reason
        self._deliver()

    def _deliver(self) -> None:
        if self._ended is None or not self._settled:
            return
        self._pgid = None
        if self._gate is not None and self._child is not None:
            self._gate.unregister(self._child)
        self._child = None
        outcome = self._outcome(self._ended)
        if self._start_window is not None:
            self._close_start_window()
            if not self._stop_requested and self._injected is None:
                lived = self._clock.seconds() - (self._spawned_at or 0.0)
                outcome = Outcome(
                    False,
                    f"failed to start: {outcome.description} after {lived:.3g} s "
                    f"(startsecs {self._spec.startsecs:g})",
                    failed_start=True,
                )
        self._exit(outcome)

    def _outcome(self, reason: Failure) -> Outcome:
        value = reason.value
        code = getattr(value, "exitCode", None)
        sig = getattr(value, "signal", None)
        if sig is not None:
            text = f"killed by signal {sig} ({_signal_name(sig)})"
        elif code is None and reason.check(error.ProcessTerminated):
            text = "exit status unknown"  # reaped by someone else
        else:
            code = code if code is not None else 0
            text = f"exit status {code}"
        if self._injected is not None:
            return Outcome(False, self._injected)
        if self._stop_requested:
            return Outcome(True, text)
        return Outcome(sig is None and code is not None and code in self._spec.exitcodes, text)

    def _signal(self, signum: int, group: bool) -> bool:
        """Send ``signum`` to the child's process group, or to the leader alone."""
        if self._pgid is None:
            return False
        try:
            if group:
                os.killpg(self._pgid, signum)
            else:
                os.kill(self._pgid, signum)
            return True
        except ProcessLookupError:
            return False

    def _signal_group(self, signum: int) -> bool:
        return self._signal(signum, self._spec.kill_as_group)

    def send_signal(self, signum: int) -> bool:
        """An operator's signal (``signal_child``): to the group when ``stop_as_group``."""
        return self._signal(signum, self._spec.stop_as_group)

    def _close_start_window(self) -> None:
        if self._start_window is not None and self._start_window.active():
            self._start_window.cancel()
        self._start_window = None

    def request_stop(self) -> None:
        self._stop_requested = True
        self._close_start_window()
        signum = signal_number(self._spec.stop_signal)
        descendants = self._descendants() if self._spec.stop_as_group else []
        if self.pid is not None and self._pgid is not None:
            self._polite.add(self.pid)
            self._polite.update(descendants)
        self._signal(signum, self._spec.stop_as_group)
        self._kill(self._escaped(descendants), signum)

    def abort(self) -> None:
        self._stop_requested = True
        self._close_start_window()
        if self._pgid is not None:
            self._aborted = True
        self._signal_group(signal.SIGKILL)

    def release(self) -> None:
        """The stop gave up on this generation: stop reading its pipes (close them)."""
        if self._child is not None:
            self._child.loseConnection()

    def fail(self, reason: str) -> None:
        if self._exit.done:
            return
        self._injected = reason
        self._close_start_window()
        self._signal_group(signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"
