"""The fleet in Chromium against real processes: a TLS nats-server, host relays a and b with
a target each and a gateway (tests/fleet/fleet_support.py); one dashboard session on the
gateway shows both hosts' targets, grouped by host."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterator

import pytest
import yaml
from playwright.sync_api import expect

from tests.fleet.fleet_support import GATEWAYS, LOCAL_TARGET, Fleet  # puts relay_helpers on the path
from relay_helpers import make_pki  # noqa: E402


@pytest.fixture
def browser_fleet() -> Iterator[Any]:
    """The fleet with its first gateway, whose public URL is its own port (the browser's
    origin must match it)."""
    root = os.path.realpath(tempfile.mkdtemp(prefix="fbe2e", dir="/tmp"))
    os.makedirs(os.path.join(root, "pki"))
    fleet = Fleet(root, make_pki(os.path.join(root, "pki")))
    gateway = fleet.gateways[GATEWAYS[0]]
    with open(gateway.config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["listen"]["public_url"] = f"wss://localhost:{gateway.https_port}/supervisor"
    with open(gateway.config, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_two_hosts_targets_in_one_chromium_session(browser, browser_fleet) -> None:
    gateway = browser_fleet.gateways[GATEWAYS[0]]
    origin = f"https://localhost:{gateway.https_port}"
    pki = browser_fleet.pki
    operator_cert = os.path.join(pki.directory, "operator.pem")
    operator_key = os.path.join(pki.directory, "operator-key.pem")
    pki.operator.write(operator_cert, operator_key)
    context = browser.new_context(ignore_https_errors=True, locale="en-US",
                                  viewport={"width": 1280, "height": 800},
                                  client_certificates=[{"origin": origin,
                                                        "certPath": operator_cert,
                                                        "keyPath": operator_key}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(origin + "/")
        expect(page.locator("#relay-status")).to_have_class("status st-established",
                                                            timeout=30_000)
        for host in ("a", "b"):
            expect(page.locator(f'#target-list button.host-group[data-host-id="{host}"]')
                   ).to_be_visible(timeout=30_000)
            expect(page.locator(f'#target-list button[data-row-key="{host}/{LOCAL_TARGET}"]')
                   ).to_be_visible(timeout=30_000)
        assert errors == [], errors
    finally:
        context.close()
