"""The fleet view of the target list, fed synthetic §3 messages whose ``target_list`` entries
carry ``host_id`` (as a fleet gateway sends them) through ``window.__dashboard.ingest`` on a
page served by a real relay (``?offline=1``): host groups, collapse, failed counts, search,
the fleet summary, a virtual list of 10,000 targets, and one relay without hosts."""

from __future__ import annotations

from playwright.sync_api import Page, expect

import synthetic as syn
from conftest import ingest, new_page, screenshot


def fleet_list(hosts: dict[str, list[tuple[str, str]]]) -> dict:
    """A target_list of `host -> [(target, connection_state)]`, ids `<host>/<target>`."""
    return {"type": "target_list", "targets": [
        {"target_id": f"{host}/{tid}", "host_id": host, "display_name": f"{tid} on {host}",
         "registration_state": "active", "connection_state": cs, "supported_commands": []}
        for host, targets in hosts.items() for tid, cs in targets]}


TWO_HOSTS = {
    "edge-01": [("payments", "connected"), ("orders", "connected")],
    "edge-02": [("payments", "unavailable"), ("billing", "unavailable")],
}


def rows(page: Page):
    return page.locator("#target-list li.row")


def row_keys(page: Page) -> list[str]:
    return page.locator("#target-list li.row button").evaluate_all("bs => bs.map(b => b.dataset.rowKey)")


def header(page: Page, host: str):
    return page.locator(f'#target-list button.host-group[data-host-id="{host}"]')


