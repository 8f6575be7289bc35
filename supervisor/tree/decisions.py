"""What the supervisor decides, as pure functions returning a decision value.

Given how a child ended, its restart policy, the restart and failure counts in their
intensity windows, the backoff attempt and the strategy, :func:`decide_exit` says: do not
restart (and why), escalate (and why), or restart after a delay. :func:`restart_group` says
which siblings go with it, :func:`unmet_dependencies` whether a start has to wait. None of
them touches the tree; :mod:`supervisor.tree.supervision` carries the decisions out.
The texts here are the rows' ``last_policy_decision`` values.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable, Mapping, Protocol, TypeVar, Union

import attrs

from supervisor._backoff import backoff_delay
from supervisor.tree.children import Outcome
from supervisor.tree.lifecycle import RESTART_GROUP, Phase
from supervisor.tree.spec import Policy, RestartPolicy, Strategy


@attrs.frozen
class NoRestart:
    """The child stays down; ``note`` says why, ``report_failure`` asks for ``child_failed``."""

    note: str
    report_failure: bool


@attrs.frozen
class Escalate:
    """Too many restarts (``scope="child"``) or failures (``"supervisor"``): give up on the level.

    ``note`` is the child's decision, ``reason`` the escalation's. ``reset`` forgets the
    child's backoff and attempts (it had run stably); ``count_failure`` records the failure
    in the supervisor's window.
    """

    scope: str
    limit: int
    window_ms: int
    note: str
    reason: str
    reset: bool
    count_failure: bool


@attrs.frozen
class Restart:
    """Restart after ``delay`` seconds; ``backoff_attempt`` is the attempt count afterwards."""

    delay: float
    backoff_attempt: int
    reset: bool
    count_failure: bool

    @property
    def delay_ms(self) -> int:
        return round(self.delay * 1000)


ExitDecision = Union[NoRestart, Escalate, Restart]


def restart_wanted(restart_policy: RestartPolicy, normal: bool) -> bool:
    """``permanent`` always, ``transient`` after an abnormal exit, ``temporary`` never."""
    if restart_policy is RestartPolicy.PERMANENT:
        return True
    if restart_policy is RestartPolicy.TRANSIENT:
        return not normal
    return False


def ran_stably(started_at: float | None, now: float, stable_after_ms: int) -> bool:
    """Whether a generation that started at ``started_at`` ran long enough to forget past failures."""
    return started_at is not None and (now - started_at) * 1000 >= stable_after_ms


def decide_exit(
    outcome: Outcome,
    restart_policy: RestartPolicy,
    *,
    stopping: bool,
    stable: bool,
    child_path: str,
    child_policy: Policy,
    recent_restarts: int,
    supervisor_path: str,
    supervisor_policy: Policy,
    recent_failures: int,
    backoff_attempt: int,
    rand: Callable[[], float],
    failed_start: bool = False,
    failed_starts: int = 0,
    start_retries: int | None = None,
) -> ExitDecision:
    """What to do about a child that ended with ``outcome``.

    ``stopping``: its supervisor or the tree is stopping. ``stable``: it ran for
    ``stable_after_ms``. ``recent_restarts`` / ``recent_failures``: what the child's and the
    supervisor's windows hold now, before this exit. ``rand`` draws the jitter (only when a
    restart is decided and jitter applies). ``failed_start``: it ended within its
    ``startsecs``; after ``start_retries`` such restarts in a row (``failed_starts`` before
    this one) it is given up, as supervisord's FATAL.
    """
    failed = not outcome.normal
    if stopping:
        return NoRestart("not restarted (shutting down)", report_failure=False)
    if not restart_wanted(restart_policy, outcome.normal):
        return NoRestart(f"not restarted ({restart_policy.value})", report_failure=failed)
    if failed_start and start_retries is not None and failed_starts + 1 > start_retries:
        return NoRestart(
            f"given up after {failed_starts + 1} failed starts (startretries {start_retries})",
            report_failure=True,
        )
    limit, window = child_policy.child_restart_limit, child_policy.child_restart_window_ms
    if recent_restarts + 1 > limit:
        return Escalate(
            "child", limit, window,
            note=f"restart intensity exceeded ({limit} in {window} ms): escalate",
            reason=f"{child_path} restarted more than {limit} times in {window} ms",
            reset=stable, count_failure=False,
        )
    if failed:
        limit = supervisor_policy.supervisor_failure_limit
        window = supervisor_policy.supervisor_failure_window_ms
        if recent_failures + 1 > limit:
            return Escalate(
                "supervisor", limit, window,
                note="supervisor failure limit exceeded: escalate",
                reason=f"{supervisor_path} saw more than {limit} failures in {window} ms",
                reset=stable, count_failure=True,
            )
    attempt = 0 if stable else backoff_attempt
    delay = backoff_delay(
        attempt,
        child_policy.initial_backoff_ms / 1000,
        child_policy.max_backoff_ms / 1000,
        child_policy.jitter_ratio,
        rand,
    )
    return Restart(delay, attempt + 1, reset=stable, count_failure=failed)


class _Sibling(Protocol):
    @property
    def phase(self) -> Phase: ...


S = TypeVar("S", bound=_Sibling)


def restart_group(strategy: Strategy, siblings: Iterable[S], failed: S) -> list[S]:
    """``failed`` plus the siblings its strategy restarts with it, in declaration order.

    ``one_for_all`` takes every sibling that is running, starting, stopping, waiting for its
    dependencies or already restarting; ``rest_for_one`` only those declared after
    ``failed``; ``one_for_one`` none (``siblings`` is not even read).
    """
    if strategy is Strategy.ONE_FOR_ONE:
        return [failed]
    ordered = list(siblings)
    if strategy is Strategy.REST_FOR_ONE:
        ordered = ordered[ordered.index(failed):]
    return [c for c in ordered if c is failed or c.phase in RESTART_GROUP]


def unmet_dependencies(dependencies: Collection[str], siblings: Mapping[str, _Sibling]) -> list[str]:
    """Names of the dependencies that are not running and ready (unknown names don't count)."""
    missing = []
    for name in dependencies:
        dep = siblings.get(name)
        if dep is not None and dep.phase is not Phase.RUNNING:
            missing.append(name)
    return missing


def waiting_note(missing: Iterable[str]) -> str:
    return "waiting for " + ", ".join(missing)


def restart_note(delay_ms: int, siblings: int, strategy: Strategy) -> str:
    note = f"restart after {delay_ms} ms (backoff)"
    if siblings:
        note += f" with {siblings} sibling(s) ({strategy.value})"
    return note


def group_note(failed_path: str, strategy: Strategy) -> str:
    """The decision of a sibling restarted because ``failed_path`` failed."""
    return f"restart with {failed_path} ({strategy.value})"
