"""Dashboard browser benchmark: prints one JSON object of timings (milliseconds) and keeps a
copy in bench/results/dashboard.json.

Serves the dashboard's static files on 127.0.0.1 (plain HTTP, ``?offline=1``: no relay
session), drives /usr/bin/chromium with Playwright at 1280×800 and feeds synthetic §3
messages through the page's ``window.__dashboard`` hook. Each timing runs inside the page
from the first message handed over until the next animation frame after a forced layout,
so it covers message handling, DOM updates, style and layout.

- first_render_200_children_ms: server_hello + target_list + a state with 200 children
- render_10000_rows_ms: 10,000 event messages into the timeline
- apply_1000_live_events_ms: 1,000 more events (and 1,000 state deltas) on top of that
- filter_keystroke_ms: one character typed in a timeline filter over those rows
  (median and max of several keystrokes)
"""

from __future__ import annotations

import functools
import http.server
import statistics
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import emit  # noqa: E402
STATIC = ROOT / "supervisor" / "relay" / "web" / "static"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHILDREN = 200
ROWS = 10_000
LIVE = 1_000

# Builds the synthetic messages inside the page (not timed) as window.__bench.
SETUP = """
({children, rows, live}) => {
  const T = 'bench-target';
  const STATES = ['running', 'failed', 'restarting', 'paused', 'quarantined', 'starting', 'stopping', 'stopped', 'completed'];
  const at = (i) => new Date(Date.UTC(2026, 10, 28, 13, 0, 0) + i * 10).toISOString().replace('Z', '000Z');
  const node = (path, kind, name) => ({ node_id: path, child_id: path === '/root' ? null : path.split('/').pop(), path, name, kind,
    tags: [], criticality: 'standard', state_summary: 'running', diagnostics: {} });
  const root = node('/root', 'root_supervisor', 'root supervisor');
  const nodes = [root];
  const edges = [];
  const runtime = [];
  for (let i = 0; i < children; i += 1) {
    const path = `/root/worker_${String(i).padStart(3, '0')}`;
    nodes.push(node(path, i % 10 === 0 ? 'child_process' : 'child_task', `worker ${i}`));
    edges.push({ edge_id: `parent:/root->${path}`, source_path: '/root', target_path: path, kind: 'parent_child', order: i });
    runtime.push({ child_path: path, lifecycle_state: STATES[i % STATES.length], health: 'healthy', readiness: 'ready',
      generation: 1, attempt: 1, restart_count: 0, last_failure: null, last_policy_decision: null, shutdown_state: 'idle' });
  }
  const hello = { type: 'server_hello', session_id: 's', client_identity: 'mtls_cert_fingerprint:' + 'ab'.repeat(32),
    log_event_filter_mode: 'remote', log_event_filter_conditions: { target_ids: [], child_paths: [], lifecycle_states: [],
    event_types: [], severities: [], sequence_min: null, correlation_id: null }, filter_config_version: 0 };
  const list = { type: 'target_list', targets: [{ target_id: T, display_name: 'bench target', registration_state: 'active',
    connection_state: 'connected', supported_commands: [{ name: 'pause_child', idempotent: false, timeout_seconds: 30 }] }] };
  const state = { type: 'state', target_id: T, state: { target: { target_id: T, display_name: 'bench target',
    registration_state: 'active', connection_state: 'connected' },
    topology: { root, nodes, edges, declaration_order: nodes.map((n) => n.path) }, runtime_state: runtime,
    recent_events: [], recent_logs: [], dropped_event_count: 0, dropped_log_count: 0, config_version: 'v',
    generated_at: at(0), state_generation: 1 } };
  const TYPES = ['child_started', 'child_running', 'child_ready', 'child_failed', 'child_restarting', 'backoff_scheduled'];
  const SEV = { child_failed: 'error', child_restarting: 'warning', backoff_scheduled: 'warning' };
  const event = (seq) => {
    const type = TYPES[seq % TYPES.length];
    const path = nodes[1 + (seq % children)].path;
    return { type: 'event', target_id: T, event: { target_id: T, sequence: seq, correlation_id: `corr-${seq % 97}`,
      event_type: type, severity: SEV[type] || 'info', target_path: path, child_id: path.split('/').pop(),
      occurred_at: at(seq), config_version: 'v', payload: { reason: 'bench' } } };
  };
  const delta = (seq) => ({ type: 'state_delta', target_id: T, delta: { state_generation: 1 + seq,
    runtime_state: [{ ...runtime[seq % children], lifecycle_state: STATES[seq % STATES.length] }] } });
  const initial = [];
  for (let s = 1; s <= rows; s += 1) initial.push(event(s));
  const liveMsgs = [];
  for (let s = rows + 1; s <= rows + live; s += 1) { liveMsgs.push(event(s)); liveMsgs.push(delta(s)); }
  window.__bench = { session: [hello, list, state], initial, live: liveMsgs };
}
"""

# Times one step in the page: run it, force layout, wait for the next frame.
TIMED = """
async (step) => {
  const d = window.__dashboard;
  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const t0 = performance.now();
  if (step === 'keystroke') {
    const input = document.getElementById('f-text');
    input.value = window.__benchText;
    input.dispatchEvent(new Event('input', { bubbles: true }));
  } else {
    for (const m of window.__bench[step]) d.ingest(m);
    d.flush();
  }
  document.body.getBoundingClientRect();
  await frame();
  return performance.now() - t0;
}
"""


def serve() -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(STATIC)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    server = serve()
    url = f"http://127.0.0.1:{server.server_port}/?offline=1"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.wait_for_function("window.__dashboard !== undefined")
        page.evaluate(SETUP, {"children": CHILDREN, "rows": ROWS, "live": LIVE})
        first = page.evaluate(TIMED, "session")
        nodes = page.locator("#topology-svg g.node").count()
        rows = page.evaluate(TIMED, "initial")
        live = page.evaluate(TIMED, "live")
        shown = page.evaluate("window.__dashboard.view.rows.length")
        dom_rows = page.locator("#timeline .tl-row").count()
        keystrokes = []
        for text in ["w", "wo", "wor", "work", "worke", "worker", "worker ", "worker 1", "worker 12", ""]:
            page.evaluate("t => { window.__benchText = t; }", text)
            keystrokes.append(page.evaluate(TIMED, "keystroke"))
        version = browser.version
        browser.close()
    server.shutdown()
    emit("dashboard", {
        "browser": f"chromium {version}",
        "viewport": "1280x800",
        "children": CHILDREN,
        "nodes_drawn": nodes,
        "timeline_rows": shown,
        "timeline_dom_rows": dom_rows,
        "first_render_200_children_ms": round(first, 1),
        "render_10000_rows_ms": round(rows, 1),
        "apply_1000_live_events_ms": round(live, 1),
        "filter_keystroke_ms": round(statistics.median(keystrokes), 1),
        "filter_keystroke_max_ms": round(max(keystrokes), 1),
        "targets_ms": {"first_render_200_children": 1000, "render_10000_rows": 1000,
                       "apply_1000_live_events": 200, "filter_keystroke": 50},
    })


if __name__ == "__main__":
    main()
