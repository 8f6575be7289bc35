"""Every IPC connect re-checks what registration checked: the socket path (a folder swapped
for a symlink after registration) and the uid of the process serving it (SO_PEERCRED)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from relay_faketarget import FakeTarget, registration_payload
from relay_helpers import eventually, open_to_nobody, register, register_as_nobody


def refused_count(relay, reason: str) -> float:
    value = relay.service.hub.metrics.registry.get_sample_value(
        "relay_ipc_connect_refused_total", {"reason": reason})
    return value or 0


def listed_state(ws) -> str | None:
    """The connection_state of the only target in the last target_list a session got."""
    lists = [m for m in ws.of_type("target_list") if m["targets"]]
    return lists[-1]["targets"][0]["connection_state"] if lists else None


def link_state(relay, target_id: str) -> str | None:
    link = relay.service.hub.links.get(target_id)
    return link.state if link is not None else None


@pytest_twisted.ensureDeferred
async def test_a_folder_swapped_for_a_symlink_after_registration_is_not_followed(relay):
    relay.start()
    folder = os.path.join(relay.sockdir, "run")
    os.mkdir(folder)
    target = FakeTarget(reactor, "payments-worker-a", os.path.join(folder, "t.sock")).start()
    relay.targets.append(target)
    outside = os.path.realpath(tempfile.mkdtemp(prefix="rlyout", dir="/tmp"))
    impostor = FakeTarget(reactor, "payments-worker-a", os.path.join(outside, "t.sock")).start()
    relay.targets.append(impostor)
    try:
        ack = await register(relay.registration_path,
                             registration_payload(target.target_id, target.path))
        assert ack["ok"] is True, ack
        # after registration, the folder becomes a symlink to a socket outside the prefix
        os.rename(folder, folder + ".moved")
        os.symlink(outside, folder)
        ws = await relay.session()
        await ws.hello()
        await eventually(lambda: link_state(relay, target.target_id) == "unavailable",
                         what="the link refuses the path")
        await eventually(lambda: refused_count(relay, "ipc_path_not_allowed") >= 2,
                         what="every attempt is checked")
        link = relay.service.hub.links[target.target_id]
        assert link.refusal is not None and link.refusal[0] == "ipc_path_not_allowed"
        assert outside in link.refusal[1]
        assert impostor.connections == [] and impostor.methods() == []
        assert not ws.of_type("state")
        await eventually(lambda: listed_state(ws) == "unavailable",
                         what="the dashboard's target list shows it")
        # the folder put back: the next attempt reaches the real target
        os.unlink(folder)
        os.rename(folder + ".moved", folder)
        await ws.next("state", target_id=target.target_id)
        assert link.state == "connected" and link.refusal is None
        assert impostor.methods() == []
    finally:
        if os.path.islink(folder):
            os.unlink(folder)
            os.rename(folder + ".moved", folder)
        await relay.close()
        shutil.rmtree(outside, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_a_socket_served_by_another_uid_than_the_registering_one_is_refused(relay):
    relay.start(registration={"permissions": "0666"})
    open_to_nobody(relay)
    # uid 65534 registers the id, but the process serving that path runs as root
    target = relay.target()
    ack = await deferToThread(register_as_nobody, relay.registration_path,
                              registration_payload(target.target_id, target.path))
    assert ack["ok"] is True, ack
    assert relay.service.registry.get(target.target_id).owner == "unix_uid:65534"
    ws = await relay.session()
    await ws.hello()
    await eventually(lambda: refused_count(relay, "ipc_peer_uid_mismatch") >= 2,
                     what="every attempt is checked")
    assert link_state(relay, target.target_id) == "unavailable"
    code, message = relay.service.hub.links[target.target_id].refusal
    assert code == "ipc_peer_uid_mismatch"
    assert "uid 0" in message and "unix_uid:65534" in message
    assert target.methods() == []  # not even hello: nothing was sent to it
    assert not ws.of_type("state")
    await eventually(lambda: listed_state(ws) == "unavailable",
                     what="the dashboard's target list shows it")


@pytest_twisted.ensureDeferred
async def test_the_registering_uid_serving_its_socket_is_connected(relay):
    if os.getuid() != 0:
        pytest.fail("runs as root like the refusal above, so only the uid differs")
    target = relay.target()
    relay.start()
    assert (await relay.register(target))["ok"] is True
    ws = await relay.session()
    await ws.hello()
    await ws.next("state", target_id=target.target_id)
    assert refused_count(relay, "ipc_peer_uid_mismatch") == 0
