"""Soak: the three ends under steady churn for a long time; prints ONE JSON object.

    .venv/bin/python bench/soak.py [--minutes 10] [--targets 50] [--children 20]
                                   [--sessions 20] [--crash-seconds 60] [--command-rate 1]

(``SOAK_MINUTES`` overrides the default duration.) It starts a relay (``twistd -n
supervisor-relay``) and ``--targets`` real targets (one ``twistd -n supervisor-target``
process each), every target with ``--children`` task children that crash on purpose every
``--crash-seconds`` (± 50 %) and are restarted by their supervisor; ``--sessions`` dashboard
sessions (autobahn over TLS with the operator's client certificate) watch every target, and
one of them sends ``--command-rate`` commands per second (pause / resume / restart of a
random child).

Figures: relay and target RSS and fd counts after a warm-up and at the end (RSS growth is
also extrapolated per hour); per (session, target): events emitted by the target while the
session watched (sequence numbers) vs delivered to the session (as ``event`` messages or in a
``state``) vs reported in ``dropped_count`` — anything else is *unaccounted*; commands sent
vs audited (both the ``accepted`` and the final record in the relay's SQLite audit).

The module is also imported by the soak targets (``bench.soak:crashing_worker``), so it
imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


async def crashing_worker(ctx: Any) -> None:
    """A soak child: ready at once, then fails on purpose after about SOAK_CRASH_SECONDS."""
    from twisted.internet import defer, task

    period = float(os.environ.get("SOAK_CRASH_SECONDS", "60"))
    ctx.mark_ready()
    sleep = task.deferLater(ctx.clock, period * random.uniform(0.5, 1.5), lambda: None)
    await defer.DeferredList([sleep, ctx.cancellation], fireOnOneCallback=True,
                             consumeErrors=True)
    if not sleep.called:
        sleep.cancel()
        return
    raise RuntimeError("soak: crashing on purpose")


# processes -------------------------------------------------------------------------------------

def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **(extra or {})}


def _spawn(args: list[str], log_path: str, extra_env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(args, cwd=os.path.dirname(log_path), env=_env(extra_env),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"soak: not within {timeout}s: {what}")
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _ipc_last_sequence(path: str, target_id: str) -> int:
    """The target's newest event sequence, asked over its own IPC socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps({"request_id": "soak", "method": "state",
                              "params": {"target_id": target_id}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    state = json.loads(data)["result"]["state"]
    return max((e["sequence"] for e in state["recent_events"]), default=0)


# the sessions ----------------------------------------------------------------------------------

class Tally:
    """What one session saw of one target."""

    __slots__ = ("first_state_max", "seqs", "last", "dropped_events", "states")

    def __init__(self) -> None:
        self.first_state_max: int | None = None
        self.seqs = array.array("q")
        self.last = 0
        self.dropped_events = 0
        self.states = 0


def _client_class() -> Any:
    from autobahn.twisted.websocket import WebSocketClientProtocol

    class SoakClient(WebSocketClientProtocol):
        """Counts instead of keeping messages (memory stays flat over hours)."""

        def onOpen(self) -> None:
            self.tallies: dict[str, Tally] = {}
            self.results: dict[str, dict[str, Any]] = {}
            self.audit_events = 0
            self.connection_states: dict[str, int] = {}
            self.closed = False
            self.targets_listed = 0
            self.sendMessage(json.dumps({"type": "client_hello", "client_store_id": "soak",
                                         "resume_cursor": {}}).encode())
            self.factory.opened.callback(self)

        def tally(self, target_id: str) -> Tally:
            t = self.tallies.get(target_id)
            if t is None:
                t = self.tallies[target_id] = Tally()
            return t

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            m = json.loads(payload)
            kind = m["type"]
            if kind == "event":
                t = self.tally(m["target_id"])
                seq = m["event"]["sequence"]
                t.seqs.append(seq)
                t.last = max(t.last, seq)
            elif kind == "state":
                t = self.tally(m["target_id"])
                t.states += 1
                seqs = [e["sequence"] for e in m["state"]["recent_events"]]
                if t.first_state_max is None:
                    t.first_state_max = max(seqs, default=0)
                    t.last = t.first_state_max
                else:  # events a later state carries count as delivered
                    newer = [s for s in seqs if s > t.last]
                    t.seqs.extend(newer)
                    t.last = max([t.last] + newer)
            elif kind == "dropped_count":
                self.tally(m["target_id"]).dropped_events = m["dropped_event_count"]
            elif kind == "command_result":
                self.results[m["result"]["command_id"]] = m["result"]
            elif kind == "audit_event":
                self.audit_events += 1
            elif kind == "connection_state":
                self.connection_states[m["state"]] = self.connection_states.get(
                    m["state"], 0) + 1
            elif kind == "target_list":
                self.targets_listed = len(m["targets"])

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            self.closed = True
            if not self.factory.opened.called:
                self.factory.opened.errback(ConnectionError(str(reason)))

    return SoakClient


