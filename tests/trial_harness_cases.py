"""``supervisor.testing`` from trial TestCases, as a user's own suite would use it: run by
``twisted.trial`` in its own process (tests/test_testing_helpers_trial.py), whose reactor
checks are then about these cases alone."""

from twisted.trial import unittest

from supervisor import ChildKind, ChildSpec, Policy, Strategy, SupervisorSpec
from supervisor.testing import ManualTask, TreeHarness


class HarnessFromTrial(unittest.TestCase):
    def setUp(self) -> None:
        self.worker = ManualTask(heartbeat=True)
        spec = SupervisorSpec(
            strategy=Strategy.ONE_FOR_ONE,
            policy=Policy(initial_backoff_ms=200, max_backoff_ms=200, jitter_ratio=0),
            children=[ChildSpec("worker", ChildKind.TASK, factory=self.worker)],
        )
        self.harness = TreeHarness(spec).start()

    def test_crash_and_restart_on_fake_time(self) -> None:
        self.harness.crash("/root/worker", "disk full")
        self.assertEqual(self.harness.lifecycle("/root/worker"), "restarting")
        self.harness.advance(0.199)
        self.assertEqual(len(self.worker.runs), 1)
        self.harness.advance(0.001)
        self.assertEqual(self.harness.lifecycle("/root/worker"), "running")
        self.assertEqual(
            self.harness.event_types("/root/worker")[3:],
            ["child_exited", "child_failed", "backoff_scheduled", "child_restarting",
             "child_started", "child_running", "child_ready", "child_restarted"],
        )
        self.assertEqual(self.harness.events("child_failed")[0].payload, {"reason": "disk full"})

    def test_yaml_and_python_build_the_same_tree(self) -> None:
        from_yaml = TreeHarness.from_yaml(
            "supervisor: {strategy: OneForAll}\n"
            "children:\n"
            "  - {name: worker, kind: task, callable: 'supervisor.demo:steady_worker'}\n"
        ).start()
        self.assertEqual(from_yaml.supervisor.spec.strategy, Strategy.ONE_FOR_ALL)
        self.assertEqual(from_yaml.lifecycle("/root/worker"), "running")
        report = from_yaml.stop()
        self.assertEqual(report["children"][0]["outcome"], "stopped")

    def test_stop_reports_every_child(self) -> None:
        report = self.harness.stop()
        self.assertEqual([r["child_path"] for r in report["children"]], ["/root/worker"])
        self.assertTrue(self.worker.current.ended)


class CrashingACooperativeLoop(unittest.TestCase):
    def test_a_crashed_loop_that_awaits_its_cancellation_ends_and_restarts(self) -> None:
        # the demo's worker loops ``while not ctx.stopping`` awaiting a timer or its
        # cancellation; failing it cancels both, and it must then end rather than spin
        from supervisor.demo import steady_worker

        harness = TreeHarness(SupervisorSpec(
            policy=Policy(initial_backoff_ms=100, max_backoff_ms=100, jitter_ratio=0),
            children=[ChildSpec("steady", ChildKind.TASK, factory=steady_worker)])).start()
        harness.crash("/root/steady", "crashed by test")
        self.assertEqual(harness.lifecycle("/root/steady"), "restarting")
        harness.advance(0.1)
        self.assertEqual(harness.lifecycle("/root/steady"), "running")
        self.assertEqual(harness.events("child_failed")[0].payload, {"reason": "crashed by test"})
