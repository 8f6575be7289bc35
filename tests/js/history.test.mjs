import test from 'node:test';
import assert from 'node:assert/strict';
import { LIMITS, historyRowId } from '../../supervisor/relay/web/static/store.js';
import { TimelineView } from '../../supervisor/relay/web/static/filter.js';
import { TARGET as T, contractStore, logMsg } from './helpers.mjs';

const INSTANCE = 'i-now';

function logRecord(sequence, second, message = `line ${sequence}`, instance = 'i-before') {
  const at = `2026-11-28T12:00:${String(second).padStart(2, '0')}.000000Z`;
  return {
    target_id: T, sequence, correlation_id: null, severity: 'info', message,
    fields: { stream: 'stdout', child_path: '/root/w' }, occurred_at: at,
    occurred_at_unix_nanos: Date.parse(at) * 1e6, instance_id: instance,
  };
}

test('scrolling back asks each stream for the page before the last one, until the oldest', () => {
  const store = contractStore();
  const [logs, events] = store.historyRequests(T, 'older');
  assert.deepEqual([logs.stream, events.stream], ['logs', 'events']);
  assert.equal(logs.type, 'history_request');
  assert.equal(logs.before, 'end');
  assert.equal(logs.limit, LIMITS.historyPage);
  store.apply({ type: 'history_page', request_id: logs.request_id, target_id: T, stream: 'logs',
    records: [logRecord(5, 10), logRecord(6, 11)], next_cursor: '3-100', evicted: false });
  store.apply({ type: 'history_page', request_id: events.request_id, target_id: T, stream: 'events',
    records: [], next_cursor: null, evicted: false });
  const again = store.historyRequests(T, 'older');
  assert.deepEqual(again.map((m) => [m.stream, m.before]), [['logs', '3-100']]);
});

test('history rows come before the live ones, in time order, each once', () => {
  const store = contractStore();
  const tg = store.targets.get(T);
  tg.instanceId = INSTANCE;
  store.apply(logMsg(T, 40, { message: 'live line' }));
  const view = new TimelineView(store);
  view.rebuild();
  const liveCount = view.rows.length;
  const [logs] = store.historyRequests(T, 'older');
  const page = [logRecord(1, 1, 'old a'), logRecord(2, 2, 'old b'),
    { ...logRecord(40, 3, 'live line'), instance_id: INSTANCE }]; // already shown live
  store.apply({ type: 'history_page', request_id: logs.request_id, target_id: T, stream: 'logs',
    records: page, next_cursor: null, evicted: true });
  const changes = store.takeChanges();
  assert.ok(changes.older);
  assert.ok(view.update(changes));
  assert.equal(view.rows.length, liveCount + 2);
  assert.deepEqual(view.rows.slice(0, 2).map((r) => r.summary), ['old a', 'old b']);
  assert.ok(view.rows[0].history && view.rows[0].id < 0 && view.rows[0].id < view.rows[1].id);
  // the same page again (a search that finds them) adds nothing
  const [again] = store.historyRequests(T, 'search', { text: 'old' });
  assert.equal(again.text, 'old');
  assert.equal(again.before, 'end');
  store.apply({ type: 'history_page', request_id: again.request_id, target_id: T, stream: 'logs',
    records: page, next_cursor: null, evicted: false });
  assert.equal(store.takeChanges().older, false);
  assert.ok(historyRowId(logRecord(1, 1)) < historyRowId(logRecord(2, 2)));
});

