"""The dashboard reading a target's on-disk history through the relay: scrolling the timeline
back past the live ring, the history search box, and a node's logs in its detail.

The target keeps only a few log records in its ring; one process child writes many more lines
than that at once, another keeps writing, so the first child's early lines exist only in the
history by the time the page opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Page, expect

from conftest import LOGS, TARGET_ID, Relay, Target, new_page, wait_for

RING = 40  # log records the target keeps in memory
BURST = 600  # lines the burst child writes, far more than the ring holds

HISTORY_TREE = f"""\
observability:
  log_journal_capacity: {RING}
  history:
    enabled: true
    path: history
    flush_interval_ms: 50
children:
  - name: burst
    kind: process
    command: ["/bin/sh", "-c", "i=1000; while [ $i -lt {1000 + BURST} ]; do echo burst line $i; i=$((i+1)); done; exec sleep 3600"]
  - name: chatter
    kind: process
    command: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo chatter line $i; sleep 0.05; done"]
"""


class HistoryTarget(Target):
    """The shared target, with the tree above in place of the demo tree."""

    def __init__(self, run_dir: Path, relay: Relay) -> None:
        super().__init__(run_dir, relay)
        config = run_dir / "target.yaml"
        registration = config.read_text().split("ipc:", 1)[1]
        config.write_text(HISTORY_TREE + "ipc:" + registration)

    def history_text(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted((self.run_dir / "history" / "logs").glob("*.ndjson")))


@pytest.fixture
def history_page(browser, relay, certs, run_dir, request) -> Iterator[Page]:
    target = HistoryTarget(run_dir, relay)
    target.start()
    request.node.stash.setdefault(LOGS, []).append(target)
    last = f"burst line {1000 + BURST - 1}"
    # every burst line on disk, and the ring long past them, before the page opens
    wait_for(lambda: last in target.history_text()
             and target.history_text().count("chatter line") > 2 * RING, 30, "history written")
    context, page = new_page(browser, relay, certs)
    page.goto(relay.origin + "/")
    expect(page.locator("#relay-status")).to_have_class("status st-established")
    expect(page.locator('#topology-svg g.node[data-path="/root/burst"]')).to_have_count(1)
    yield page
    assert page.page_errors == [], page.page_errors
    context.close()
    target.stop()


def rows(page: Page, text: str):
    return page.locator(".tl-row.kind-log", has_text=text)


def test_scrolling_to_the_top_loads_records_older_than_the_ring(history_page: Page):
    page = history_page
    expect(rows(page, "chatter line").first).to_be_visible()
    expect(rows(page, "burst line 1000")).to_have_count(0)  # not in the ring any more
    assert page.evaluate(
        f"() => window.__dashboard.store.targets.get('{TARGET_ID}').logs.toArray()"
        ".every(r => !r.summary.includes('burst line 1000'))")
    timeline = page.locator("#timeline")
    timeline.hover()
    # each scroll to the top asks for the page before the oldest row shown (200 records)
    for _ in range(40):
        page.mouse.wheel(0, -1_000_000)
        try:
            expect(rows(page, "burst line 1000")).to_be_visible(timeout=1000)
            break
        except AssertionError:
            continue
    expect(rows(page, "burst line 1000")).to_be_visible()
    # the history rows sit above the live ones, oldest first
    order = page.evaluate("""() => [...document.querySelectorAll('.tl-row.kind-log')]
        .map(r => r.textContent).filter(t => t.includes('burst line 100'))""")
    assert order and "burst line 1000" in order[0], order


def test_search_finds_a_line_only_the_history_holds(history_page: Page):
    page = history_page
    needle = "burst line 1003"
    expect(rows(page, needle)).to_have_count(0)
    page.fill("#history-search", needle)
    page.press("#history-search", "Enter")
    expect(page.locator("#history-state")).to_contain_text("Older records loaded from history.")
    page.fill("#f-text", needle)  # the timeline's own filter: only the found row is left
    row = rows(page, needle)
    expect(row).to_have_count(1)
    expect(row).to_be_visible()
    request = page.evaluate("() => window.__dashboard.sent.find(m => m.type === 'history_request'"
                            f" && m.text === '{needle}')")
    assert request and request["target_id"] == TARGET_ID


def test_a_nodes_logs_view_shows_that_childs_lines_only(history_page: Page):
    page = history_page
    page.locator('#topology-svg g.node[data-path="/root/burst"]').click()
    expect(page.locator("#node-detail")).to_contain_text("/root/burst")
    page.click("#node-logs-load")
    lines = page.locator("#node-detail .node-log-lines li")
    expect(lines.first).to_contain_text("burst line")
    expect(lines).to_have_count(200)  # one page, the newest of that child
    expect(lines.filter(has_not_text="burst line")).to_have_count(0)
    expect(lines.last).to_contain_text(f"burst line {1000 + BURST - 1}")
    page.locator('#topology-svg g.node[data-path="/root/chatter"]').click()
    expect(page.locator("#node-detail")).to_contain_text("/root/chatter")
    page.click("#node-logs-load")
    expect(lines.first).to_contain_text("chatter line")
    expect(lines.filter(has_not_text="chatter line")).to_have_count(0)
