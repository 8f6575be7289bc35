"""TargetLink on a fake clock: handshake and subscriptions, one connection for all sessions,
loss and reconnect with backoff, keepalive expiry, gap counting, moves, close and expiry."""

from __future__ import annotations

import json

import pytest
from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from relay_memory import MemoryRelay, Nowhere, settle
from supervisor._backoff import retry_policy
from supervisor.relay.targetlink import TargetLink
from supervisor.testing import MemoryTarget

TIMEOUTS = {"ipc_request_seconds": 2, "ipc_connect_seconds": 1, "ipc_keepalive_seconds": 5,
            "reconnect_initial_ms": 100, "reconnect_max_ms": 800, "reconnect_jitter_ratio": 0.2}


class Subscriber:
    """A session as the link sees it: records what it is handed, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, object]] = []

    def deliver_state(self, target_id, state):
        self.got.append(("state", [e["sequence"] for e in state["recent_events"]]))

    def deliver_push(self, target_id, push, text):
        assert json.loads(text) == push
        record = push.get("event") or push.get("log") or push.get("delta")
        self.got.append((push["type"], record.get("sequence", record.get("state_generation"))))

    def deliver_dropped(self, target_id, events, logs):
        self.got.append(("dropped", (events, logs)))

    def kinds(self):
        return [kind for kind, _ in self.got]


class Observer:
    def __init__(self) -> None:
        self.states: list[str] = []

    def link_state_changed(self, link, state):
        self.states.append(state)

    def link_events(self, link, events):
        self.events = [*getattr(self, "events", []), *events]


class Rig:
    """One link to one MemoryTarget; attempts are timed on the fake clock."""

    def __init__(self, *, jitter_draw: float = 0.5, **timeouts):
        self.relay = MemoryRelay(timeouts={**TIMEOUTS, **timeouts})
        self.clock: Clock = self.relay.clock
        self.target = self.relay.target()
        self.entry = self.relay.register(self.target)
        self.observer = Observer()
        self.attempts: list[float] = []
        self.link = TargetLink(self.entry, reactor=self.clock,
                               timeouts=self.relay.config.timeouts,
                               limits=self.relay.config.limits, observer=self.observer,
                               rng=lambda: jitter_draw, connector=self.connect)

    def connect(self, path):
        self.attempts.append(round(self.clock.seconds(), 6))
        return self.relay.endpoint(path)

    def settle(self, seconds=0.0):
        settle(self.clock, seconds)

    def bound(self, *subscribers):
        for subscriber in subscribers:
            self.link.bind(subscriber)
        self.settle()
        return subscribers


def test_connecting_says_hello_reads_state_then_subscribes_after_it():
    rig = Rig()
    early = [rig.target.emit_event("child_started") for _ in range(3)]
    (sub,) = rig.bound(Subscriber())
    assert rig.observer.states == ["connecting", "connected"]
    assert rig.target.methods() == ["hello", "state", "events.subscribe", "logs.tail"]
    params = dict(rig.target.requests)
    assert params["events.subscribe"] == {"target_id": rig.target.target_id,
                                          "session_established": True, "since_sequence": 3}
    assert params["logs.tail"]["since_sequence"] == 0 and params["logs.tail"]["lines"] == 128
    # the state first; the replay after since_sequence holds nothing already in it
    assert sub.got == [("state", [e["sequence"] for e in early])]
    rig.target.emit_event("child_running")
    rig.target.emit_log("flushed")
    rig.settle()
    assert sub.got[1:] == [("event", 4), ("log", 1)]


def test_one_connection_serves_every_session_and_late_ones_get_their_own_state():
    rig = Rig()
    (first,) = rig.bound(Subscriber())
    rig.target.emit_event()
    rig.settle()
    # two sessions bound at once while connected: one state request serves both
    late = rig.bound(Subscriber(), Subscriber())
    assert rig.target.methods().count("state") == 2 and len(rig.target.connections) == 1
    rig.target.emit_event()
    rig.settle()
    assert first.got == [("state", []), ("event", 1), ("event", 2)]
    for sub in late:
        assert sub.got == [("state", [1]), ("event", 2)]
    assert rig.attempts == [0.0]


def test_a_lost_connection_is_unavailable_at_once_and_comes_back_after_the_backoff():
    rig = Rig()
    (sub,) = rig.bound(Subscriber())
    rig.target.stop()
    rig.settle()  # the loss arrives; no time has passed
    assert rig.observer.states[-1] == "unavailable" and rig.link.state == "unavailable"
    assert rig.link.sessions == {sub} and rig.link.attached == set()
    rig.target.start()
    first_retry = retry_policy(0.1, 0.8, 0.2, rand=lambda: 0.5)(1)
    rig.settle(first_retry - 0.001)
    assert rig.attempts == [0.0] and rig.link.state == "unavailable"
    rig.settle(0.001)
    assert rig.attempts == [0.0, pytest.approx(first_retry)]
    assert rig.observer.states == ["connecting", "connected", "unavailable", "connected"]
    rig.target.emit_event()
    rig.settle()
    assert sub.kinds() == ["state", "state", "event"]  # the fresh state before new events


def test_attempts_back_off_while_the_target_is_down_and_start_over_after_a_success():
    rig = Rig(jitter_draw=0.0)  # every delay at its lowest: base × (1 - 0.2)
    rig.target.stop()
    rig.bound(Subscriber())
    assert rig.observer.states == ["connecting", "unavailable"]
    rig.settle(6.0)
    delays = [round(b - a, 6) for a, b in zip(rig.attempts, rig.attempts[1:])]
    policy = retry_policy(0.1, 0.8, 0.2, rand=lambda: 0.0)
    assert delays[:6] == [pytest.approx(policy(n)) for n in range(1, 7)]
    assert delays[:5] == [pytest.approx(d) for d in (0.08, 0.16, 0.32, 0.64, 0.64)]
    assert max(delays) == pytest.approx(0.64)  # capped
    rig.target.start()
    rig.settle(0.8)
    assert rig.link.state == "connected"
    rig.target.stop()
    rig.settle()
    lost_at = rig.clock.seconds()
    rig.target.start()
    rig.settle(1.0)
    assert rig.attempts[-1] - lost_at == pytest.approx(policy(1))


def test_a_target_answering_as_another_one_or_in_another_protocol_is_a_failed_attempt():
    rig = Rig(jitter_draw=0.0)
    impostor = MemoryTarget("someone-else", rig.clock, ipc_path=rig.target.ipc_path)
    rig.relay.targets[impostor.ipc_path] = impostor
    (sub,) = rig.bound(Subscriber())
    assert rig.link.state == "unavailable" and impostor.methods() == ["hello"]
    rig.settle(0.3)
    assert len(rig.attempts) == 3  # 0, 0.08, 0.24: the delays grow as for refused connects
    assert impostor.connections == [] and sub.got == []

    class OtherProtocol(MemoryTarget):
        def handle(self, connection, method, params):
            result, pushes = super().handle(connection, method, params)
            if method == "hello":
                result = {**result, "protocol_version": "dashboard-ipc.v2"}
            return result, pushes

    rig.relay.targets[rig.target.ipc_path] = OtherProtocol(rig.target.target_id, rig.clock,
                                                           ipc_path=rig.target.ipc_path)
    rig.settle(0.4)
    assert rig.link.state == "unavailable" and sub.got == []
    rig.relay.targets[rig.target.ipc_path] = rig.target
    rig.settle(1.0)
    assert rig.link.state == "connected" and sub.kinds() == ["state"]


def test_a_frozen_target_misses_the_keepalive_and_is_unavailable_until_it_answers():
    rig = Rig()
    (sub,) = rig.bound(Subscriber())
    rig.target.freeze()
    # the keepalive hello goes out after ipc_keepalive_seconds (5) and is not answered
    # within ipc_request_seconds (2)
    rig.settle(5.0 + 2.0 - 0.001)
    assert rig.link.state == "connected"
    rig.settle(0.001)
    assert rig.link.state == "unavailable"
    assert rig.target.connections == []  # the link gave up on that connection
    rig.settle(10.0)  # reconnects find a target that still does not answer
    assert rig.link.state == "unavailable" and len(rig.attempts) > 2
    rig.target.thaw()
    rig.settle(5.0)
    assert rig.link.state == "connected" and sub.kinds() == ["state", "state"]


def test_keepalives_answered_in_time_keep_the_link_connected():
    rig = Rig()
    rig.bound(Subscriber())
    rig.settle(60.0)
    assert rig.link.state == "connected" and rig.attempts == [0.0]
    assert rig.target.methods().count("hello") == 1 + 12


def test_records_missed_while_the_link_was_down_are_counted_as_dropped():
    rig = Rig()
    seen = rig.target.emit_event()
    (sub,) = rig.bound(Subscriber())
    rig.target.stop()
    rig.settle()
    for _ in range(300):
        rig.target.emit_event("child_restarted")
    for _ in range(3):
        rig.target.emit_log("while away")
    rig.target.start()
    rig.settle(1.0)
    held = list(range(301 - 127, 302))  # the newest 128 of 301
    assert sub.got[:2] == [("state", [1]), ("state", held)]
    # events 2 .. 173 were neither streamed nor are in the fresh state; logs are all there
    assert sub.got[2] == ("dropped", (held[0] - seen["sequence"] - 1, 0)) == ("dropped",
                                                                             (172, 0))
    rig.target.emit_event()
    rig.settle()
    assert sub.got[3:] == [("event", 302)]


def test_a_restarted_target_starts_its_sequences_again_without_a_gap():
    rig = Rig()
    for _ in range(5):
        rig.target.emit_event()
    (sub,) = rig.bound(Subscriber())
    rig.target.restart()
    rig.target.emit_event("child_started")
    rig.settle(1.0)
    assert sub.got == [("state", [1, 2, 3, 4, 5]), ("state", [1])]
    rig.target.emit_event()
    rig.settle()
    assert sub.got[-1] == ("event", 2)


def test_drops_the_target_reports_accumulate_across_connections():
    rig = Rig()
    (sub,) = rig.bound(Subscriber())
    rig.target.report_dropped(5, 1)
    rig.settle()
    assert sub.got[-1] == ("dropped", (5, 1)) and rig.link.dropped == (5, 1)
    rig.target.stop()
    rig.target.start()
    rig.settle(1.0)
    rig.target.report_dropped(2, 0)
    rig.settle()
    assert sub.got[-1] == ("dropped", (7, 1))


def test_a_moved_target_is_reconnected_at_once_at_its_new_path():
    rig = Rig()
    (sub,) = rig.bound(Subscriber())
    moved = MemoryTarget(rig.target.target_id, rig.clock, ipc_path="/memory/moved.sock")
    rig.relay.targets[moved.ipc_path] = moved
    previous = rig.entry.registration
    entry = rig.relay.register(moved)
    rig.link.update(entry, previous)
    rig.settle()
    assert rig.attempts == [0.0, 0.0]  # no backoff delay for a move
    assert rig.target.connections == [] and len(moved.connections) == 1
    assert rig.observer.states == ["connecting", "connected", "connecting", "connected"]
    assert sub.kinds() == ["state", "state"]
    rig.link.update(entry, entry.registration)  # a change without a move: nothing to do
    rig.settle()
    assert rig.attempts == [0.0, 0.0]


def test_the_last_session_leaving_closes_the_connection_and_stops_retrying():
    rig = Rig()
    a, b = rig.bound(Subscriber(), Subscriber())
    assert rig.link.unbind(a) is False
    assert rig.link.unbind(b) is True
    rig.settle()
    assert rig.target.connections == [] and rig.link.state == "registered"
    rig.target.stop()
    rig.settle(60.0)
    assert rig.attempts == [0.0]
    rig.target.start()
    rig.link.bind(a)  # a link can be opened again
    rig.settle()
    assert rig.link.state == "connected" and a.kinds() == ["state", "state"]


def test_an_expired_link_is_done():
    rig = Rig()
    rig.target.stop()
    (sub,) = rig.bound(Subscriber())
    rig.link.expire()
    rig.settle(60.0)
    assert rig.observer.states == ["connecting", "unavailable", "expired"]
    assert rig.attempts == [0.0]
    with pytest.raises(NoTransition):
        rig.link.bind(Subscriber())


def test_requests_fail_fast_unless_connected():
    rig = Rig()
    rig.target.stop()
    rig.bound(Subscriber())
    failures = []
    rig.link.request("command.pause_child", {}, 5).addErrback(failures.append)
    assert failures[0].value.code == "target_unavailable" and failures[0].value.retryable
    assert "unavailable" in failures[0].value.message


def test_the_default_connector_speaks_over_a_unix_endpoint():
    reactor = MemoryReactorClock()
    relay = MemoryRelay(timeouts=TIMEOUTS)
    target = relay.target()
    link = TargetLink(relay.register(target), reactor=reactor,
                      timeouts=relay.config.timeouts, limits=relay.config.limits,
                      observer=Observer())
    link.bind(Subscriber())
    path, factory, timeout, _ = reactor.unixClients[0]
    assert (path, timeout) == (target.ipc_path, 1)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    target_side = target.protocol()
    target_side.makeConnection(StringTransport())

    def exchange():
        """Hand what the link wrote to the target, and the target's answers back."""
        target_side.dataReceived(transport.value())
        transport.clear()
        protocol.dataReceived(target_side.transport.value())
        target_side.transport.clear()

    exchange()  # hello
    exchange()  # state
    assert link.state == "connected"
    exchange()  # subscriptions
    assert target.methods() == ["hello", "state", "events.subscribe", "logs.tail"]


