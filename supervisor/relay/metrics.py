"""The relay's Prometheus metrics: live figures read from the hub at each scrape, plus
counters and histograms fed as things happen (commands, audit writes, IPC requests)."""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: seconds; an IPC request or an audit write slower than the last bucket lands in +Inf
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)


class RelayMetrics:
    """One registry per relay (no process-global metrics), with what the hub feeds it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.commands = Counter("relay_commands", "commands handled, by result "
                                "(rejected, audit_unavailable, completed, failed)",
                                ["result"], registry=self.registry)
        self.audit_write = Histogram("relay_audit_write_seconds",
                                     "time to append one audit record (queue and write)",
                                     buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.ipc_round_trip = Histogram("relay_ipc_round_trip_seconds",
                                        "time from an IPC request to its answer, by method",
                                        ["method"], buckets=_LATENCY_BUCKETS,
                                        registry=self.registry)
        self.rate_limited = Counter("relay_sessions_rate_limited",
                                    "sessions closed for exceeding a rate limit, by limit "
                                    "(commands, rejected, filter_changes)", ["limit"],
                                    registry=self.registry)
        self.replays_truncated = Counter("relay_audit_replays_truncated",
                                         "audit replays on bind cut to "
                                         "limits.audit_replay_max_bytes",
                                         registry=self.registry)
        self.registration_refused = Counter(
            "relay_registration_refused", "registrations refused, by error code",
            ["code"], registry=self.registry)
        self.ipc_connect_refused = Counter(
            "relay_ipc_connect_refused", "IPC connections the relay refused to use, by reason "
            "(ipc_path_not_allowed, invalid_ipc_path, ipc_peer_uid_mismatch)", ["reason"],
            registry=self.registry)
        #: per-session drops of sessions already closed, by kind, kept so the total never falls
        self.closed_drops = [0, 0]

    def observe_hub(self, hub: Any) -> None:
        """Read sessions, targets, links and queues from ``hub`` at each scrape."""
        self.registry.register(_HubCollector(hub, self))


class _HubCollector(Collector):
    def __init__(self, hub: Any, metrics: RelayMetrics) -> None:
        self._hub = hub
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        hub = self._hub
        sessions = list(hub.sessions.values())
        family = GaugeMetricFamily("relay_sessions", "dashboard sessions, by phase",
                                   labels=["phase"])
        established = sum(1 for s in sessions if s.established)
        family.add_metric(["established"], established)
        family.add_metric(["handshake"], len(sessions) - established)
        yield family
        registered = GaugeMetricFamily("relay_targets_registered", "targets with a live lease")
        registered.add_metric([], len(hub.registry.entries()))
        yield registered
        bound = GaugeMetricFamily("relay_targets_bound",
                                  "targets bound to at least one session (an open link), by "
                                  "connection state", labels=["connection_state"])
        states: dict[str, int] = {}
        for link in hub.links.values():
            states[link.state] = states.get(link.state, 0) + 1
        for state, count in sorted(states.items()):
            bound.add_metric([state], count)
        yield bound
        depth = GaugeMetricFamily("relay_session_queue_depth",
                                  "messages waiting in session outboxes (sum and deepest)",
                                  labels=["aggregate"])
        pending = [s.outbox.pending for s in sessions]
        depth.add_metric(["sum"], sum(pending))
        depth.add_metric(["max"], max(pending, default=0))
        yield depth
        size = GaugeMetricFamily("relay_session_queue_bytes",
                                 "UTF-8 bytes waiting in session outboxes (sum and largest), "
                                 "each bounded by limits.session_queue_bytes",
                                 labels=["aggregate"])
        queued = [s.outbox.pending_bytes for s in sessions]
        size.add_metric(["sum"], sum(queued))
        size.add_metric(["max"], max(queued, default=0))
        yield size
        drops = CounterMetricFamily("relay_session_dropped",
                                    "events and logs dropped from full session outboxes",
                                    labels=["kind"])
        events, logs = self._metrics.closed_drops
        for s in sessions:
            for counts in s.outbox.dropped.values():
                events += counts[0]
                logs += counts[1]
        drops.add_metric(["event"], events)
        drops.add_metric(["log"], logs)
        yield drops
        forgotten = CounterMetricFamily("relay_command_ids_forgotten",
                                        "accepted command ids forgotten before their window "
                                        "ended (limits.command_id_window_size)")
        forgotten.add_metric([], hub.commands.command_ids_evicted)
        yield forgotten
        reads = GaugeMetricFamily("relay_audit_reads_waiting",
                                  "audit replay reads queued behind audit writes")
        reads.add_metric([], getattr(hub.audit, "reads_waiting", 0))
        yield reads
        owners = getattr(hub.registry, "owners", None)
        if owners is not None:
            remembered = GaugeMetricFamily("relay_target_owners",
                                           "target ids whose owner the relay remembers")
            remembered.add_metric([], len(owners))
            yield remembered
            full = CounterMetricFamily("relay_target_owners_refused_full",
                                       "new target ids refused because every remembered "
                                       "owner is still within its quiet period")
            full.add_metric([], owners.refused_full)
            yield full
        alerts = getattr(hub, "alerts", None)
        if alerts is not None:
            yield from alerts.metric_families()