async def _connect(port: int, pki: Any) -> Any:
    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import SSL4ClientEndpoint

    from relay_helpers import ORIGIN, PUBLIC_URL, client_tls

    factory = WebSocketClientFactory(url=PUBLIC_URL, origin=ORIGIN, reactor=reactor)
    factory.protocol = _client_class()
    factory.opened = Deferred()
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, client_tls(pki, pki.operator),
                                  timeout=30)
    await endpoint.connect(factory)
    return await factory.opened


async def _until(predicate: Any, timeout: float, what: str) -> bool:
    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.stderr.write(f"soak: not within {timeout}s: {what}\n")
            return False
        await task.deferLater(reactor, 0.2, lambda: None)
    return True


def _snapshot(relay_pid: int, target_pids: dict[str, int]) -> dict[str, Any]:
    rss = {t: rss_kib(p) for t, p in target_pids.items()}
    fd = {t: fds(p) for t, p in target_pids.items()}
    return {"relay_rss_kib": rss_kib(relay_pid), "relay_fds": fds(relay_pid),
            "targets_rss_kib_total": sum(rss.values()),
            "targets_rss_kib_max": max(rss.values()), "targets_fds_total": sum(fd.values()),
            "_rss": rss, "_fds": fd}


async def soak(args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    from twisted.internet import reactor, task
    from twisted.internet.threads import deferToThread

    import yaml
    from relay_helpers import config_dict, make_pki

    pki = make_pki(workdir)
    port = _free_port()
    config = config_dict(workdir, pki, listen={"bind": f"127.0.0.1:{port}"},
                         limits={"max_sessions": args.sessions + 8, "session_queue": 10000},
                         timeouts={"ipc_request_seconds": 10, "reconnect_initial_ms": 250,
                                   "reconnect_max_ms": 5000, "lease_sweep_interval_ms": 500,
                                   "registration_read_seconds": 5})
    config["registration"]["max_lease_seconds"] = 120
    with open(os.path.join(workdir, "relay.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        relay = _spawn([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                        "--config", os.path.join(workdir, "relay.yaml")],
                       os.path.join(workdir, "relay.log"))
        processes.append(relay)
        _wait(lambda: _port_open(port) or relay.poll() is not None, 60, "relay listening")
        target_ids = [f"t{i:02d}" for i in range(args.targets)]
        children = [{"name": f"c{j:02d}", "kind": "task",
                     "callable": "bench.soak:crashing_worker"} for j in range(args.children)]
        targets: dict[str, subprocess.Popen[bytes]] = {}
        for target_id in target_ids:
            data = {
                "supervisor": {"strategy": "one_for_one", "name": target_id},
                "policy": {"initial_backoff_ms": 200, "max_backoff_ms": 2000,
                           "child_restart_limit": 1000000, "child_restart_window_ms": 60000,
                           "supervisor_failure_limit": 1000000,
                           "supervisor_failure_window_ms": 60000},
                "ipc": {"enabled": True, "target_id": target_id,
                        "path": os.path.join(workdir, f"{target_id}.sock"),
                        "bind_mode": "replace_stale",
                        "registration": {
                            "enabled": True,
                            "relay_registration_path": config["registration"]["listen_path"],
                            "display_name": target_id, "lease_seconds": 30,
                            "registration_heartbeat_interval_seconds": 10}},
                "children": children,
                "observability": {"event_journal_capacity": args.event_ring,
                                  "log_journal_capacity": args.log_ring},
            }
            path = os.path.join(workdir, f"{target_id}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(data, f)
            targets[target_id] = _spawn(
                [TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-target", "--config",
                 path], os.path.join(workdir, f"{target_id}.log"),
                {"SOAK_CRASH_SECONDS": str(args.crash_seconds)})
            processes.append(targets[target_id])
        _wait(lambda: all(os.path.exists(os.path.join(workdir, f"{t}.sock"))
                          for t in target_ids), 300, "targets listening")

        sessions = [await _connect(port, pki) for _ in range(args.sessions)]
        ok = await _until(lambda: all(
            len([t for t in s.tallies.values() if t.first_state_max is not None])
            == args.targets for s in sessions), 300, "every session has every state")
        if not ok:
            raise SystemExit("soak: sessions did not get every target's state")
        await task.deferLater(reactor, args.warmup, lambda: None)
        target_pids = {t: p.pid for t, p in targets.items()}
        start = _snapshot(relay.pid, target_pids)
        started = time.monotonic()

        # commands: one per second from session 0, a random child of a random target
        commander = sessions[0]
        sent: list[str] = []
        paused: set[tuple[str, str]] = set()
        rng = random.Random(1)

        def command() -> None:
            target_id = rng.choice(target_ids)
            child = f"c{rng.randrange(args.children):02d}"
            if (target_id, child) in paused:
                name = "resume_child"
                paused.discard((target_id, child))
            else:
                name = rng.choice(["pause_child", "restart_child"])
                if name == "pause_child":
                    paused.add((target_id, child))
            command_id = f"soak-{len(sent) + 1}"
            sent.append(command_id)
            commander.sendMessage(json.dumps({
                "type": "command", "command_id": command_id, "correlation_id": None,
                "target_id": target_id, "command": name,
                "target": {"child_path": f"/root/{child}"}, "reason": "soak",
                "confirmed": False}).encode())

        loop = task.LoopingCall(command)
        loop.clock = reactor
        loop.start(1.0 / args.command_rate, now=False)
        await task.deferLater(reactor, args.minutes * 60, lambda: None)
        loop.stop()
        duration = time.monotonic() - started
        await _until(lambda: all(c in commander.results for c in sent), 120,
                     "every command answered")

        # the end: each target's newest sequence, then every session caught up to it
        last = {}
        for target_id in target_ids:
            last[target_id] = await deferToThread(
                _ipc_last_sequence, os.path.join(workdir, f"{target_id}.sock"), target_id)
        await _until(lambda: all(s.tallies[t].last >= last[t] for s in sessions
                                 for t in target_ids), 120, "sessions caught up")
        end = _snapshot(relay.pid, target_pids)

        emitted = delivered = dropped = unaccounted = duplicates = 0
        worst: list[Any] = []
        for index, s in enumerate(sessions):
            for target_id in target_ids:
                t = s.tallies[target_id]
                base = t.first_state_max or 0
                window = [q for q in t.seqs if base < q <= last[target_id]]
                distinct = len(set(window))
                duplicates += len(window) - distinct
                e = last[target_id] - base
                missing = e - distinct - t.dropped_events
                emitted += e
                delivered += distinct
                dropped += t.dropped_events
                if missing:
                    unaccounted += abs(missing)
                    worst.append({"session": index, "target": target_id, "emitted": e,
                                  "delivered": distinct, "dropped": t.dropped_events})
        terminal = accepted = 0
        conn = sqlite3.connect(config["audit"]["path"])
        try:
            rows = conn.execute("SELECT command_id, result FROM audit WHERE command_id LIKE "
                                "'soak-%'").fetchall()
        finally:
            conn.close()
        by_command: dict[str, set[str]] = {}
        for command_id, result in rows:
            by_command.setdefault(command_id, set()).add(result)
        for command_id in sent:
            results = by_command.get(command_id, set())
            accepted += "accepted" in results or "rejected" in results
            terminal += bool(results & {"completed", "failed", "rejected"})
        statuses: dict[str, int] = {}
        for result in commander.results.values():
            statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        hours = duration / 3600.0
        target_growth = {t: end["_rss"][t] - start["_rss"][t] for t in target_ids}
        return {
            "benchmark": "soak",
            "minutes": round(duration / 60, 2),
            "warmup_seconds": args.warmup,
            "targets": args.targets, "processes_per_target": 1,
            "children_per_target": args.children, "crash_every_seconds": args.crash_seconds,
            "sessions": args.sessions, "command_rate_per_s": args.command_rate,
            "target_rings": {"events": args.event_ring, "logs": args.log_ring},
            "relay": {
                "rss_kib_start": start["relay_rss_kib"], "rss_kib_end": end["relay_rss_kib"],
                "rss_growth_mib_per_hour": round(
                    (end["relay_rss_kib"] - start["relay_rss_kib"]) / 1024 / hours, 2),
                "fds_start": start["relay_fds"], "fds_end": end["relay_fds"],
                "fd_drift": end["relay_fds"] - start["relay_fds"],
            },
            "targets_total": {
                "rss_kib_start": start["targets_rss_kib_total"],
                "rss_kib_end": end["targets_rss_kib_total"],
                "rss_kib_max_end": end["targets_rss_kib_max"],
                "max_rss_growth_mib_per_hour": round(
                    max(target_growth.values()) / 1024 / hours, 2),
                "mean_rss_growth_mib_per_hour": round(
                    sum(target_growth.values()) / len(target_growth) / 1024 / hours, 2),
                "fds_start": start["targets_fds_total"], "fds_end": end["targets_fds_total"],
                "fd_drift": end["targets_fds_total"] - start["targets_fds_total"],
            },
            "events": {"emitted": emitted, "delivered": delivered, "dropped": dropped,
                       "unaccounted": unaccounted, "duplicates": duplicates,
                       "per_session_target_pairs": len(sessions) * len(target_ids),
                       "worst": worst[:5]},
            "commands": {"sent": len(sent), "answered": len(commander.results),
                         "statuses": statuses, "audited_accepted": accepted,
                         "audited_final": terminal, "unaudited": len(sent) - terminal},
            "sessions_closed": sum(1 for s in sessions if s.closed),
            "connection_states_seen": sessions[0].connection_states,
        }
    finally:
        for proc in reversed(processes):
            _stop(proc)


def registration_blast(rounds: int, targets: int, workdir: str) -> dict[str, Any]:
    """Is the relay's RSS growth under a registration blast a leak? ``rounds`` times,
    ``targets`` registrations (the same ids: heartbeats) sent over 32 concurrent
    connections; the relay's RSS after every round. A leak grows every round; a working set
    levels off after the first."""
    import threading

    import yaml
    from relay_faketarget import registration_payload
    from relay_helpers import config_dict, make_pki

    pki = make_pki(workdir)
    port = _free_port()
    config = config_dict(workdir, pki, listen={"bind": f"127.0.0.1:{port}"},
                         limits={"max_targets": targets + 10,
                                 "max_registration_connections": 128})
    with open(os.path.join(workdir, "relay.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    relay = _spawn([TWISTD, "-n", "--pidfile=", "--logfile=-", "supervisor-relay",
                    "--config", os.path.join(workdir, "relay.yaml")],
                   os.path.join(workdir, "relay.log"))
    try:
        path = config["registration"]["listen_path"]
        _wait(lambda: _port_open(port) or relay.poll() is not None, 60, "relay listening")
        lines = [json.dumps(registration_payload(f"t{i:05d}", os.path.join(
            workdir, f"t{i:05d}.sock"), 120)).encode() + b"\n" for i in range(targets)]
        rss = [rss_kib(relay.pid)]
        failures = 0

        def worker(chunk: list[bytes]) -> None:
            nonlocal failures
            for line in chunk:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(path)
                    s.sendall(line)
                    if b'"ok":true' not in s.recv(4096):
                        failures += 1

        started = time.monotonic()
        for _ in range(rounds):
            threads = [threading.Thread(target=worker, args=(lines[i::32],))
                       for i in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rss.append(rss_kib(relay.pid))
        return {"benchmark": "registration_blast", "targets": targets, "rounds": rounds,
                "registrations": rounds * targets, "failures": failures,
                "seconds": round(time.monotonic() - started, 1),
                "relay_rss_kib_after_each_round": rss, "relay_fds_end": fds(relay.pid)}
    finally:
        _stop(relay)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("SOAK_MINUTES", 10)))
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--crash-seconds", type=float, default=60.0)
    parser.add_argument("--command-rate", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--event-ring", type=int, default=256,
                        help="targets' observability.event_journal_capacity")
    parser.add_argument("--log-ring", type=int, default=1024,
                        help="targets' observability.log_journal_capacity")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--registration-blast", type=int, metavar="ROUNDS", default=0,
                        help="instead of the soak: ROUNDS registration blasts of --targets "
                             "targets, relay RSS after each (is blast growth a leak?)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="soak", dir="/tmp"))
    if args.registration_blast:
        try:
            print(json.dumps(registration_blast(args.registration_blast, args.targets,
                                                workdir), sort_keys=True))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    from twisted.internet import defer, task

    result: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        result.update(await soak(args, workdir))

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            sys.stderr.write(f"soak: logs kept in {workdir}\n")
    print(json.dumps(result, sort_keys=True))
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
