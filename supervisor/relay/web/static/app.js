// Entry module: wires the session, the store and the panels, and renders at most once per
// animation frame. Test and benchmark hook: window.__dashboard (see bottom of file).

import {
  COMMANDS, LIFECYCLE_STATES, SEVERITIES, RelayConnection, buildCommand, CommandInputError,
  filterMessage, filtersEqual, isDangerous, normalizeFilter, parseManifest, shortIdentity,
  splitList, websocketUrl,
} from './protocol.js';
import { Store, nodeEvents } from './store.js';
import { ROW_KINDS, TimelineView, allRows, makeViewFilter } from './filter.js';
import { Timeline, shortTime } from './timeline.js';
import { PositionMemory, TopologyView } from './topology.js';
import { language, preferredLanguage, setLanguage, t, translateDom, tv } from './i18n.js';
import { $, h } from './dom.js';
import { EVENT_TYPES } from './vocabulary.js';

const KEY = 'supervisor-dashboard.';
const storage = (() => {
  try {
    window.localStorage.setItem(`${KEY}probe`, '1');
    window.localStorage.removeItem(`${KEY}probe`);
    return window.localStorage;
  } catch {
    const mem = new Map(); // storage disabled: remember for this page only
    return { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
  }
})();

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// One id per browser profile, so the relay can recognise a returning dashboard.
function clientStoreId() {
  let id = storage.getItem(`${KEY}client_store_id`);
  if (!id) {
    id = uuid();
    storage.setItem(`${KEY}client_store_id`, id);
  }
  return id;
}

const store = new Store();
const view = new TimelineView(store);
const ui = {
  selectedTarget: storage.getItem(`${KEY}selected_target`),
  selectedNode: null,
  relayStatus: 'offline',
  relayDetail: {},
  unseenDiagnostics: 0,
  pausedNew: 0,
  activeTab: 'timeline',
};
const sent = []; // last messages sent to the relay, newest last (bounded, for tests)
let lastSentFilter = null;

// ---------- preferences: language and theme ----------

function applyLanguage(lang) {
  setLanguage(lang);
  storage.setItem(`${KEY}lang`, language());
  document.documentElement.lang = language() === 'zh' ? 'zh-CN' : 'en';
  $('lang-select').value = language();
  translateDom(document);
  document.title = `${t('title')} · dashboard`;
  buildStaticControls();
  renderAll();
}

function applyTheme(theme) {
  const dark = theme === 'dark';
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  storage.setItem(`${KEY}theme`, dark ? 'dark' : 'light');
  const button = $('theme-toggle');
  button.setAttribute('aria-pressed', String(dark));
  button.textContent = dark ? t('theme_dark') : t('theme_light');
}

// ---------- frame scheduling ----------

let frameRequested = false;
const frameWaiters = [];

function scheduleRender() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => renderFrame());
}

// Applies everything accumulated since the last frame in one pass.
function renderFrame() {
  frameRequested = false;
  const changes = store.takeChanges();
  if (changes.session) renderHeader();
  if (changes.targets || changes.runtime.size || changes.topology.size) {
    ensureSelectedTarget();
    renderTargets();
    renderHeader();
  }
  if (ui.selectedTarget && changes.topology.has(ui.selectedTarget)) renderTopology();
  const rt = changes.runtime.get(ui.selectedTarget);
  if (rt && topology.topology) topology.refreshStates(rt);
  const newRowsForNode = changes.rows.some((r) => r.targetId === ui.selectedTarget && r.path === ui.selectedNode);
  if (changes.topology.has(ui.selectedTarget) || (rt && rt.has(ui.selectedNode)) || newRowsForNode) renderDetail();
  if (changes.targets) renderCommandOptions();
  const rowsChanged = view.update(changes);
  if (rowsChanged) {
    if (!timeline.following) ui.pausedNew += changes.rows.length;
    timeline.setRows(view.rows);
    renderRowCount();
  }
  if (changes.rows.some((r) => r.kind === 'audit') && ui.activeTab === 'audit') renderAudit();
  if (changes.diagnostics) {
    if (ui.activeTab !== 'diagnostics') ui.unseenDiagnostics += 1;
    renderDiagnosticsBadge();
    if (ui.activeTab === 'diagnostics') renderDiagnostics();
  }
  for (const r of changes.results) toastResult(r);
  while (frameWaiters.length) frameWaiters.shift()();
}

