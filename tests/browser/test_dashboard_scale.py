"""Client behaviour with synthetic data fed through ``window.__dashboard.ingest`` on a page
served by a real relay (``?offline=1``: no session): virtual timeline, live follow, large
trees, remembered positions, keyboard use and the phone layout."""

from __future__ import annotations

import re

import pytest

from playwright.sync_api import Page, expect

import synthetic as syn
from conftest import ingest, new_page, screenshot

T = syn.TARGET


def session(page: Page, state: dict | None = None) -> None:
    ingest(page, [syn.server_hello(), syn.target_list((T, "payments worker a", "connected")),
                  state or syn.demo_state()])


def events(start: int, count: int, path: str = "/root/invoice_writer") -> list[dict]:
    return [syn.event(T, start + i, "child_running", path) for i in range(count)]


def test_timeline_renders_only_visible_rows(offline_dashboard: Page):
    page = offline_dashboard
    session(page)
    ingest(page, events(100, 10_000))
    # 10,000 events fill the per-target event buffer: the 7 replayed events are evicted.
    expect(page.locator("#row-count")).to_have_text("10002 of 10002 rows")
    rendered = page.locator("#timeline .tl-row").count()
    assert 0 < rendered < 60, rendered
    # Following: the newest row is on screen.
    expect(page.locator("#timeline .tl-row .tl-seq", has_text=re.compile(r"^ev 10099$"))).to_be_visible()
    # Scrolling to the top renders the first rows instead, still a small window.
    page.locator("#timeline").evaluate("el => { el.scrollTop = 0; }")
    expect(page.locator("#timeline .tl-row .tl-seq", has_text=re.compile(r"^ev 100$"))).to_be_visible()
    assert page.locator("#timeline .tl-row").count() < 60


def test_live_follow_pauses_when_scrolled_up_and_resumes(offline_dashboard: Page):
    page = offline_dashboard
    session(page)
    ingest(page, events(100, 500))
    timeline = page.locator("#timeline")
    expect(page.locator("#follow-state")).to_have_text("Live: following new rows")
    timeline.hover()
    page.mouse.wheel(0, -2000)
    expect(page.locator("#follow-resume")).to_be_visible()
    top = timeline.evaluate("el => el.scrollTop")
    ingest(page, events(600, 50))
    expect(page.locator("#follow-state")).to_have_text("Paused: 50 new rows below")
    assert timeline.evaluate("el => el.scrollTop") == top, "a paused timeline does not move"
    page.click("#follow-resume")
    expect(page.locator("#follow-resume")).to_be_hidden()
    expect(page.locator("#timeline .tl-row .tl-seq", has_text=re.compile(r"^ev 649$"))).to_be_visible()


def test_dropped_counts_are_shown(offline_dashboard: Page):
    page = offline_dashboard
    session(page)
    expect(page.locator("#dropped")).to_be_hidden()
    ingest(page, [{"type": "dropped_count", "target_id": T, "dropped_event_count": 17,
                   "dropped_log_count": 3}])
    expect(page.locator("#dropped")).to_have_text("Dropped: 17 events, 3 logs")
    expect(page.locator("#target-list .badge.dropped")).to_have_text("dropped 17/3")


def test_two_hundred_children_search_and_failed_only(offline_dashboard: Page):
    page = offline_dashboard
    session(page, syn.wide_state(T, 200))
    nodes = page.locator("#topology-svg g.node")
    expect(nodes).to_have_count(201)
    expect(page.locator("#count-failed")).to_have_text(str(sum(1 for i in range(200) if syn.STATES[i % 9] == "failed")))
    page.fill("#node-search", "worker 007")
    expect(page.locator("#topology-svg g.node.match")).to_have_count(1)
    page.press("#node-search", "Enter")
    expect(page.locator("#node-detail")).to_contain_text("/root/worker_007")
    page.fill("#node-search", "")
    page.check("#failed-only")
    failed = page.locator("#topology-svg g.node.st-failed")
    expect(page.locator("#topology-svg g.node.dim")).to_have_count(201 - failed.count())
    expect(page.locator("#topology-svg g.node.st-failed.dim")).to_have_count(0)
    screenshot(page, "topology-200-children.png")


def test_dragged_node_position_survives_reload_and_relayout_resets_it(browser, static_relay, certs):
    context, page = new_page(browser, static_relay, certs)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    session(page)
    heartbeat = page.locator('#topology-svg g.node[data-path="/root/heartbeat"]')
    before = heartbeat.get_attribute("transform")
    box = heartbeat.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 90, steps=8)
    page.mouse.up()
    moved = heartbeat.get_attribute("transform")
    assert moved != before
    page.reload()
    page.wait_for_function("window.__dashboard !== undefined")
    session(page)
    expect(page.locator('#topology-svg g.node[data-path="/root/heartbeat"]')).to_have_attribute("transform", moved)
    page.click("#relayout")
    expect(page.locator('#topology-svg g.node[data-path="/root/heartbeat"]')).to_have_attribute("transform", before)
    assert page.page_errors == []
    context.close()


