"""Resource figures of process children: sampled on the tree's clock, published past thresholds."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock

from supervisor import ChildKind, ChildSpec, Observability, SupervisorSpec, Supervisor
from supervisor.tree.model import walk
from supervisor.tree.resources import Figures, ProcSampler, Thresholds
from supervisor.tree.spec import ResourcesConfig
from supervisor.testing import ManualTask, TreeHarness
from tests.waiting import eventually, wait_until

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]
MIB = 1024 * 1024


def observed(interval_ms: int = 2000, **children: ChildKind) -> SupervisorSpec:
    specs = [
        ChildSpec(name, kind, command=SLEEPER) if kind is ChildKind.PROCESS
        else ChildSpec(name, kind, factory=ManualTask())
        for name, kind in children.items()
    ]
    return SupervisorSpec(children=specs,
                          observability=Observability(resources=ResourcesConfig(interval_ms)))


@pytest.fixture
def harness():
    """A tree on a fake clock whose process children really start (and are killed after)."""
    made = []

    def make(spec: SupervisorSpec) -> TreeHarness:
        h = TreeHarness(spec, reactor=MemoryReactorClock()).start()
        made.extend(c.runner.pid for c in walk(h.supervisor.root) if c.spec.kind is ChildKind.PROCESS)
        return h

    yield make
    for pid in made:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def pid_of(h: TreeHarness, path: str) -> int:
    return h.supervisor.child(path).runner.pid


def deltas_of(h: TreeHarness) -> list[dict]:
    seen: list[dict] = []
    h.supervisor.subscribe_state(seen.append)
    return seen


def test_figures_appear_in_the_row_after_one_interval_and_only_for_process_children(harness):
    h = harness(observed(web=ChildKind.PROCESS, task=ChildKind.TASK))
    h.sampler.groups[pid_of(h, "/root/web")] = Figures(12.5, 40 * MIB, 9, 3)
    h.sampler.own = Figures(1.0, 60 * MIB, 20, 4)
    assert h.supervisor.rows()[0]["resources"] is None
    h.advance(1.9)
    assert h.sampler.calls == 0
    h.advance(0.1)
    web, task = h.supervisor.rows()
    assert web["resources"] == {
        "cpu_percent": 12.5, "rss_bytes": 40 * MIB, "open_fds": 9, "threads": 3,
        "sampled_at": web["resources"]["sampled_at"],
        "sampled_at_unix_nanos": 2_000_000_000,
    }
    assert web["resources"]["sampled_at"] == "1970-01-01T00:00:02.000000Z"
    assert task["resources"] is None
    state = h.supervisor.state()
    assert state["target_resources"]["rss_bytes"] == 60 * MIB
    assert state["runtime_state"][0]["resources"]["open_fds"] == 9


def test_an_idle_tree_is_quiet_and_moves_past_the_thresholds_are_published(harness):
    h = harness(observed(web=ChildKind.PROCESS))
    pid = pid_of(h, "/root/web")
    h.sampler.groups[pid] = Figures(0.0, 40 * MIB, 9, 3)
    deltas = deltas_of(h)
    h.advance(2)
    assert [d["runtime_state"][0]["resources"]["rss_bytes"] for d in deltas] == [40 * MIB]
    generation = h.supervisor.state()["state_generation"]
    # small wobbles stay below the thresholds: nothing on the wire, the generation stands
    for cpu, rss in ((1.9, 41 * MIB), (0.5, 39 * MIB), (1.0, 40 * MIB + 5)):
        h.sampler.groups[pid] = Figures(cpu, rss, 9, 3)
        h.advance(2)
    assert len(deltas) == 1
    assert h.supervisor.state()["state_generation"] == generation
    assert h.sampler.calls == 4
    # the latest figures are still kept (metrics read them), the row shows the published ones
    assert h.supervisor.resources.latest["/root/web"].cpu_percent == 1.0
    assert h.supervisor.rows()[0]["resources"]["cpu_percent"] == 0.0
    h.sampler.groups[pid] = Figures(2.0, 40 * MIB, 9, 3)
    h.advance(2)
    h.sampler.groups[pid] = Figures(2.0, 43 * MIB, 9, 3)
    h.advance(2)
    h.sampler.groups[pid] = Figures(2.0, 43 * MIB, 10, 3)
    h.advance(2)
    assert [d["runtime_state"][0]["resources"]["cpu_percent"] for d in deltas[1:]] == [2.0] * 3
    assert [d["runtime_state"][0]["resources"]["open_fds"] for d in deltas[1:]] == [9, 9, 10]
    assert all(set(d) == {"state_generation", "runtime_state"} for d in deltas)


def test_the_target_process_figures_travel_beside_the_rows(harness):
    h = harness(observed(web=ChildKind.PROCESS))
    deltas = deltas_of(h)
    h.sampler.own = Figures(0.5, 60 * MIB, 20, 4)
    h.advance(2)
    assert deltas == [{"state_generation": deltas[0]["state_generation"],
                       "target_resources": deltas[0]["target_resources"]}]
    assert deltas[0]["target_resources"]["threads"] == 4
    h.sampler.own = Figures(0.5, 60 * MIB, 21, 4)
    h.advance(2)
    assert deltas[-1]["target_resources"]["open_fds"] == 21


def test_a_group_that_vanishes_is_published_as_null_and_an_exited_child_shows_none(harness):
    h = harness(observed(web=ChildKind.PROCESS, db=ChildKind.PROCESS))
    web, db = pid_of(h, "/root/web"), pid_of(h, "/root/db")
    h.sampler.groups.update({web: Figures(5, MIB, 4, 1), db: Figures(5, MIB, 4, 1)})
    h.advance(2)
    deltas = deltas_of(h)
    del h.sampler.groups[web]
    h.advance(2)
    assert [r["child_path"] for r in deltas[0]["runtime_state"]] == ["/root/web"]
    assert deltas[0]["runtime_state"][0]["resources"] is None
    # a child without a running process shows no figures, and its exit adds no delta of its own
    h.supervisor.child("/root/db").runner = None
    assert h.supervisor.rows(["/root/db"])[0]["resources"] is None
    h.advance(2)
    assert len(deltas) == 1


def test_sampling_off_samples_nothing(harness):
    h = harness(observed(0, web=ChildKind.PROCESS))
    h.sampler.groups[pid_of(h, "/root/web")] = Figures(50, MIB, 4, 1)
    h.advance(60)
    assert h.supervisor.resources is None
    assert h.sampler.calls == 0
    assert h.supervisor.rows()[0]["resources"] is None
    assert h.supervisor.state()["target_resources"] is None


def test_sampling_stops_with_the_tree(harness):
    h = harness(observed(web=ChildKind.PROCESS))
    h.advance(2)
    h.supervisor.shutdown("test")
    h.advance(30)
    calls = h.sampler.calls
    h.advance(60)
    assert h.sampler.calls == calls


def test_thresholds():
    t = Thresholds()
    base = Figures(10.0, 100 * MIB, 5, 2)
    assert not t.significant(base, Figures(11.9, 104 * MIB, 5, 2))
    assert t.significant(base, Figures(12.0, 100 * MIB, 5, 2))
    assert t.significant(base, Figures(10.0, 106 * MIB, 5, 2))
    assert t.significant(base, Figures(10.0, 100 * MIB, 5, 3))
    assert t.significant(None, base) and t.significant(base, None)
    assert not t.significant(None, None)


@pytest_twisted.ensureDeferred
async def test_real_figures_are_summed_over_the_process_group():
    # the child starts a grandchild in its own group; both burn CPU, so the group's threads,
    # descriptors and memory are those of two processes
    script = ("import subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
              "print('up', flush=True)\n"
              "while True: pass\n")
    spec = SupervisorSpec(children=[ChildSpec("burner", ChildKind.PROCESS, command=[PY, "-c", script])],
                          observability=Observability(resources=ResourcesConfig(200)))
    sup = Supervisor(spec, reactor=reactor, clock=reactor, sampler=ProcSampler())
    sup.startService()
    try:
        await eventually(lambda: len(sup.logs) >= 1, what="the child is up")
        leader = sup.child("/root/burner").runner.pid

        def group_figures():
            row = sup.rows()[0]["resources"]
            members = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == leader]
            return row if len(members) == 2 and row and row["threads"] >= 2 and row["cpu_percent"] > 50 else None

        row = await eventually(group_figures, what="figures of both processes")
        assert row["rss_bytes"] > 2 * MIB
        assert row["open_fds"] >= 6  # stdin, stdout, stderr of each process
        own = sup.state()["target_resources"]
        assert own["rss_bytes"] > 10 * MIB and own["threads"] >= 1
    finally:
        await sup.stopService()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def await_state(pid: int, state: str) -> None:
    def seen() -> bool:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == state
    wait_until(seen, 10, f"process {pid} in state {state}")


def test_the_proc_sampler_reads_the_figures_the_kernel_reports_for_a_group():
    import subprocess

    sleepers = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2)]
    try:
        for p in sleepers:  # asleep: past the dynamic loader, so the resident set holds still
            await_state(p.pid, "S")
        sampler = ProcSampler()
        groups = {p.pid for p in sleepers}
        figures = sampler.sample_groups(groups | {999_999_999})
        assert set(figures) == groups  # a group with no process is left out
        for p in sleepers:
            f = figures[p.pid]
            assert f.rss_bytes == _status(p.pid, "VmRSS") * 1024
            assert f.threads == _status(p.pid, "Threads") == 1
            assert f.open_fds == len(os.listdir(f"/proc/{p.pid}/fd"))
            assert f.cpu_percent == 0.0  # first sight of the process
        own = sampler.sample_self()
        assert own.threads == _status(os.getpid(), "Threads")
        assert own.rss_bytes > 10 * MIB and own.open_fds >= 3
        # a zombie (exited, not yet reaped) is not counted: it holds no memory or descriptors
        sleepers[0].kill()
        await_state(sleepers[0].pid, "Z")
        assert set(sampler.sample_groups(groups)) == {sleepers[1].pid}
        sleepers[0].wait()
        assert set(sampler.sample_groups(groups)) == {sleepers[1].pid}
        assert sampler.sample_groups(set()) == {}
    finally:
        for p in sleepers:
            p.kill()
            p.wait()


def test_descriptors_are_counted_by_listing_where_the_kernel_gives_the_fd_directory_no_size(monkeypatch):
    import subprocess

    from supervisor.tree import resources

    sleeper = subprocess.Popen(["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        await_state(sleeper.pid, "S")  # past the dynamic loader, which opens descriptors of its own
        listed = len(os.listdir(f"/proc/{sleeper.pid}/fd"))
        assert resources._count_fds(sleeper.pid) == listed == 3
        real_stat = os.stat
        monkeypatch.setattr(resources.os, "stat",
                            lambda path: os.stat_result((0,) * 6 + (0,) * 4) if "/fd" in path else real_stat(path))
        assert resources._count_fds(sleeper.pid) == listed  # a kernel before 6.2 reports size 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_proc_sampler_counts_cpu_since_the_last_sample_of_the_same_process(monkeypatch):
    from supervisor.tree import resources

    now = [100.0]
    readings = {}
    monkeypatch.setattr(resources.os, "listdir", lambda path: ["7", "self", "8"])
    monkeypatch.setattr(resources.os, "getpgid", lambda pid: 7)
    monkeypatch.setattr(resources, "read_process", lambda pid: readings[int(pid)])
    sampler = ProcSampler(monotonic=lambda: now[0])

    def sample(cpu7: float, cpu8: float, started8: int = 1) -> float:
        readings[7] = resources._Reading(1, cpu7, MIB, 3, 1)
        readings[8] = resources._Reading(started8, cpu8, MIB, 3, 1)
        return sampler.sample_groups({7})[7].cpu_percent

    assert sample(10.0, 5.0) == 0.0
    now[0] += 2
    assert sample(11.0, 5.5) == pytest.approx(75.0)  # (1 + 0.5) s over 2 s
    now[0] += 2
    # pid 8 is a new process now (another start time): its CPU time is not a delta of the old one
    assert sample(11.0, 9.0, started8=2) == 0.0
    now[0] += 1
    assert sample(11.5, 9.25, started8=2) == pytest.approx(75.0)
