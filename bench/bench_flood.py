"""Floods from one read-only session against an in-process relay on the real reactor: wss://
with client certificates, a fake target on a real Unix socket, the SQLite audit store.

(a) refused commands: the viewer (no grant) sends ``FLOOD_COMMANDS`` (2,000)
    ``shutdown_tree`` commands, each with a 50 KB manifest and a 4,000-character reason, as
    fast as it can; reported: audit rows and bytes (file plus WAL) written, and seconds until
    the relay answered the last one or closed the session.
(b) filter changes: the viewer sends ``FLOOD_FILTERS`` (200, then 20,000) filter changes, every
    other one widening the stream, then an operator's session sends one command; reported: the
    seconds from that command to its ``command_result``, and how many ``state`` reads the
    target served (its tree has ``FLOOD_CHILDREN``, 500, children, so a state is sizeable). Run once with the configured limits and once (``unlimited``) with the
    filter rate limit out of the way, to show what the refill bound alone does.

Prints one JSON object (and keeps it under bench/results/ like the other benchmarks).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "relay"))

from twisted.internet import defer, task  # noqa: E402

from bench._common import emit  # noqa: E402
from relay_faketarget import fixture  # noqa: E402
from relay_helpers import RelayHarness, make_pki  # noqa: E402
from supervisor.config.relay import LimitsConfig  # noqa: E402
from tests.waiting import eventually  # noqa: E402

COMMANDS = int(os.environ.get("FLOOD_COMMANDS", 2000))
FILTERS = [int(n) for n in os.environ.get("FLOOD_FILTERS", "200,20000").split(",")]
CHILDREN = int(os.environ.get("FLOOD_CHILDREN", 500))
MANIFEST = {"name": "payload", "command": ["/bin/true"], "env": {"PAD": "x" * 50_000}}


def _filter(index: int) -> dict[str, Any]:
    message = fixture("session.filter.json")
    message.update(target_ids=[], severities=["error"] if index % 2 else [])
    return message


def _audit_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in glob.glob(path + "*"))


async def _relay(pki: Any, **limits: Any) -> tuple[RelayHarness, str]:
    sockdir = os.path.realpath(tempfile.mkdtemp(prefix="fld", dir="/tmp"))
    relay = RelayHarness(sockdir, pki)
    relay.start(**({"limits": limits} if limits else {}))
    await relay.service.audit_ready
    return relay, sockdir


async def _bound(relay: RelayHarness, client: Any, target_id: str) -> Any:
    ws = await relay.session(client)
    await ws.hello()
    await ws.next("state", timeout=30, target_id=target_id)
    return ws


async def refused_flood(pki: Any) -> dict[str, Any]:
    relay, sockdir = await _relay(pki)
    try:
        target = relay.target(children={"worker": "running"})
        await relay.register(target)
        viewer = await _bound(relay, pki.viewer, target.target_id)
        path = relay.service.config.audit.path
        rows_before = len(await relay.service.audit.all_records())
        bytes_before = _audit_bytes(path)
        started = time.monotonic()
        message = fixture("session.command.json")
        for index in range(COMMANDS):
            message.update(command_id=f"flood-{index}", command="shutdown_tree",
                           confirmed=True, reason="r" * 4000,
                           target={"child_path": None, "child_manifest": MANIFEST})
            viewer.send(message)
        await eventually(lambda: viewer.closed_d.called
                         or len(viewer.of_type("error")) >= COMMANDS, 600, "answers")
        rows = len(await relay.service.audit.all_records()) - rows_before
        return {"commands_sent": COMMANDS, "audit_rows": rows,
                "audit_bytes": _audit_bytes(path) - bytes_before,
                "seconds": round(time.monotonic() - started, 3),
                "viewer_closed": viewer.close_code}
    finally:
        await relay.close()
        shutil.rmtree(sockdir, ignore_errors=True)


async def filter_flood(pki: Any, count: int, **limits: Any) -> dict[str, Any]:
    relay, sockdir = await _relay(pki, **limits)
    try:
        children = {"worker": "running", **{f"c{i}": "running" for i in range(CHILDREN)}}
        target = relay.target(children=children)
        await relay.register(target)
        admin = await _bound(relay, pki.operator, target.target_id)
        viewer = await _bound(relay, pki.viewer, target.target_id)
        await eventually(lambda: "logs.tail" in target.methods(), 30)
        states_before = target.methods().count("state")
        for index in range(count):
            viewer.send(_filter(index))
        admin.send({**fixture("session.command.json"), "command_id": "admin-1",
                    "target": {"child_path": "/root/worker"}})
        started = time.monotonic()
        result = await admin.next("command_result", timeout=600)
        latency = time.monotonic() - started
        if not limits and hasattr(LimitsConfig(), "filter_changes_burst"):
            # the rate-limited viewer is closed once the relay has read that far
            await eventually(lambda: viewer.closed_d.called, 120, "viewer closed")
        return {"filter_changes_sent": count, "command_seconds": round(latency, 3),
                "command_status": result["result"]["status"],
                "command_error": (result["result"].get("error") or {}).get("code"),
                "state_reads": target.methods().count("state") - states_before,
                "viewer_closed": viewer.close_code}
    finally:
        await relay.close()
        shutil.rmtree(sockdir, ignore_errors=True)


async def run(reactor: Any) -> None:
    pkidir = tempfile.mkdtemp(prefix="fldpki", dir="/tmp")
    try:
        pki = make_pki(pkidir)
        result: dict[str, Any] = {"refused_commands": await refused_flood(pki)}
        for count in FILTERS:
            result[f"filter_changes_{count}"] = await filter_flood(pki, count)
            if hasattr(LimitsConfig(), "filter_changes_burst"):  # a relay with flood limits
                result[f"filter_changes_{count}_unlimited"] = await filter_flood(
                    pki, count, filter_changes_burst=1_000_000)
        emit("flood", result)
    finally:
        shutil.rmtree(pkidir, ignore_errors=True)


def main(reactor: Any) -> defer.Deferred:
    return defer.ensureDeferred(run(reactor))


if __name__ == "__main__":
    task.react(main)
