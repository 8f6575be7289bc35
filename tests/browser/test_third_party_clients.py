"""Clients other than our dashboard, in Chromium with the operator certificate: a page from a
second origin (``listen.allowed_origins``), a client of the test's own served from
``dashboard.static_dir``, and our dashboard across a target restart (``instance_id``)."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Page, expect

from conftest import LOGS, OPERATOR, TARGET_ID, Relay, Target, new_page
from tests.demo_configs import free_port
from tests.waiting import wait_until

# A minimal §3 client: greets, records what it receives on the page, never reconnects.
CLIENT_JS = """\
const out = document.getElementById('out');
const url = new URLSearchParams(location.search).get('ws') || `wss://${location.host}/supervisor`;
const seen = [];
const ws = new WebSocket(url);
ws.onmessage = (ev) => {
  const msg = JSON.parse(ev.data);
  seen.push(msg.type);
  if (msg.type === 'server_hello') {
    document.body.dataset.principal = msg.principal;
    ws.send(JSON.stringify({ type: 'client_hello', client_store_id: 'third-party', resume_cursor: {} }));
  }
  if (msg.type === 'state') document.body.dataset.state = `${msg.target_id} ${msg.state.target.instance_id}`;
  out.textContent = seen.join(' ');
};
ws.onclose = (ev) => { document.body.dataset.closed = String(ev.code); };
"""

INDEX_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>third-party client</title>
<script type="module" src="/client.js"></script></head>
<body><h1>third-party client</h1><pre id="out"></pre></body></html>
"""


def write_client(folder: Path) -> Path:
    folder.mkdir()
    (folder / "index.html").write_text(INDEX_HTML)
    (folder / "client.js").write_text(CLIENT_JS)
    return folder


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def second_origin(run_dir) -> Iterator[str]:
    """The client's files served over plain HTTP on a second port: another origin."""
    folder = write_client(run_dir / "elsewhere")
    port = free_port()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{port}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def start_relay(run_dir: Path, certs, request, **kw) -> Relay:
    relay = Relay(run_dir, certs, **kw)
    relay.start()
    request.node.stash.setdefault(LOGS, []).append(relay)
    request.addfinalizer(relay.stop)
    return relay


@pytest.mark.parametrize("listed", [True, False])
def test_a_page_from_a_second_origin_opens_a_session_only_when_listed(
        browser, certs, run_dir, request, second_origin, listed):
    relay = start_relay(run_dir, certs, request,
                        allowed_origins=(second_origin,) if listed else ())
    context, page = new_page(browser, relay, certs)
    try:
        page.goto(f"{second_origin}/?ws=wss://localhost:{relay.port}/supervisor")
        if listed:
            expect(page.locator("body")).to_have_attribute("data-principal", OPERATOR)
            expect(page.locator("#out")).to_have_text(re.compile(r"^server_hello target_list"))
            assert page.locator("body").get_attribute("data-closed") is None
        else:
            expect(page.locator("body")).to_have_attribute("data-closed", "1006")
            assert page.locator("#out").text_content() == ""  # not even server_hello
            line = f"origin {second_origin} refused"
            wait_until(lambda: line in relay.log_path.read_text(errors="replace"), 10,
                       "the refusal logged with the origin")
    finally:
        context.close()


def test_a_client_from_static_dir_is_served_and_its_session_works(
        browser, certs, run_dir, request):
    folder = write_client(run_dir / "client")
    relay = start_relay(run_dir, certs, request, static_dir=folder)
    target = Target(run_dir, relay)
    target.start()
    request.node.stash[LOGS].append(target)
    request.addfinalizer(target.stop)
    context, page = new_page(browser, relay, certs)
    try:
        for path in ("/", "/targets/demo-target"):  # a client-side route gets index.html
            page.goto(relay.origin + path)
            expect(page.locator("h1")).to_have_text("third-party client")
            expect(page.locator("body")).to_have_attribute("data-principal", OPERATOR)
            expect(page.locator("body")).to_have_attribute(
                "data-state", re.compile(rf"^{TARGET_ID} i-[0-9a-f]+$"))
            assert page.locator("body").get_attribute("data-closed") is None
        assert page.page_errors == []
    finally:
        context.close()


def instance_of(page: Page) -> tuple[str | None, str | None]:
    """(instance in the last state, instance in the target list) as the dashboard holds them."""
    return tuple(page.evaluate(
        "id => { const t = window.__dashboard.store.targets.get(id);"
        " return [t.instanceId, t.info ? t.info.instance_id : null]; }", TARGET_ID))


def test_a_target_restart_shows_a_new_instance_and_its_events(dashboard: Page, target):
    page = dashboard
    page.fill("#f-type", "child_started")
    page.fill("#f-text", "child_started /root/steady")  # few enough rows to all be drawn
    started = page.locator(".tl-row.kind-event", has_text="child_started /root/steady")
    expect(started).to_have_count(1)
    wait_until(lambda: None not in instance_of(page), 15, "instance ids known")
    first, listed = instance_of(page)
    assert first == listed
    target.stop()
    target.start()
    wait_until(lambda: instance_of(page)[0] not in (None, first), 30, "a new instance")
    second, listed = instance_of(page)
    assert re.fullmatch(r"i-[0-9a-f]+", second) and second != first
    wait_until(lambda: instance_of(page)[1] == second, 15, "the target list names it")
    # the new process numbers its events from 1 again: they are shown, not taken as repeats
    expect(started).to_have_count(2)
    expect(page.locator(".tl-row.kind-event", has_text="child_started /root/steady").last
           ).to_contain_text("ev 1")