function renderAll() {
  renderHeader();
  renderTargets();
  renderTopology();
  renderDetail();
  renderCommandOptions();
  timeline.relabel();
  renderRowCount();
  renderFollow();
  if (ui.activeTab === 'audit') renderAudit();
  if (ui.activeTab === 'diagnostics') renderDiagnostics();
  applyTheme(document.documentElement.dataset.theme);
}

// ---------- header ----------

function renderHeader() {
  const status = ui.relayStatus;
  const el = $('relay-status');
  el.className = `status st-${status}`;
  const d = ui.relayDetail;
  $('relay-status-text').textContent = status === 'waiting'
    ? t('relay_waiting', { s: Math.max(1, Math.round((d.delay || 0) / 1000)), n: d.attempt || 1 })
    : t(`relay_${status}`);
  const s = store.session;
  // The principal is learned from our own audit records or command results (server_hello
  // carries only the fingerprint unless the relay adds a `principal` field).
  $('identity-principal').textContent = s.principal || '';
  $('identity-principal').hidden = !s.principal;
  $('identity-fingerprint').textContent = shortIdentity(s.clientIdentity);
  $('identity').title = s.clientIdentity || '';
  $('count-targets').textContent = String(store.listedTargets().length);
  $('count-events').textContent = String(store.eventTotal);
  const failed = store.failedTotal();
  $('count-failed').textContent = String(failed);
  $('count-failed').parentElement.classList.toggle('alert', failed > 0);
}

// ---------- targets ----------

function ensureSelectedTarget() {
  const listed = store.listedTargets();
  if (ui.selectedTarget && store.targets.has(ui.selectedTarget)) return;
  if (listed.length) selectTarget(listed[0].targetId, { quiet: true });
}

const targetItems = new Map();

function renderTargets() {
  const list = $('target-list');
  const targets = [...store.targets.values()].filter((tg) => tg.listed || tg.targetId === ui.selectedTarget);
  $('no-targets').hidden = targets.length > 0;
  const keep = new Set(targets.map((tg) => tg.targetId));
  for (const [id, li] of targetItems) {
    if (!keep.has(id)) {
      li.remove();
      targetItems.delete(id);
    }
  }
  for (const tg of targets) {
    let li = targetItems.get(tg.targetId);
    if (!li) {
      li = h('li', {}, h('button', { type: 'button', class: 'target', onclick: () => selectTarget(tg.targetId) }));
      targetItems.set(tg.targetId, li);
    }
    list.appendChild(li); // keeps list order equal to store order
    const button = li.firstChild;
    const cs = tg.connectionState || 'registered';
    button.dataset.targetId = tg.targetId;
    button.setAttribute('aria-pressed', String(tg.targetId === ui.selectedTarget));
    const badges = [h('span', { class: `badge cs cs-${cs}` }, t(`cs_${cs}`))];
    if (tg.failedCount) badges.push(h('span', { class: 'badge failed' }, `${tg.failedCount} ${t('lc_failed')}`));
    if (tg.droppedEvents || tg.droppedLogs) {
      badges.push(h('span', { class: 'badge dropped' }, t('dropped_short', { events: tg.droppedEvents, logs: tg.droppedLogs })));
    }
    button.replaceChildren(
      h('span', { class: 'name' }, tg.displayName),
      h('span', { class: 'id' }, tg.targetId),
      h('span', { class: 'badges' }, badges),
    );
  }
  renderDropped();
  renderTopologyTitle();
}

function selectTarget(targetId, { quiet = false } = {}) {
  if (ui.selectedTarget !== targetId) {
    ui.selectedTarget = targetId;
    ui.selectedNode = null;
    storage.setItem(`${KEY}selected_target`, targetId);
  }
  if (quiet) return;
  renderTargets();
  renderTopology();
  renderDetail();
  renderCommandOptions();
}