test('a node logs view gets its records, or the error that answered', () => {
  const store = contractStore();
  const [req] = store.historyRequests(T, 'child', { path: '/root/w' });
  assert.deepEqual([req.stream, req.child_path, req.before], ['logs', '/root/w', 'end']);
  const tg = store.targets.get(T);
  assert.equal(tg.childLogs.loading, true);
  store.apply({ type: 'history_page', request_id: req.request_id, target_id: T, stream: 'logs',
    records: [logRecord(1, 1)], next_cursor: null, evicted: false });
  assert.equal(tg.childLogs.loading, false);
  assert.deepEqual(tg.childLogs.records.map((r) => r.message), ['line 1']);
  assert.ok(store.takeChanges().childLogs);
  const [second] = store.historyRequests(T, 'child', { path: '/root/w' });
  store.apply({ type: 'error', command_id: null, request_id: second.request_id,
    error: { code: 'history_disabled', stage: 'history', target_id: T, message: 'no history', retryable: false } });
  assert.equal(tg.childLogs.error, 'no history');
  assert.equal(store.historyPending.size, 0);
});

test('the timeline asks for older records at its top and keeps the row in view', async () => {
  const { loadPage, fire } = await import('./dom-shim.mjs');
  const { setLanguage } = await import('../../supervisor/relay/web/static/i18n.js');
  const { TimelinePanel } = await import('../../supervisor/relay/web/static/panels/timeline.js');
  const { ROW_HEIGHT } = await import('../../supervisor/relay/web/static/timeline.js');
  const { eventMsg } = await import('./helpers.mjs');
  setLanguage('en');
  const doc = loadPage();
  const store = contractStore();
  const asked = [];
  const searched = [];
  const panel = new TimelinePanel(doc, {
    store,
    onOlder: () => asked.push(...store.historyRequests(T, 'older')),
    onSearch: (text) => searched.push(text),
  });
  const grid = doc.getElementById('timeline');
  grid.clientHeight = 10 * ROW_HEIGHT;
  for (let s = 1043; s < 1083; s += 1) store.apply(eventMsg(T, s));
  panel.update(store.takeChanges());
  grid.scrollTop = 0;
  fire(grid, 'scroll');
  assert.deepEqual(asked.map((m) => m.stream), ['logs', 'events']);
  assert.equal(doc.getElementById('history-state').textContent, 'Reading history…');
  const first = panel.view.rows[0];
  store.apply({ type: 'history_page', request_id: asked[0].request_id, target_id: T, stream: 'logs',
    records: [logRecord(1, 1, 'old a'), logRecord(2, 2, 'old b'), logRecord(3, 3, 'old c')],
    next_cursor: null, evicted: false });
  panel.update(store.takeChanges());
  assert.deepEqual(panel.view.rows.slice(0, 3).map((r) => r.summary), ['old a', 'old b', 'old c']);
  assert.equal(panel.view.rows[3], first);
  assert.equal(grid.scrollTop, 3 * ROW_HEIGHT, 'the row that was at the top is still there');
  doc.getElementById('history-search').value = 'disk full';
  doc.getElementById('history-search-go').click();
  assert.deepEqual(searched, ['disk full']);
});

test('node detail reads the node logs from history and shows them', async () => {
  const { loadPage } = await import('./dom-shim.mjs');
  const { setLanguage } = await import('../../supervisor/relay/web/static/i18n.js');
  const { DetailPanel } = await import('../../supervisor/relay/web/static/panels/detail.js');
  const { Selection } = await import('../../supervisor/relay/web/static/selection.js');
  const { memoryPrefs } = await import('./helpers.mjs');
  setLanguage('en');
  const doc = loadPage();
  const store = contractStore();
  const selection = new Selection(memoryPrefs({ selected_target: T }));
  const sent = [];
  const panel = new DetailPanel(doc, {
    store, selection,
    onLogs: (targetId, path) => {
      sent.push(...store.historyRequests(targetId, 'child', { path }));
      panel.render();
    },
  });
  selection.selectNode('/root/invoice_writer');
  panel.render();
  doc.getElementById('node-logs-load').click();
  assert.deepEqual(sent.map((m) => [m.stream, m.child_path]), [['logs', '/root/invoice_writer']]);
  assert.match(doc.querySelector('#node-detail .node-logs').textContent, /Reading history/);
  store.apply({ type: 'history_page', request_id: sent[0].request_id, target_id: T, stream: 'logs',
    records: [{ ...logRecord(9, 9, 'invoice 42 written'), fields: { child_path: '/root/invoice_writer' } }],
    next_cursor: null, evicted: false });
  panel.render();
  const lines = doc.querySelectorAll('#node-detail .node-log-lines li').map((li) => li.textContent);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /invoice 42 written$/);
});

