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
``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import yaml
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from supervisor.config.target import parse_target_config
from supervisor.tree.children import ChildContext
from supervisor.tree.journal import EventRecord
from supervisor.tree.commands import CommandOutcome
from supervisor.tree.runtime import Supervisor
from supervisor.tree.spec import SupervisorSpec


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


class TreeHarness:
    """A :class:`Supervisor` on a fake clock with shortcuts for driving and inspecting it."""

    def __init__(
        self,
        spec: SupervisorSpec,
        *,
        seed: int = 0,
        target_id: str = "test-target",
        manifest_parser: Callable[[Any], Any] | None = None,
        reactor: Any = None,
    ) -> None:
        self.clock = Clock()
        self.supervisor = Supervisor(
            spec,
            clock=self.clock,
            reactor=reactor if reactor is not None else self.clock,
            target_id=target_id,
            rng=random.Random(seed),
            manifest_parser=manifest_parser,
        )

    @classmethod
    def from_yaml(cls, text: str, base_dir: str = ".", **kwargs: Any) -> "TreeHarness":
        """Build from the same YAML a target config file holds."""
        config = parse_target_config(yaml.safe_load(text), base_dir)
        kwargs.setdefault("manifest_parser", config.manifest_parser())
        kwargs.setdefault("target_id", config.ipc.target_id)
        return cls(config.spec, **kwargs)

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
