"""The dashboard against a real relay and a real target (both ``twistd`` subprocesses),
in Chromium with the operator's client certificate."""

from __future__ import annotations

import re
import signal

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from conftest import GRANTED, OPERATOR, TARGET_ID, new_page, screenshot

NODES = ["/root", "/root/steady", "/root/flaky", "/root/printer", "/root/spare",
         "/root/nested", "/root/nested/db", "/root/nested/api"]


def node(page: Page, path: str):
    return page.locator(f'#topology-svg g.node[data-path="{path}"]')


def sent_of_type(page: Page, kind: str) -> list[dict]:
    return page.evaluate("k => window.__dashboard.sent.filter(m => m.type === k)", kind)


def send_command(page: Page, path: str, command: str, reason: str) -> None:
    node(page, path).click()
    expect(page.locator("#cmd-path")).to_have_value(path)
    page.select_option("#cmd-command", command)
    page.fill("#cmd-reason", reason)
    page.click("#cmd-send")


def test_page_needs_the_operator_certificate(browser, relay, certs):
    context, page = new_page(browser, relay, None)
    with pytest.raises(PlaywrightError, match=r"ERR_"):
        page.goto(relay.origin + "/")
    context.close()
    context, page = new_page(browser, relay, certs)
    page.goto(relay.origin + "/")
    expect(page.locator("#relay-status")).to_have_class("status st-established")
    hello = sent_of_type(page, "client_hello")
    assert len(hello) == 1 and hello[0]["client_store_id"] and hello[0]["resume_cursor"] == {}
    expect(page.locator("#identity-fingerprint")).to_have_text(re.compile(r"^sha256:[0-9a-f]{12}…$"))
    context.close()


def test_targets_tree_and_states_appear(dashboard: Page):
    page = dashboard
    item = page.locator(f'#target-list button[data-target-id="{TARGET_ID}"]')
    expect(item).to_contain_text("demo target")
    expect(item.locator(".badge.cs")).to_have_text("connected")
    expect(page.locator("#count-targets")).to_have_text("1")
    for path in NODES:
        expect(node(page, path)).to_have_count(1)
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-running\b"))
    expect(node(page, "/root/flaky")).to_have_class(re.compile(r"\bst-(failed|restarting)\b"))
    expect(page.locator("#topology-svg path.dep")).to_have_count(1)
    node(page, "/root/flaky").click()
    expect(page.locator("#node-detail")).to_contain_text("/root/flaky")
    expect(page.locator("#node-detail")).to_contain_text("simulated failure")
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-running\b"))
    screenshot(page, "dashboard-1280x800-en-light.png")


def test_event_from_the_target_appears_in_the_timeline(dashboard: Page):
    page = dashboard
    page.fill("#f-type", "child_failed")
    row = page.locator(".tl-row.kind-event", has_text="child_failed /root/flaky").first
    expect(row).to_be_visible()
    expect(row).to_have_class(re.compile(r"\bsev-error\b"))
    expect(page.locator(".tl-row.kind-event").filter(has_not_text="child_failed")).to_have_count(0)
    page.wait_for_function(
        "() => window.__dashboard.sent.some(m => m.type === 'log_event_filter_conditions'"
        " && m.event_types.includes('child_failed'))")


def test_log_line_of_a_process_child_appears(dashboard: Page):
    page = dashboard
    page.fill("#f-path", "/root/printer")
    row = page.locator(".tl-row.kind-log", has_text="printer line").first
    expect(row).to_be_visible()
    expect(row.locator(".tl-detail")).to_contain_text("stream=stdout")


def test_pause_and_resume_a_child(dashboard: Page):
    page = dashboard
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-running\b"))
    send_command(page, "/root/steady", "pause_child", "maintenance window")
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-paused\b"))
    expect(page.locator(".toast.ok", has_text="completed")).to_be_visible()
    expect(page.locator("#node-detail .badge.lc")).to_have_text("paused")
    command = sent_of_type(page, "command")[0]
    assert command["command"] == "pause_child" and command["confirmed"] is False
    assert "requested_by" not in command and command["command_id"]
    send_command(page, "/root/steady", "resume_child", "maintenance done")
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-running\b"))
    # The principal comes back with the result; the audit tab lists both commands.
    expect(page.locator("#identity-principal")).to_have_text("CN=demo operator")
    page.click("#tab-audit")
    expect(page.locator("#audit-body tr", has_text="pause_child").filter(has_text="completed").first).to_be_visible()
    expect(page.locator("#audit-body tr", has_text="resume_child").first).to_be_visible()


def test_dangerous_command_needs_confirmation(dashboard: Page):
    page = dashboard
    send_command(page, "/root/spare", "remove_child", "no longer needed")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-command")).to_contain_text("remove_child")
    expect(page.locator("#confirm-target")).to_have_text(f"demo target ({TARGET_ID})")
    expect(page.locator("#confirm-path")).to_have_text("/root/spare")
    expect(page.locator("#confirm-reason")).to_have_text("no longer needed")
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert sent_of_type(page, "command") == []
    page.click("#cmd-send")
    expect(dialog).to_be_visible()
    page.click("#confirm-ok")
    expect(dialog).to_be_hidden()
    expect(node(page, "/root/spare")).to_have_count(0)
    (command,) = sent_of_type(page, "command")
    assert command["confirmed"] is True and command["target"]["child_path"] == "/root/spare"


