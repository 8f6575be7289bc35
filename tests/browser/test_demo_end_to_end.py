"""Three ends, as `make demo` runs them: `twistd supervisor-relay` and `twistd
supervisor-target` with the configs from `etc/` (paths and port moved into a private folder so
a running demo is not disturbed), and the dashboard in Chromium with the operator certificate."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conftest import OPERATOR, ROOT, TWISTD, Proc, new_page, port_open, screenshot, wait_for
from tests.demo_configs import write_demo_configs

# `make screenshot` copies this picture to docs/images/dashboard.png for the README.
SCREENSHOT = "dashboard.png"
README_PICTURE = ROOT / "docs" / "images" / "dashboard.png"


class DemoStack:
    """The demo relay and target as twistd subprocesses."""

    def __init__(self, run_dir: Path, certs) -> None:
        relay_config, target_config, self.port = write_demo_configs(run_dir, certs)
        self.origin = f"https://localhost:{self.port}"
        self.ipc_path = run_dir / "payments-worker-a.sock"
        self.relay = Proc("relay", [TWISTD, "-n", "supervisor-relay", "--config", str(relay_config)], run_dir)
        self.target = Proc("target", [TWISTD, "-n", "supervisor-target", "--config", str(target_config)], run_dir)

    def start(self) -> None:
        self.relay.start()
        wait_for(lambda: port_open(self.port) or not self.relay.alive(), 20, "relay listening")
        assert self.relay.alive(), self.relay.tail()
        self.target.start()
        wait_for(lambda: self.ipc_path.exists() or not self.target.alive(), 20, "target IPC socket")
        assert self.target.alive(), self.target.tail()

    def stop(self) -> None:
        self.target.stop()
        self.relay.stop()


@pytest.fixture
def demo(certs, request):
    run_dir = Path(tempfile.mkdtemp(prefix="e2e-", dir="/tmp"))
    stack = DemoStack(run_dir, certs)
    stack.start()
    yield stack
    stack.stop()
    assert not stack.ipc_path.exists(), "the target removed its socket"
    shutil.rmtree(run_dir, ignore_errors=True)


def node(page: Page, path: str):
    return page.locator(f'#topology-svg g.node[data-path="{path}"]')


def test_the_demo_flow_end_to_end(browser, demo, certs):
    readme_picture = README_PICTURE.read_bytes()
    context, page = new_page(browser, demo, certs)
    page.goto(demo.origin + "/")
    expect(page.locator("#relay-status")).to_have_class("status st-established")

    # the target appears, and its tree shows every state the demo sets up
    item = page.locator('#target-list button[data-target-id="payments-worker-a"]')
    expect(item).to_contain_text("payments worker a")
    expect(item.locator(".badge.cs")).to_have_text("connected")
    expect(node(page, "/root/invoice_writer")).to_have_class(re.compile(r"\bst-running\b"))
    expect(node(page, "/root/report_builder")).to_have_class(re.compile(r"\bst-paused\b"))
    expect(node(page, "/root/legacy_sync")).to_have_class(re.compile(r"\bst-quarantined\b"))
    expect(node(page, "/root/ticker")).to_have_class(re.compile(r"\bst-running\b"))
    expect(node(page, "/root/ledger/reconciler")).to_have_count(1)
    expect(page.locator("#topology-svg path.dep")).to_have_count(1)
    # the flaky child fails on purpose and is restarting with backoff
    expect(node(page, "/root/flaky_exporter")).to_have_class(re.compile(r"\bst-(failed|restarting)\b"),
                                                             timeout=20_000)
    node(page, "/root/invoice_writer").click()
    expect(page.locator("#node-detail")).to_contain_text("healthy")

    # the failed node's detail shows its failure
    node(page, "/root/flaky_exporter").click()
    detail = page.locator("#node-detail")
    expect(detail).to_contain_text("/root/flaky_exporter")
    expect(detail).to_contain_text("RuntimeError: simulated failure")
    expect(detail).to_contain_text("backoff")
    screenshot(page, SCREENSHOT)

    # an error filter narrows the timeline
    expect(page.locator(".tl-row.sev-info").first).to_be_visible()
    page.check('#f-severities input[value="error"]')
    expect(page.locator(".tl-row.sev-error", has_text="child_failed").first).to_be_visible()
    expect(page.locator(".tl-row").filter(has_not=page.locator(".tl-sev", has_text="error"))).to_have_count(0)
    page.click("#f-clear")

    # a pause with a reason succeeds, and its audit record appears
    node(page, "/root/invoice_writer").click()
    expect(page.locator("#cmd-path")).to_have_value("/root/invoice_writer")
    page.select_option("#cmd-command", "pause_child")
    page.fill("#cmd-reason", "end-to-end check")
    page.click("#cmd-send")
    expect(page.locator(".toast.ok", has_text="completed")).to_be_visible()
    expect(node(page, "/root/invoice_writer")).to_have_class(re.compile(r"\bst-paused\b"))
    page.click("#tab-audit")
    record = page.locator("#audit-body tr", has_text="pause_child").filter(has_text="completed").first
    expect(record).to_be_visible()
    expect(record).to_contain_text("end-to-end check")
    expect(page.locator("#identity-principal")).to_have_text(OPERATOR)
    assert page.page_errors == [], page.page_errors
    context.close()
    assert README_PICTURE.read_bytes() == readme_picture, "tests leave the tree clean"
