// Entry module: creates the store, the relay session and the panels, routes relay messages
// into the store and renders the panels at most once per animation frame. Test and
// benchmark hook: window.__dashboard (see bottom of file).

import { preferredLanguage } from './i18n.js';
import { RelayConnection, uuid, websocketUrl } from './protocol.js';
import { Selection, defaultTarget } from './selection.js';
import { PositionMemory, Preferences, openStorage } from './storage.js';
import { Store } from './store.js';
import { AlertsPanel } from './panels/alerts.js';
import { AuditPanel } from './panels/audit.js';
import { ControlPanel } from './panels/control.js';
import { DetailPanel } from './panels/detail.js';
import { DiagnosticsPanel } from './panels/diagnostics.js';
import { FiltersPanel } from './panels/filters.js';
import { HeaderPanel } from './panels/header.js';
import { PreferencesPanel } from './panels/preferences.js';
import { SplitPanel } from './panels/split.js';
import { TabsPanel } from './panels/tabs.js';
import { TargetsPanel } from './panels/targets.js';
import { TimelinePanel } from './panels/timeline.js';
import { ToastsPanel } from './panels/toasts.js';
import { TopologyPanel } from './panels/topology.js';

const SENT_KEPT = 100;
const TICK_MS = 5000;

const storage = openStorage(window);
const prefs = new Preferences(storage);
const store = new Store();
const selection = new Selection(prefs);
const wsUrl = websocketUrl(window.location);
const sent = []; // last messages sent to the relay, newest last (bounded, for tests)
let connection = null; // the RelayConnection; none with ?offline=1

const toasts = new ToastsPanel(document, { timers: window });
const header = new HeaderPanel(document, { store });
const alerts = new AlertsPanel(document, {
  store,
  onSelect: (targetId, path) => {
    if (targetId !== selection.targetId) selectTarget(targetId);
    if (path) {
      selectNode(path);
      topology.render();
    }
  },
});
const targets = new TargetsPanel(document, { store, selection, prefs, onSelect: (id) => selectTarget(id) });
const topology = new TopologyPanel(document, {
  store, selection, memory: new PositionMemory(storage), onSelect: (path) => selectNode(path),
});
// History requests go out on the session, once per target asked.
function sendHistory(messages) {
  for (const msg of messages) {
    if (connection) connection.send(msg);
  }
}
const historyTargets = () => [...store.targets.values()].filter((tg) => tg.listed).map((tg) => tg.targetId);
const detail = new DetailPanel(document, {
  store, selection,
  onLogs: (targetId, path) => {
    sendHistory(store.historyRequests(targetId, 'child', { path }));
    scheduleRender();
  },
});
const control = new ControlPanel(document, {
  store, selection, session: () => connection, newId: uuid, notify: (text, level) => toasts.show(text, level),
});
const timeline = new TimelinePanel(document, {
  store,
  onOlder: () => {
    for (const id of historyTargets()) sendHistory(store.historyRequests(id, 'older'));
  },
  onSearch: (text) => {
    for (const id of historyTargets()) sendHistory(store.historyRequests(id, 'search', { text }));
  },
});
const filters = new FiltersPanel(document, {
  store,
  timers: window,
  onChange: (viewFilter) => timeline.setFilter(viewFilter),
  send: (msg) => Boolean(connection && connection.send(msg)),
});
const audit = new AuditPanel(document, { store });
const diagnostics = new DiagnosticsPanel(document, { store, wsUrl });
const tabs = new TabsPanel(document, {
  onShow: (name) => {
    if (name === 'audit') audit.render();
    if (name === 'diagnostics') diagnostics.open();
    if (name === 'timeline') timeline.render();
  },
});
const preferences = new PreferencesPanel(document, {
  prefs,
  onLanguage: () => {
    filters.relabel();
    topology.relabel();
    renderAll();
  },
});

// The split between tree and timeline: both re-measure when it moves.
new SplitPanel(document, {
  prefs,
  onResize: () => {
    timeline.render();
    topology.view.refit();
  },
});

// ---------- frame scheduling ----------

let frameRequested = false;
const frameWaiters = [];

function scheduleRender() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => renderFrame());
}

