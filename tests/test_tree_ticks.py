"""Periodic calls on a common grid: loops started apart share their wake-ups."""

from __future__ import annotations

from twisted.internet.task import Clock

from supervisor.tree.ticks import GridLoop


def test_loops_started_apart_fire_at_the_same_moments():
    clock = Clock()
    fired: list[tuple[str, float]] = []
    clock.advance(0.3)
    first = GridLoop(lambda: fired.append(("first", clock.seconds())), clock)
    first.start(2.0)
    clock.advance(0.9)
    second = GridLoop(lambda: fired.append(("second", clock.seconds())), clock)
    second.start(2.0)
    beat = GridLoop(lambda: fired.append(("beat", clock.seconds())), clock)
    beat.start(1.0)
    for step in (0.8, 1.2, 0.8):  # to 2.0, to 3.2 (late for 3.0), to 4.0
        clock.advance(step)
    times = {name: [t for n, t in fired if n == name] for name in ("first", "second", "beat")}
    assert times["first"] == times["second"] == [2.0, 4.0]
    assert times["beat"] == [2.0, 3.2, 4.0], "a late call does not move the grid"
    assert len(clock.getDelayedCalls()) == 3


def test_stopping_before_the_first_call_or_after_cancels_everything():
    clock = Clock()
    calls: list[float] = []
    loop = GridLoop(lambda: calls.append(clock.seconds()), clock)
    loop.start(1.0)
    assert loop.running
    loop.stop()
    assert not loop.running and clock.getDelayedCalls() == []
    loop.start(1.0)
    clock.advance(1.0)
    loop.stop()
    clock.advance(5.0)
    assert calls == [1.0] and clock.getDelayedCalls() == [] and not loop.running


def test_a_call_that_raises_ends_the_loop_and_is_reported():
    clock = Clock()
    failures = []

    def broken() -> None:
        raise ValueError("sampler broke")

    loop = GridLoop(broken, clock, failures.append)
    loop.start(1.0)
    clock.advance(1.0)
    assert [f.value.args for f in failures] == [("sampler broke",)]
    assert not loop.running and clock.getDelayedCalls() == []