function renderDropped() {
  let events = 0;
  let logs = 0;
  for (const tg of store.targets.values()) {
    events += tg.droppedEvents;
    logs += tg.droppedLogs;
  }
  const el = $('dropped');
  el.hidden = !(events || logs);
  el.textContent = t('dropped', { events, logs });
}

// ---------- topology ----------

const topology = new TopologyView($('topology-svg'), {
  memory: new PositionMemory(storage),
  onSelect: (path) => selectNode(path),
  lifecycleOf: (path) => store.lifecycleOf(ui.selectedTarget, path),
});

function renderTopologyTitle() {
  const tg = store.targets.get(ui.selectedTarget);
  const el = $('topology-target');
  el.textContent = tg ? `${tg.displayName} · ${t(`cs_${tg.connectionState || 'registered'}`)}` : '';
  el.className = tg ? `muted cs-text cs-${tg.connectionState}` : 'muted';
}

function renderTopology() {
  const tg = store.targets.get(ui.selectedTarget);
  const topo = tg && tg.state ? tg.state.topology : null;
  const empty = $('topology-empty');
  empty.hidden = Boolean(topo);
  empty.textContent = tg ? t('no_tree') : t('select_target');
  topology.setTopology(ui.selectedTarget, topo || null);
  if (topo && ui.selectedNode && topology.elements.has(ui.selectedNode)) topology.select(ui.selectedNode, { notify: false });
  renderTopologyTitle();
  const q = $('node-search').value;
  if (q) topology.setSearch(q);
}

function selectNode(path) {
  ui.selectedNode = path;
  if (path) $('cmd-path').value = path;
  renderDetail();
  updateCommandHint();
}

// ---------- node detail ----------

function field(labelKey, value, cls = '') {
  const shown = value === null || value === undefined || value === '' ? t('d_none') : String(value);
  return [h('dt', {}, t(labelKey)), h('dd', { class: cls }, shown)];
}

function renderDetail() {
  const host = $('node-detail');
  const tg = store.targets.get(ui.selectedTarget);
  const node = tg && ui.selectedNode ? tg.nodes.get(ui.selectedNode) : null;
  if (!node) {
    host.replaceChildren(h('p', { class: 'empty' }, t('select_node')));
    return;
  }
  const rt = tg.runtime.get(node.path) || {};
  const lifecycle = rt.lifecycle_state || node.state_summary || 'unknown';
  const diag = node.diagnostics || {};
  const events = nodeEvents(store, tg.targetId, node.path);
  host.replaceChildren(
    h('div', { class: 'detail-title' },
      h('span', { class: `swatch st-${lifecycle}` }),
      h('strong', {}, node.name || node.child_id || node.path),
      h('span', { class: `badge lc st-${lifecycle}` }, tv('lc', lifecycle))),
    h('dl', { class: 'facts' },
      field('d_path', node.path, 'mono'),
      field('d_kind', tv('k', node.kind)),
      field('d_criticality', tv('crit', node.criticality)),
      field('d_tags', (node.tags || []).join(', ')),
      field('d_lifecycle', tv('lc', lifecycle)),
      field('d_health', tv('h', rt.health)),
      field('d_readiness', tv('r', rt.readiness)),
      field('d_generation', rt.generation),
      field('d_attempt', rt.attempt),
      field('d_restart_count', rt.restart_count),
      field('d_last_failure', rt.last_failure, rt.last_failure ? 'bad' : ''),
      field('d_last_policy', rt.last_policy_decision),
      field('d_shutdown', tv('sh', rt.shutdown_state)),
      diag.message ? field('d_diagnostic', diag.message) : null),
    h('h3', {}, t('d_recent_events')),
    events.length
      ? h('ol', { class: 'node-events' }, events.map((e) => h('li', { class: `sev-${e.severity}` },
        h('span', { class: 'mono' }, `#${e.sequence}`), ' ', h('span', {}, e.type), ' ',
        h('span', { class: 'muted' }, shortTime(e.time)))))
      : h('p', { class: 'empty' }, t('d_no_events')),
  );
}

// ---------- control panel ----------