// Applies everything accumulated since the last frame in one pass; each panel updates only
// what changed (by key), so a live stream leaves the controls an operator is using alone.
function renderFrame() {
  frameRequested = false;
  const changes = store.takeChanges();
  const runtimeChanged = changes.runtime.size > 0;
  if (changes.targets || runtimeChanged || changes.topology.size) {
    const wanted = defaultTarget(store, selection.targetId);
    if (wanted !== selection.targetId) selectTarget(wanted);
  }
  if (changes.targets || runtimeChanged || changes.dropped) renderTargets();
  if (changes.session || changes.targets || changes.counters || runtimeChanged) header.render();
  if (changes.targets) alerts.render();
  const { targetId, path } = selection;
  if (targetId && changes.topology.has(targetId)) topology.render();
  const rt = changes.runtime.get(targetId);
  if (rt) topology.refreshStates(rt);
  const newRowsForNode = changes.rows.some((r) => r.targetId === targetId && r.path === path);
  if (changes.topology.has(targetId) || (rt && rt.has(path)) || newRowsForNode || changes.childLogs) detail.render();
  if (changes.targets || changes.session) control.renderOptions(); // supported × permitted
  if (changes.targets) filters.refreshTargets();
  timeline.update(changes);
  audit.update(changes, tabs.active === 'audit');
  diagnostics.update(changes, tabs.active === 'diagnostics');
  for (const r of changes.results) {
    toasts.showResult(r);
    control.onResult(r);
  }
  while (frameWaiters.length) frameWaiters.shift()();
}

// Counts that depend on the time passing (failures.js) are redrawn now and then.
function tick() {
  header.render();
  renderTargets();
  detail.render(); // its sparklines move with the time
  if (topology.view.failedOnly) topology.refreshStates();
}

function renderTargets() {
  targets.render();
  topology.renderTitle();
}

function renderAll() {
  header.render();
  alerts.render();
  renderTargets();
  topology.render();
  detail.render();
  control.renderOptions();
  timeline.relabel();
  if (tabs.active === 'audit') audit.render();
  if (tabs.active === 'diagnostics') diagnostics.render();
  preferences.render();
}

// ---------- selection ----------

function selectTarget(targetId) {
  selection.selectTarget(targetId);
  renderTargets();
  topology.render();
  detail.render();
  control.renderOptions();
}

function selectNode(path) {
  selection.selectNode(path);
  control.setPath(path);
  detail.render();
  control.updateHint();
}

// ---------- relay session ----------

function onRelayStatus(status, info) {
  if (status === 'waiting') store.diag('warning', 'relay_connection', { key: 'diag_retry', params: info });
  if (status === 'established') filters.sessionStarted();
  header.setRelayStatus(status, info);
  scheduleRender();
}

function onRelayMessage(msg, parsed) {
  if (!msg) {
    store.diag('error', parsed.error, { key: 'diag_unreadable' });
  } else if (parsed.error === 'unknown_type') {
    store.diag('warning', 'unsupported_message_type', { key: 'diag_unknown_type', params: { type: msg.type } });
  } else {
    ingest(msg);
    if (msg.type === 'server_hello') filters.sessionStarted(msg);
  }
  scheduleRender();
}

function ingest(msg) {
  store.apply(msg);
  scheduleRender();
}

function start() {
  preferences.initTheme(Boolean(window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches));
  window.addEventListener('resize', () => {
    timeline.render();
    topology.view.refit();
  });
  window.setInterval(tick, TICK_MS);
  preferences.applyLanguage(preferredLanguage(prefs.get('lang'), navigator.languages || [navigator.language]));
  // ?offline=1 renders without a relay session (benchmarks and client-only tests).
  if (new URLSearchParams(window.location.search).get('offline') !== '1') {
    connection = new RelayConnection({
      url: wsUrl,
      clientStoreId: prefs.clientStoreId(uuid),
      WebSocketImpl: window.WebSocket,
      onMessage: onRelayMessage,
      onStatus: onRelayStatus,
      onSent: (msg) => {
        sent.push(msg);
        if (sent.length > SENT_KEPT) sent.shift();
      },
      getFilter: () => filters.conditions(),
    });
    connection.start();
  }
  renderAll();
}

start();

// Test and benchmark hook: feed relay messages without a socket and wait for rendering.
window.__dashboard = {
  ingest(msg) {
    ingest(msg);
  },
  // Renders pending changes now (synchronously) instead of on the next frame.
  flush() {
    renderFrame();
  },
  // Resolves after the next rendered frame.
  nextFrame() {
    return new Promise((resolve) => {
      frameWaiters.push(resolve);
      scheduleRender();
    });
  },
  store,
  view: timeline.view,
  targets,
  timeline: timeline.grid,
  topology: topology.view,
  sent,
  get relayStatus() {
    return header.status;
  },
  get connection() {
    return connection;
  },
};
document.documentElement.dataset.ready = 'true';