def test_two_hosts_grouped_collapsed_counted_and_searched(browser, static_relay, certs):
    context, page = new_page(browser, static_relay, certs)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    state = syn.demo_state("edge-01/payments", "payments on edge-01")  # one failed, one quarantined child
    ingest(page, [syn.server_hello(), fleet_list(TWO_HOSTS), state])
    assert row_keys(page) == ["host:edge-01", "edge-01/payments", "edge-01/orders",
                              "host:edge-02", "edge-02/payments", "edge-02/billing"]
    expect(header(page, "edge-01").locator(".badge.count")).to_have_text("2 targets")
    expect(header(page, "edge-01").locator(".badge.failed")).to_have_text("2 failed")
    expect(header(page, "edge-01").locator(".badge.cs-unavailable")).to_be_hidden()
    expect(header(page, "edge-02").locator(".badge.failed")).to_have_text("2 failed")
    expect(header(page, "edge-02").locator(".badge.cs-unavailable")).to_have_text("host unavailable")
    expect(page.locator("#fleet-summary")).to_be_visible()
    expect(page.locator("#fleet-hosts")).to_have_text("2 · 1 unavailable")
    expect(page.locator("#fleet-states .badge")).to_have_text(["connected 2", "unavailable 2"])
    expect(page.locator("#fleet-health")).to_have_text("2 failed children in 1 targets")
    screenshot(page, "fleet-two-hosts-en.png")

    # collapse by click, expand by keyboard; the choice is remembered across a reload
    header(page, "edge-02").click()
    expect(header(page, "edge-02")).to_have_attribute("aria-expanded", "false")
    assert row_keys(page) == ["host:edge-01", "edge-01/payments", "edge-01/orders", "host:edge-02"]
    page.reload()
    page.wait_for_function("window.__dashboard !== undefined")
    ingest(page, [syn.server_hello(), fleet_list(TWO_HOSTS), state])
    assert row_keys(page) == ["host:edge-01", "edge-01/payments", "edge-01/orders", "host:edge-02"]
    header(page, "edge-02").focus()
    page.keyboard.press("ArrowRight")
    expect(rows(page)).to_have_count(6)
    expect(header(page, "edge-02")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(page.locator('#target-list button[data-row-key="edge-02/payments"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator('#target-list button[data-row-key="edge-02/payments"]')).to_have_attribute("aria-pressed", "true")

    # the search covers every host; a collapsed host shows its matches
    header(page, "edge-01").click()
    page.fill("#target-search", "payments")
    expect(rows(page)).to_have_count(4)
    assert row_keys(page) == ["host:edge-01", "edge-01/payments", "host:edge-02", "edge-02/payments"]
    expect(header(page, "edge-01").locator(".badge.count")).to_have_text("1 of 2 targets")
    page.fill("#target-search", "edge-02")
    expect(rows(page)).to_have_count(3)
    page.fill("#target-search", "billing ON EDGE")
    expect(rows(page)).to_have_count(2)
    page.fill("#target-search", "no such target")
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#no-target-matches")).to_be_visible()
    page.fill("#target-search", "")
    expect(rows(page)).to_have_count(4)

    # both languages
    page.select_option("#lang-select", "zh")
    expect(header(page, "edge-02").locator(".badge.cs-unavailable")).to_have_text("主机不可用")
    expect(page.locator("#fleet-hosts")).to_have_text("2 台 · 1 台不可用")
    screenshot(page, "fleet-two-hosts-zh.png")
    assert page.page_errors == []
    context.close()


def test_ten_thousand_targets_on_a_thousand_hosts_stay_a_small_dom(offline_dashboard: Page):
    page = offline_dashboard
    hosts = {f"host-{h:04d}": [(f"t{i}", "unavailable" if h % 100 == 7 else "connected")
                               for i in range(10)] for h in range(1000)}
    ingest(page, [syn.server_hello(), fleet_list(hosts)])
    expect(page.locator("#fleet-hosts")).to_have_text("1000 · 10 unavailable")
    expect(page.locator("#target-list")).to_have_class("target-list virtual")
    count = rows(page).count()
    assert 0 < count < 200, count
    target_list = page.locator("#target-list")
    assert target_list.evaluate("el => el.scrollHeight") >= 11_000 * 76, "spacers keep the full height"
    # scroll through in steps, as a wheel would: the DOM stays bounded all the way down
    page.evaluate("() => window.__dashboard.nextFrame()")
    for fraction in (0.25, 0.5, 0.75, 1.0):
        target_list.evaluate("(el, f) => { el.scrollTop = f * (el.scrollHeight - el.clientHeight); }", fraction)
        page.evaluate("() => window.__dashboard.nextFrame()")
        count = rows(page).count()
        assert 0 < count < 200, (fraction, count)
    last = page.locator('#target-list button[data-row-key="host-0999/t9"]')
    expect(last).to_be_visible()
    clipped = page.locator("#target-list li.row button").evaluate_all(
        "bs => bs.filter(b => b.scrollHeight > b.clientHeight + 1).map(b => b.dataset.rowKey)")
    assert clipped == [], "every row fits the fixed row height"
    screenshot(page, "fleet-10000-end.png")
    last.click()
    expect(last).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#topology-target")).to_contain_text("t9 on host-0999")
    # a new target_list changes a visible row in place, keyed by target id
    handle = last.element_handle()
    hosts["host-0999"][9] = ("t9", "reconnecting")
    ingest(page, [fleet_list(hosts)])
    expect(last.locator(".badge.cs")).to_have_text("reconnecting")
    assert handle.evaluate("b => b.isConnected"), "the row was updated, not rebuilt"
    # keyboard: Home goes to the top of the list, scrolling there
    last.focus()
    page.keyboard.press("Home")
    expect(header(page, "host-0000")).to_be_focused()
    assert target_list.evaluate("el => el.scrollTop") == 0
    assert rows(page).count() < 200
    # the search narrows 10,000 targets to the matches
    page.fill("#target-search", "host-0500/")
    expect(rows(page)).to_have_count(11)
    screenshot(page, "fleet-10000-targets.png")


def test_without_host_id_no_groups_and_no_summary(offline_dashboard: Page):
    page = offline_dashboard
    ingest(page, syn.demo_session())
    assert row_keys(page) == [syn.TARGET, "orders-worker-b"]
    expect(page.locator("#target-list .host-group")).to_have_count(0)
    expect(page.locator("#fleet-summary")).to_be_hidden()
    expect(page.locator("#target-search")).to_be_hidden()
    expect(page.locator("#target-list")).to_have_class("target-list")
    expect(page.locator("#target-list li.spacer")).to_have_count(2)
    for spacer in page.locator("#target-list li.spacer").all():
        expect(spacer).to_be_hidden()


def test_fleet_view_fits_a_phone(browser, static_relay, certs):
    context, page = new_page(browser, static_relay, certs, width=390, height=844)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    hosts = {f"host-{h:03d}.example.internal": [(f"target-with-a-long-name-{i}", "connected")
                                                for i in range(3)] for h in range(100)}
    ingest(page, [syn.server_hello(), fleet_list(hosts)])
    expect(page.locator("#target-list")).to_have_class("target-list virtual")
    expect(header(page, "host-000.example.internal")).to_be_visible()
    for selector in ["#fleet-summary", "#target-search", "#target-list"]:
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert rows(page).count() < 200
    screenshot(page, "fleet-390-en-light.png")
    assert page.page_errors == []
    context.close()