def test_only_granted_commands_are_offered_and_the_principal_shows_at_once(dashboard: Page):
    page = dashboard
    # from server_hello: no command or audit record was needed to learn it
    expect(page.locator("#identity-principal")).to_have_text(OPERATOR)
    node(page, "/root/steady").click()
    offered = page.eval_on_selector_all("#cmd-command option", "os => os.map(o => o.value)")
    assert offered == GRANTED  # the target supports all seven; these are the granted ones


def test_refused_command_shows_its_error(dashboard: Page):
    page = dashboard
    node(page, "/root/steady").click()
    page.select_option("#cmd-command", "pause_child")
    page.click("#cmd-send")  # no reason: refused before sending
    expect(page.locator("#cmd-hint")).to_have_text("A reason is required.")
    assert sent_of_type(page, "command") == []
    # a command the form does not offer (not granted), sent as another client would
    page.evaluate("""() => {
        const d = window.__dashboard;
        const msg = { type: 'command', command_id: 'refused-1', correlation_id: null,
                      target_id: 'demo-target', command: 'quarantine_child',
                      target: { child_path: '/root/steady' }, reason: 'suspicious output',
                      confirmed: false };
        d.store.trackCommand(msg);
        d.connection.send(msg);
    }""")
    toast = page.locator(".toast.error", has_text="command_not_permitted")
    expect(toast).to_be_visible()
    expect(page.locator(".tl-row.kind-result", has_text="quarantine_child /root/steady → refused")).to_be_visible()
    page.click("#tab-diagnostics")
    expect(page.locator("#diag-body tr", has_text="command_not_permitted").first).to_be_visible()
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-running\b"))


def test_filters_narrow_the_timeline_and_reach_the_relay(dashboard: Page):
    page = dashboard
    expect(page.locator(".tl-row.sev-info").first).to_be_visible()
    page.check('#f-severities input[value="error"]')
    expect(page.locator(".tl-row.sev-error").first).to_be_visible()
    expect(page.locator(".tl-row").filter(has_not=page.locator(".tl-sev", has_text="error"))).to_have_count(0)
    page.wait_for_function(
        "() => window.__dashboard.sent.some(m => m.type === 'log_event_filter_conditions'"
        " && m.severities.length === 1 && m.severities[0] === 'error')")
    page.click("#f-clear")
    expect(page.locator(".tl-row.sev-info").first).to_be_visible()
    page.wait_for_function(
        "() => { const f = window.__dashboard.sent.filter(m => m.type === 'log_event_filter_conditions');"
        " return f.length >= 2 && f[f.length - 1].severities.length === 0; }")


def test_target_going_down_shows_unavailable_then_recovers(dashboard: Page, target):
    page = dashboard
    badge = page.locator(f'#target-list button[data-target-id="{TARGET_ID}"] .badge.cs')
    expect(badge).to_have_text("connected")
    target.stop(signal.SIGKILL)
    expect(badge).to_have_text(re.compile("unavailable|reconnecting|expired"))
    expect(page.locator("#topology-target")).to_contain_text(re.compile("unavailable|reconnecting|expired"))
    target.start()
    expect(badge).to_have_text("connected", timeout=30_000)
    expect(node(page, "/root/steady")).to_have_class(re.compile(r"\bst-(running|starting)\b"))
    page.click("#tab-diagnostics")
    expect(page.locator("#diag-body tr", has_text="target_unavailable").first).to_be_visible()


def test_relay_going_away_reconnects_with_backoff(dashboard: Page, relay):
    page = dashboard
    relay.stop()
    expect(page.locator("#relay-status")).to_have_class("status st-waiting")
    expect(page.locator("#relay-status-text")).to_contain_text("retrying")
    relay.start()
    expect(page.locator("#relay-status")).to_have_class("status st-established", timeout=30_000)
    expect(node(page, "/root/steady")).to_have_count(1)
    assert len(sent_of_type(page, "client_hello")) == 2


@pytest.mark.parametrize("lang,theme", [("en", "dark"), ("zh", "light"), ("zh", "dark")])
def test_language_and_theme_switch(dashboard: Page, lang, theme):
    page = dashboard
    expect(node(page, "/root/printer")).to_have_count(1)
    if lang == "zh":
        page.select_option("#lang-select", "zh")
        expect(page.locator("#targets-h")).to_have_text("目标")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator(f'#target-list button[data-target-id="{TARGET_ID}"] .badge.cs')).to_have_text("已连接")
    if theme == "dark":
        page.click("#theme-toggle")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        expect(page.locator("#theme-toggle")).to_have_attribute("aria-pressed", "true")
    node(page, "/root/flaky").click()
    screenshot(page, f"dashboard-1280x800-{lang}-{theme}.png")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", theme)
    expect(page.locator("#lang-select")).to_have_value(lang)