function renderCommandOptions() {
  const select = $('cmd-command');
  const tg = store.targets.get(ui.selectedTarget);
  const supported = tg ? COMMANDS.filter((c) => tg.supportedCommands.includes(c)) : [];
  const previous = select.value;
  select.replaceChildren(...supported.map((c) => h('option', { value: c },
    isDangerous(c) ? t('cmd_dangerous', { name: t(`cmd_${c}`) }) : t(`cmd_${c}`))));
  if (supported.includes(previous)) select.value = previous;
  select.disabled = supported.length === 0;
  updateCommandHint();
}

function updateCommandHint() {
  const command = $('cmd-command').value;
  const tg = store.targets.get(ui.selectedTarget);
  $('manifest-field').hidden = command !== 'add_child';
  $('cmd-path').disabled = command === 'shutdown_tree';
  let hint = '';
  if (!tg) hint = t('cmd_no_target');
  else if (!tg.supportedCommands.length) hint = t('cmd_none_supported');
  else if (isDangerous(command)) hint = t('cmd_danger_hint');
  $('cmd-hint').textContent = hint;
}

// Validates the form; returns a command message (unconfirmed) or null after showing why.
function commandFromForm(confirmed) {
  const command = $('cmd-command').value;
  const reason = $('cmd-reason').value;
  const childPath = command === 'shutdown_tree' ? null : ($('cmd-path').value.trim() || null);
  const manifest = command === 'add_child' ? parseManifest($('cmd-manifest').value) : undefined;
  const hint = $('cmd-hint');
  try {
    const msg = buildCommand({
      commandId: uuid(), targetId: ui.selectedTarget, command, childPath, childManifest: manifest, reason, confirmed,
    });
    if (command === 'add_child' && childPath) msg.target.child_id = childPath.slice(childPath.lastIndexOf('/') + 1);
    return msg;
  } catch (err) {
    if (!(err instanceof CommandInputError)) throw err;
    const key = { empty_reason: 'cmd_need_reason', target_not_bound: 'cmd_no_target', invalid_message_schema: 'cmd_need_path' }[err.code];
    hint.textContent = key ? t(key) : err.message;
    hint.classList.add('bad');
    (err.code === 'empty_reason' ? $('cmd-reason') : $('cmd-path')).focus();
    return null;
  }
}

function sendCommand(msg) {
  if (!connection || !connection.established) {
    toast(t('cmd_not_connected'), 'error');
    return;
  }
  store.trackCommand(msg);
  if (!connection.send(msg)) {
    store.pending.delete(msg.command_id);
    toast(t('cmd_not_connected'), 'error');
    return;
  }
  toast(t('cmd_sent', { command: t(`cmd_${msg.command}`), id: msg.command_id.slice(0, 8) }), 'info');
}

function onCommandSubmit(ev) {
  ev.preventDefault();
  $('cmd-hint').classList.remove('bad');
  const command = $('cmd-command').value;
  if (!isDangerous(command)) {
    const msg = commandFromForm(false);
    if (msg) sendCommand(msg);
    return;
  }
  const preview = commandFromForm(true); // validates before asking
  if (!preview) return;
  const dialog = $('confirm-dialog');
  $('confirm-command').textContent = `${t(`cmd_${command}`)} (${command})`;
  const tg = store.targets.get(preview.target_id);
  $('confirm-target').textContent = tg ? `${tg.displayName} (${tg.targetId})` : preview.target_id;
  $('confirm-path').textContent = preview.target.child_path || t('d_none');
  $('confirm-reason').textContent = preview.reason;
  dialog.returnValue = '';
  dialog.onclose = () => {
    if (dialog.returnValue === 'confirm') sendCommand(preview);
    $('cmd-send').focus();
  };
  dialog.showModal();
  $('confirm-cancel').focus();
}

// ---------- toasts ----------

