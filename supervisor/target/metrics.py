"""The target's Prometheus metrics: collectors that read the live tree (and the IPC server's
connection queues) at each scrape."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.ipc.server import IpcServer
from supervisor.tree.lifecycle import Lifecycle
from supervisor.tree.model import ROOT_PATH, walk
from supervisor.tree.resources import Figures
from supervisor.tree.runtime import Supervisor
from supervisor.wire.metrics import MetricsService

_STATES = tuple(state.value for state in Lifecycle)


class TreeCollector(Collector):
    """Per child: lifecycle state, restarts, backoff, resources; per tree: events, journals."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Any]:
        sup = self._supervisor
        tree = sup.tree
        now = tree.now()
        state = GaugeMetricFamily("supervisor_child_state",
                                  "1 for the lifecycle state each child is in, 0 for the others",
                                  labels=["child_path", "state"])
        restarts = CounterMetricFamily("supervisor_child_restarts",
                                       "restarts of each child since the target started",
                                       labels=["child_path"])
        backoff = GaugeMetricFamily("supervisor_child_backoff_seconds",
                                    "seconds until each child's scheduled restart (0 if none)",
                                    labels=["child_path"])
        figures = {
            "cpu_percent": GaugeMetricFamily("supervisor_child_cpu_percent",
                                             "CPU of the process group, % of one core (/root: the target)",
                                             labels=["child_path"]),
            "rss_bytes": GaugeMetricFamily("supervisor_child_rss_bytes",
                                           "resident memory of the process group (/root: the target)",
                                           labels=["child_path"]),
            "open_fds": GaugeMetricFamily("supervisor_child_open_fds",
                                          "open descriptors of the process group (/root: the target)",
                                          labels=["child_path"]),
            "threads": GaugeMetricFamily("supervisor_child_threads",
                                         "threads of the process group (/root: the target)",
                                         labels=["child_path"]),
        }
        monitor = sup.resources
        latest: dict[str, Figures] = dict(monitor.latest) if monitor is not None else {}
        if monitor is not None and monitor.latest_self is not None:
            latest[ROOT_PATH] = monitor.latest_self
        for child in walk(sup.root):
            path = child.path
            current = child.state.value
            for name in _STATES:
                state.add_metric([path, name], 1.0 if name == current else 0.0)
            restarts.add_metric([path], child.restart_count)
            timer = child.node.restart_timers.get(child.name)
            wait = max(0.0, timer.getTime() - now) if timer is not None and timer.active() else 0.0
            backoff.add_metric([path], wait)
        for path, sample in sorted(latest.items()):
            for name, family in figures.items():
                family.add_metric([path], float(getattr(sample, name)))
        yield state
        yield restarts
        yield backoff
        yield from figures.values()
        events = CounterMetricFamily("supervisor_events", "events emitted, by event type",
                                     labels=["event_type"])
        for event_type, count in sorted(tree.metrics.items()):
            events.add_metric([event_type], count)
        yield events
        evicted = CounterMetricFamily("supervisor_journal_evicted",
                                      "records evicted from the target's journals",
                                      labels=["journal"])
        evicted.add_metric(["events"], tree.events.evicted)
        evicted.add_metric(["logs"], tree.logs.evicted)
        yield evicted
        generation = GaugeMetricFamily("supervisor_state_generation",
                                       "the state generation of the tree")
        generation.add_metric([], tree.state_generation)
        yield generation
        samples = CounterMetricFamily("supervisor_resource_samples",
                                      "resource samples taken")
        samples.add_metric([], monitor.samples if monitor is not None else 0)
        yield samples


class IpcCollector(Collector):
    """The IPC connections' outbound queues (lines and bytes waiting) and the pushes dropped
    from them."""

    def __init__(self, server: IpcServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Any]:
        server = self._server
        queues = [c.out for c in server.connections if c.out is not None]
        depth = GaugeMetricFamily("supervisor_ipc_push_queue_depth",
                                  "lines waiting in IPC connections' outbound queues "
                                  "(sum and deepest)", labels=["aggregate"])
        depth.add_metric(["sum"], sum(q.pending for q in queues))
        depth.add_metric(["max"], max((q.pending for q in queues), default=0))
        yield depth
        size = GaugeMetricFamily("supervisor_ipc_push_queue_bytes",
                                 "bytes waiting in IPC connections' outbound queues (sum and "
                                 "largest), each bounded by ipc.max_pending_push_bytes",
                                 labels=["aggregate"])
        size.add_metric(["sum"], sum(q.pending_bytes for q in queues))
        size.add_metric(["max"], max((q.pending_bytes for q in queues), default=0))
        yield size
        dropped = CounterMetricFamily("supervisor_ipc_pushes_dropped",
                                      "pushes dropped from slow IPC readers' queues, by kind "
                                      "(event: events and state deltas)", labels=["kind"])
        for kind, count in sorted(server.dropped_pushes.items()):
            dropped.add_metric([kind], count)
        yield dropped


def tree_registry(supervisor: Supervisor, ipc: IpcServer | None = None) -> CollectorRegistry:
    """A registry of its own (no process-global metrics) holding the tree's collector, and
    the IPC server's when the target serves IPC."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreeCollector(supervisor))
    if ipc is not None:
        registry.register(IpcCollector(ipc))
    return registry


def metrics_service(supervisor: Supervisor, reactor: Any, listen: str,
                    ipc: IpcServer | None = None) -> MetricsService:
    """The target's ``/metrics`` listener on ``listen`` (an endpoint description)."""
    return MetricsService(reactor, listen, tree_registry(supervisor, ipc), what="target metrics")