@implementer(IStreamClientEndpoint)
class Silent:
    """An endpoint whose connection attempts never complete (a SYN into the void)."""

    def __init__(self):
        self.cancelled = 0

    def connect(self, factory):
        def cancel(d):
            self.cancelled += 1

        return Deferred(cancel)


def test_connecting_has_a_deadline_and_nobody_listening_is_a_failed_attempt():
    rig = Rig()
    silent = Silent()
    rig.relay.endpoint = lambda path: silent
    rig.bound(Subscriber())
    rig.settle(1.0 - 0.001)
    assert rig.link.state == "connecting" and silent.cancelled == 0
    rig.settle(0.001)  # timeouts.ipc_connect_seconds
    assert rig.link.state == "unavailable" and silent.cancelled == 1
    rig.relay.endpoint = lambda path: Nowhere()
    rig.settle(5.0)
    assert rig.link.state == "unavailable" and silent.cancelled == 1 and len(rig.attempts) > 3


def test_a_unix_connection_attempt_that_never_completes_times_out_and_is_retried():
    reactor = MemoryReactorClock()
    relay = MemoryRelay(timeouts=TIMEOUTS)
    link = TargetLink(relay.register(relay.target()), reactor=reactor,
                      timeouts=relay.config.timeouts, limits=relay.config.limits,
                      observer=Observer(), rng=lambda: 0.5)
    link.bind(Subscriber())
    reactor.advance(1.0 - 0.001)
    assert link.state == "connecting" and len(reactor.unixClients) == 1
    reactor.advance(0.001)  # timeouts.ipc_connect_seconds
    assert link.state == "unavailable"
    reactor.advance(0.1)  # the first retry delay
    assert len(reactor.unixClients) == 2