test('scrolling at the top again while a page is on its way asks nothing more', () => {
  const store = contractStore();
  assert.equal(store.historyRequests(T, 'older').length, 2);
  assert.equal(store.historyRequests(T, 'older').length, 0);
});

test('history pages of lines stamped with one time keep their sequence order', () => {
  const store = contractStore();
  const view = new TimelineView(store);
  view.rebuild();
  // scrolling back: the newest page first, then the page before it, all written at one time
  const [first] = store.historyRequests(T, 'older');
  store.apply({ type: 'history_page', request_id: first.request_id, target_id: T, stream: 'logs',
    records: [logRecord(3, 7), logRecord(4, 7)], next_cursor: '2-1', evicted: false });
  const [second] = store.historyRequests(T, 'older').filter((m) => m.stream === 'logs');
  store.apply({ type: 'history_page', request_id: second.request_id, target_id: T, stream: 'logs',
    records: [logRecord(1, 7), logRecord(2, 7)], next_cursor: null, evicted: false });
  assert.ok(view.update(store.takeChanges()));
  assert.deepEqual(view.rows.filter((r) => r.history).map((r) => r.sequence), [1, 2, 3, 4]);
});

test('the history line says when the oldest record kept is reached, also by an empty page', async () => {
  const { loadPage, fire } = await import('./dom-shim.mjs');
  const { setLanguage } = await import('../../supervisor/relay/web/static/i18n.js');
  const { TimelinePanel } = await import('../../supervisor/relay/web/static/panels/timeline.js');
  const { ROW_HEIGHT } = await import('../../supervisor/relay/web/static/timeline.js');
  const { eventMsg } = await import('./helpers.mjs');
  setLanguage('en');
  const doc = loadPage();
  const store = contractStore();
  store.targets.get(T).listed = true;
  const asked = [];
  const panel = new TimelinePanel(doc, { store, onOlder: () => asked.push(...store.historyRequests(T, 'older')) });
  const grid = doc.getElementById('timeline');
  grid.clientHeight = 10 * ROW_HEIGHT;
  for (let s = 1; s < 30; s += 1) store.apply(eventMsg(T, s));
  panel.update(store.takeChanges());
  const state = () => doc.getElementById('history-state').textContent;
  assert.equal(state(), '', 'nothing said before anything was asked');
  grid.scrollTop = 0;
  fire(grid, 'scroll');
  assert.equal(state(), 'Reading history…');
  const [logs, events] = asked;
  store.apply({ type: 'history_page', request_id: logs.request_id, target_id: T, stream: 'logs',
    records: [logRecord(1, 1, 'old a')], next_cursor: '1-0', evicted: false });
  panel.update(store.takeChanges());
  assert.equal(state(), 'Reading history…', 'the events page is still on its way');
  store.apply({ type: 'history_page', request_id: events.request_id, target_id: T, stream: 'events',
    records: [], next_cursor: null, evicted: false });
  panel.update(store.takeChanges());
  assert.equal(state(), 'Older records loaded from history.');
  grid.scrollTop = 0;
  fire(grid, 'scroll');
  const [last] = asked.slice(2);
  assert.equal(last.stream, 'logs');
  store.apply({ type: 'history_page', request_id: last.request_id, target_id: T, stream: 'logs',
    records: [], next_cursor: null, evicted: false });
  panel.update(store.takeChanges());
  assert.equal(state(), 'This is the oldest record the targets keep.');
  grid.scrollTop = 0;
  fire(grid, 'scroll');
  assert.equal(asked.length, 3, 'nothing more to ask');
  assert.equal(state(), 'This is the oldest record the targets keep.');
});