function toast(text, level = 'info') {
  const el = h('div', { class: `toast ${level}`, role: level === 'error' ? 'alert' : null },
    h('span', {}, text),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': t('close'), onclick: () => el.remove() }, '×'));
  const host = $('toasts');
  host.appendChild(el);
  while (host.children.length > 5) host.firstChild.remove();
  setTimeout(() => el.remove(), level === 'error' ? 12000 : 6000);
}

function toastResult(r) {
  if (r.kind === 'result') {
    const { result, sent: cmd } = r;
    const command = cmd ? t(`cmd_${cmd.command}`) : result.command_id;
    const path = cmd ? cmd.target.child_path || cmd.target_id : result.target_id;
    if (result.error) {
      toast(t('toast_refused', { command, code: result.error.code, message: result.error.message }), 'error');
    } else {
      toast(t('toast_result', { command, path, status: result.status }), result.status === 'completed' || result.status === 'accepted' ? 'ok' : 'error');
    }
  } else if (r.kind === 'refused') {
    toast(t('toast_refused', { command: t(`cmd_${r.sent.command}`), code: r.error.code, message: r.error.message }), 'error');
  } else {
    toast(t('toast_error', { code: r.error.code, message: r.error.message }), 'error');
  }
}

// ---------- timeline and filters ----------

const timeline = new Timeline($('timeline'), {
  labels: { kind: (k) => t(`kind_${k}`), severity: (s) => t(`sev_${s}`) },
  targetName: (id) => (store.targets.get(id) || {}).displayName || id,
  onFollowChange: (on) => {
    if (on) ui.pausedNew = 0;
    renderFollow();
  },
  onOpen: (row) => openRowDetail(row),
});

function renderFollow() {
  $('follow-state').textContent = timeline.following ? t('following') : t('paused_follow', { n: ui.pausedNew });
  $('follow-state').className = timeline.following ? 'live' : 'paused';
  $('follow-resume').hidden = timeline.following;
}

function renderRowCount() {
  let total = 0;
  for (const tg of store.targets.values()) total += tg.events.length + tg.logs.length + tg.audit.length + tg.results.length;
  $('row-count').textContent = t('rows', { shown: view.rows.length, total });
  if (!timeline.following) renderFollow();
}

function openRowDetail(row) {
  $('row-detail').hidden = false;
  $('row-detail-body').textContent = JSON.stringify(row.raw, null, 2);
}

// Contract conditions from the filter form.
function formConditions() {
  const target = $('f-target').value;
  const lifecycle = $('f-lifecycle').value;
  const severities = [...document.querySelectorAll('#f-severities input:checked')].map((i) => i.value);
  return normalizeFilter({
    target_ids: target ? [target] : [],
    child_paths: splitList($('f-path').value),
    lifecycle_states: lifecycle ? [lifecycle] : [],
    event_types: splitList($('f-type').value),
    severities,
    sequence_min: $('f-seq').value === '' ? null : Number($('f-seq').value),
    correlation_id: $('f-corr').value,
  });
}

function formKinds() {
  return [...document.querySelectorAll('#f-kinds input:checked')].map((i) => i.value);
}

let filterSendTimer = null;

// Re-filters locally at once; tells the relay after typing settles.
function onFilterInput() {
  const conditions = formConditions();
  view.setFilter(makeViewFilter({ conditions, kinds: formKinds(), text: $('f-text').value }));
  timeline.setRows(view.rows);
  renderRowCount();
  clearTimeout(filterSendTimer);
  filterSendTimer = setTimeout(() => sendFilter(conditions), 250);
}

function sendFilter(conditions) {
  if (lastSentFilter && filtersEqual(lastSentFilter, conditions)) return;
  if (connection && connection.send(filterMessage(conditions))) lastSentFilter = conditions;
}

function refreshFilterTargets() {
  const select = $('f-target');
  const current = select.value;
  const options = [h('option', { value: '' }, t('all'))];
  for (const tg of store.targets.values()) options.push(h('option', { value: tg.targetId }, tg.displayName));
  select.replaceChildren(...options);
  select.value = [...select.options].some((o) => o.value === current) ? current : '';
}

// Controls whose labels depend on the language.
function buildStaticControls() {
  const lc = $('f-lifecycle');
  const lcValue = lc.value;
  lc.replaceChildren(h('option', { value: '' }, t('all')), ...LIFECYCLE_STATES.map((s) => h('option', { value: s }, t(`lc_${s}`))));
  lc.value = lcValue;
  const sevChecked = new Set([...document.querySelectorAll('#f-severities input:checked')].map((i) => i.value));
  $('f-severities').replaceChildren(...SEVERITIES.map((s) => h('label', { class: `chip sev-${s}` },
    h('input', { type: 'checkbox', value: s, checked: sevChecked.has(s) }), h('span', {}, t(`sev_${s}`)))));
  const kindInputs = document.querySelectorAll('#f-kinds input');
  const kindChecked = kindInputs.length ? new Set([...kindInputs].filter((i) => i.checked).map((i) => i.value)) : new Set(ROW_KINDS);
  $('f-kinds').replaceChildren(...ROW_KINDS.map((k) => h('label', { class: 'chip' },
    h('input', { type: 'checkbox', value: k, checked: kindChecked.has(k) }), h('span', {}, t(`kind_${k}`)))));
  $('legend').replaceChildren(...LIFECYCLE_STATES.map((s) => h('li', {}, h('span', { class: `swatch st-${s}` }), t(`lc_${s}`))));
  $('event-types').replaceChildren(...EVENT_TYPES.map((e) => h('option', { value: e })));
  refreshFilterTargets();
}

// ---------- audit and diagnostics panes ----------

function renderAudit() {
  const rows = allRows(store).filter((r) => r.kind === 'audit').slice(-300).reverse();
  $('audit-empty').hidden = rows.length > 0;
  $('audit-body').replaceChildren(...rows.map((r) => {
    const a = r.raw;
    return h('tr', { class: `res-${a.result}` },
      h('td', { class: 'mono' }, shortTime(a.occurred_at)),
      h('td', {}, r.targetId),
      h('td', {}, a.command),
      h('td', { class: 'mono' }, (a.target && a.target.child_path) || t('d_none')),
      h('td', {}, a.result, a.detail && a.detail !== a.result ? ` (${a.detail})` : ''),
      h('td', {}, a.identity ? a.identity.principal : ''),
      h('td', {}, a.reason || ''));
  }));
}

function renderDiagnosticsBadge() {
  const badge = $('diag-count');
  badge.hidden = ui.unseenDiagnostics === 0;
  badge.textContent = String(ui.unseenDiagnostics);
}

function renderDiagnostics() {
  const s = store.session;
  $('diag-session').replaceChildren(
    h('strong', {}, `${t('diag_session')}: `),
    h('span', { class: 'mono' }, s.sessionId || '—'), ' · ',
    h('span', { class: 'mono' }, wsUrl), ' · ',
    `${t('diag_filter_version')} ${s.filterVersion ?? '—'}`);
  const rows = store.diagnostics.toArray().reverse();
  $('diag-body').replaceChildren(...(rows.length ? rows.map((d) => h('tr', { class: `lvl-${d.level}` },
    h('td', { class: 'mono' }, shortTime(d.at)),
    h('td', {}, d.level),
    h('td', { class: 'mono' }, d.code),
    h('td', {}, d.targetId || ''),
    h('td', {}, d.message))) : [h('tr', {}, h('td', { colspan: '5', class: 'empty' }, t('diag_empty')))]));
}

function showTab(name) {
  ui.activeTab = name;
  for (const tab of ['timeline', 'audit', 'diagnostics']) {
    const on = tab === name;
    $(`tab-${tab}`).setAttribute('aria-selected', String(on));
    $(`tab-${tab}`).tabIndex = on ? 0 : -1;
    $(`pane-${tab}`).hidden = !on;
  }
  if (name === 'audit') renderAudit();
  if (name === 'diagnostics') {
    ui.unseenDiagnostics = 0;
    renderDiagnosticsBadge();
    renderDiagnostics();
  }
  if (name === 'timeline') timeline.render();
}

// ---------- relay session ----------

const params = new URLSearchParams(window.location.search);
const wsUrl = websocketUrl(window.location);
let connection = null;

function onRelayStatus(status, detail) {
  ui.relayStatus = status;
  ui.relayDetail = detail;
  if (status === 'waiting') store.diag('warning', 'relay_connection', `${detail.reason}; retry in ${detail.delay} ms`);
  if (status === 'established') lastSentFilter = null;
  renderHeader();
  scheduleRender();
}

function onRelayMessage(msg, parsed) {
  if (!msg) {
    store.diag('error', parsed.error, 'unreadable message from relay');
  } else if (parsed.error === 'unknown_type') {
    store.diag('warning', 'unsupported_message_type', `relay sent unknown type ${msg.type}`);
  } else {
    ingest(msg);
    if (msg.type === 'server_hello') lastSentFilter = normalizeFilter(msg.log_event_filter_conditions || {});
  }
  scheduleRender();
}

function ingest(msg) {
  store.apply(msg);
  if (msg.type === 'target_list' || msg.type === 'state') refreshFilterTargets();
  scheduleRender();
}

// ---------- wiring ----------

function bind() {
  $('lang-select').addEventListener('change', (ev) => applyLanguage(ev.target.value));
  $('theme-toggle').addEventListener('click', () => applyTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'));
  $('node-search').addEventListener('input', (ev) => topology.setSearch(ev.target.value));
  $('node-search').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter') return;
    ev.preventDefault();
    const matches = topology.setSearch(ev.target.value);
    if (matches.length) topology.select(matches[0], { reveal: true });
  });
  $('failed-only').addEventListener('change', (ev) => topology.setFailedOnly(ev.target.checked));
  $('zoom-in').addEventListener('click', () => topology.zoom(1.25));
  $('zoom-out').addEventListener('click', () => topology.zoom(0.8));
  $('fit-view').addEventListener('click', () => topology.fit());
  $('relayout').addEventListener('click', () => topology.relayout());
  $('cmd-command').addEventListener('change', updateCommandHint);
  $('command-form').addEventListener('submit', onCommandSubmit);
  $('filters').addEventListener('input', onFilterInput);
  $('filters').addEventListener('submit', (ev) => ev.preventDefault());
  $('f-clear').addEventListener('click', () => {
    $('filters').reset();
    for (const i of document.querySelectorAll('#f-kinds input')) i.checked = true;
    onFilterInput();
  });
  $('follow-resume').addEventListener('click', () => {
    timeline.setFollowing(true);
    $('timeline').focus();
  });
  $('row-detail-close').addEventListener('click', () => {
    $('row-detail').hidden = true;
    $('timeline').focus();
  });
  const tabs = ['timeline', 'audit', 'diagnostics'];
  for (const name of tabs) {
    const tab = $(`tab-${name}`);
    tab.addEventListener('click', () => showTab(name));
    tab.addEventListener('keydown', (ev) => {
      const i = tabs.indexOf(name);
      let j = null;
      if (ev.key === 'ArrowRight') j = (i + 1) % tabs.length;
      if (ev.key === 'ArrowLeft') j = (i + tabs.length - 1) % tabs.length;
      if (j === null) return;
      ev.preventDefault();
      showTab(tabs[j]);
      $(`tab-${tabs[j]}`).focus();
    });
  }
  window.addEventListener('resize', () => timeline.render());
}

function start() {
  const storedTheme = storage.getItem(`${KEY}theme`);
  const prefersDark = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches;
  document.documentElement.dataset.theme = storedTheme || (prefersDark ? 'dark' : 'light');
  bind();
  applyLanguage(preferredLanguage(storage.getItem(`${KEY}lang`), navigator.languages || [navigator.language]));
  // ?offline=1 renders without a relay session (benchmarks and client-only tests).
  if (params.get('offline') !== '1') {
    connection = new RelayConnection({
      url: wsUrl,
      clientStoreId: clientStoreId(),
      WebSocketImpl: window.WebSocket,
      onMessage: onRelayMessage,
      onStatus: onRelayStatus,
      onSent: (msg) => {
        sent.push(msg);
        if (sent.length > 100) sent.shift();
      },
      getFilter: () => formConditions(),
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
  view,
  timeline,
  topology,
  sent,
  get relayStatus() {
    return ui.relayStatus;
  },
  get connection() {
    return connection;
  },
};
document.documentElement.dataset.ready = 'true';