def test_keyboard_walks_the_tree_and_the_timeline(offline_dashboard: Page):
    page = offline_dashboard
    session(page)
    page.focus("#topology-svg")
    page.keyboard.press("Home")
    expect(page.locator("#node-detail")).to_contain_text("root supervisor")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#node-detail")).to_contain_text("/root/invoice_writer")
    expect(page.locator("#cmd-path")).to_have_value("/root/invoice_writer")
    page.focus("#timeline")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#timeline .tl-row.active")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page.locator("#row-detail")).to_be_visible()
    expect(page.locator("#row-detail-body")).to_contain_text('"target_id"')
    # Tabs follow the arrow keys.
    page.focus("#tab-timeline")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-audit")).to_be_focused()
    expect(page.locator("#pane-audit")).to_be_visible()


def test_commands_offered_are_the_targets_supported_ones(offline_dashboard: Page):
    page = offline_dashboard
    ingest(page, [syn.server_hello(),
                  syn.target_list((T, "payments worker a", "connected"),
                                  commands=["pause_child", "resume_child", "shutdown_tree"]),
                  syn.demo_state()])
    options = page.locator("#cmd-command option")
    expect(options).to_have_count(3)
    assert options.evaluate_all("os => os.map(o => o.value)") == ["pause_child", "resume_child", "shutdown_tree"]
    page.select_option("#cmd-command", "shutdown_tree")
    expect(page.locator("#cmd-path")).to_be_disabled()
    expect(page.locator("#cmd-hint")).to_have_text("Needs confirmation.")


def test_phone_width_has_no_horizontal_scroll(browser, static_relay, certs):
    context, page = new_page(browser, static_relay, certs, width=390, height=844)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    session(page)
    ingest(page, events(100, 40))
    expect(page.locator("#topology-svg g.node")).to_have_count(11)
    for selector in ["#target-list", "#command-form", "#node-detail", "#timeline"]:
        expect(page.locator(selector)).to_be_attached()
        box = page.locator(selector).bounding_box()
        assert box and box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= 390, (selector, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    OUT = screenshot(page, "dashboard-390-en-light.png")
    page.screenshot(path=str(OUT.with_name("dashboard-390-en-light-full.png")), full_page=True)
    context.close()


@pytest.mark.parametrize("width,height", [(1024, 768), (1280, 720)])
def test_the_layout_is_usable_from_1024x768(browser, static_relay, certs, width, height):
    context, page = new_page(browser, static_relay, certs, width=width, height=height)
    page.goto(static_relay.origin + "/?offline=1")
    page.wait_for_function("window.__dashboard !== undefined")
    session(page)
    ingest(page, events(100, 200))
    expect(page.locator("#topology-svg g.node")).to_have_count(11)
    one_line = page.locator("#relay-status").bounding_box()["height"] + 24
    assert page.locator(".topbar").bounding_box()["height"] <= one_line, "the header does not wrap"
    head = page.locator(".topology .panel-head").bounding_box()["height"]
    assert head < 1.6 * page.locator("#fit-view").bounding_box()["height"], "the tree's toolbar does not wrap"
    rows = page.evaluate("() => Math.floor(document.getElementById('timeline').clientHeight / 26)")
    assert rows >= 9, rows
    scale = float(re.search(r"scale\(([\d.]+)\)", page.locator("#topology-svg g.viewport").get_attribute("transform")).group(1))
    assert scale >= 0.7, "tree labels stay readable"
    # the operator gives the timeline more room: the split moves with the keyboard and stays
    page.focus("#split")
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    more = page.evaluate("() => Math.floor(document.getElementById('timeline').clientHeight / 26)")
    assert more > rows, (rows, more)
    screenshot(page, f"dashboard-{width}x{height}-en-light.png")
    page.reload()
    page.wait_for_function("window.__dashboard !== undefined")
    expect(page.locator("#split")).to_have_attribute("aria-valuenow", "34")
    context.close()


def test_a_live_stream_leaves_the_control_form_alone(offline_dashboard: Page):
    page = offline_dashboard
    session(page)
    page.locator('#topology-svg g.node[data-path="/root/invoice_writer"]').click()
    page.select_option("#cmd-command", "pause_child")
    page.focus("#cmd-command")
    page.evaluate("() => { window.__options = [...document.querySelectorAll('#cmd-command option')]; }")
    for n in range(5):  # events and state deltas, each rendered
        ingest(page, events(1000 + 10 * n, 10) + [{"type": "state_delta", "target_id": T, "delta": {
            "runtime_state": [{**syn.runtime("/root/flaky_fetcher", "failed" if n % 2 else "restarting")}]}}])
    expect(page.locator("#cmd-command")).to_be_focused()
    assert page.evaluate("() => [...document.querySelectorAll('#cmd-command option')]"
                         ".every((o, i) => o === window.__options[i])"), "the options were rebuilt"
    expect(page.locator("#cmd-command")).to_have_value("pause_child")
    page.fill("#cmd-reason", "half typed")
    ingest(page, events(2000, 10))
    expect(page.locator("#cmd-reason")).to_be_focused()
    expect(page.locator("#cmd-reason")).to_have_value("half typed")
    expect(page.locator("#count-failed")).to_have_text("1")
