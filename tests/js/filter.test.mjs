import test from 'node:test';
import assert from 'node:assert/strict';
import { TimelineView, allRows, eventLifecycle, makeViewFilter, matchRow, pathMatches } from '../../supervisor/relay/web/static/filter.js';
import { EVENT_LIFECYCLE } from '../../supervisor/relay/web/static/vocabulary.js';
import { LIMITS, Store } from '../../supervisor/relay/web/static/store.js';
import { eventMsg, fixture, logMsg } from './helpers.mjs';

const T = 'payments-worker-a';
const row = (over = {}) => ({
  id: 1, kind: 'event', targetId: T, sequence: 10, severity: 'error', type: 'child_failed',
  path: '/root/a', correlationId: 'cid', summary: 'child_failed /root/a', detail: 'exit_code=3', ...over,
});

test('an empty filter passes every row kind', () => {
  const f = makeViewFilter();
  for (const kind of ['event', 'log', 'audit', 'result']) assert.ok(matchRow(row({ kind }), f));
});

test('each condition narrows events independently', () => {
  const cases = [
    [{ target_ids: ['other'] }, false], [{ target_ids: [T] }, true],
    [{ severities: ['warning'] }, false], [{ severities: ['error', 'warning'] }, true],
    [{ event_types: ['child_paused'] }, false], [{ event_types: ['child_failed'] }, true],
    [{ sequence_min: 11 }, false], [{ sequence_min: 10 }, true],
    [{ correlation_id: 'other' }, false], [{ correlation_id: 'cid' }, true],
    [{ child_paths: ['/root/b'] }, false], [{ child_paths: ['/root'] }, true],
    [{ lifecycle_states: ['paused'] }, false], [{ lifecycle_states: ['failed'] }, true],
  ];
  for (const [conditions, expected] of cases) {
    assert.equal(matchRow(row(), makeViewFilter({ conditions })), expected, JSON.stringify(conditions));
  }
});

test('an event’s lifecycle comes from its payload, else from its type', () => {
  assert.equal(eventLifecycle(row({ raw: { payload: { lifecycle_state: 'stopping' } } })), 'stopping');
  assert.equal(eventLifecycle(row({ raw: { payload: {} } })), 'failed');
  assert.equal(EVENT_LIFECYCLE.child_paused, 'paused');
});

test('logs follow the relay: severity, sequence, correlation and path apply; type and lifecycle do not', () => {
  const logRow = row({ kind: 'log', type: 'log', severity: 'info', path: '/root/p' });
  const pass = (conditions) => matchRow(logRow, makeViewFilter({ conditions }));
  assert.ok(pass({ event_types: ['child_failed'] }));
  assert.ok(pass({ lifecycle_states: ['failed'] }));
  assert.equal(pass({ severities: ['error'] }), false);
  assert.equal(pass({ child_paths: ['/root/a'] }), false);
  assert.equal(pass({ sequence_min: 11 }), false);
  assert.equal(pass({ correlation_id: 'x' }), false);
});

test('audit records and results pass every contract condition except the target', () => {
  for (const kind of ['audit', 'result']) {
    const r = row({ kind, sequence: null, severity: 'info', path: null });
    assert.ok(matchRow(r, makeViewFilter({ conditions: { severities: ['error'], sequence_min: 5, child_paths: ['/x'], event_types: ['y'] } })));
    assert.equal(matchRow(r, makeViewFilter({ conditions: { target_ids: ['other'] } })), false);
  }
});

test('events lacking the tested field do not pass that condition', () => {
  assert.equal(matchRow(row({ path: null }), makeViewFilter({ conditions: { child_paths: ['/root'] } })), false);
  assert.equal(matchRow(row({ sequence: null }), makeViewFilter({ conditions: { sequence_min: 0 } })), false);
});

test('kinds and free text are local filters', () => {
  assert.equal(matchRow(row(), makeViewFilter({ kinds: ['log'] })), false);
  assert.ok(matchRow(row(), makeViewFilter({ text: 'EXIT_code' })));
  assert.equal(matchRow(row(), makeViewFilter({ text: 'nothing' })), false);
});

test('child path matching covers the node and its descendants only', () => {
  assert.ok(pathMatches('/root/sup/a', ['/root/sup']));
  assert.ok(pathMatches('/root/sup', ['/root/sup/']));
  assert.equal(pathMatches('/root/super', ['/root/sup']), false);
  assert.equal(pathMatches(null, ['/root']), false);
});

test('allRows merges targets in arrival order', () => {
  const store = new Store();
  store.apply(eventMsg('a', 1));
  store.apply(logMsg('b', 1));
  store.apply(eventMsg('b', 1));
  store.apply(logMsg('a', 1));
  store.apply(fixture('session.audit_event'));
  const rows = allRows(store);
  assert.deepEqual(rows.map((r) => r.id), [1, 2, 3, 4, 5]);
  assert.deepEqual(rows.map((r) => `${r.targetId}:${r.kind}`), ['a:event', 'b:log', 'b:event', 'a:log', `${T}:audit`]);
});

test('TimelineView appends matching rows and drops evicted ones', () => {
  const store = new Store();
  const view = new TimelineView(store, makeViewFilter({ conditions: { severities: ['error'] } }));
  store.apply(eventMsg(T, 1, { severity: 'error' }));
  store.apply(eventMsg(T, 2, { severity: 'info' }));
  assert.equal(view.update(store.takeChanges()), true);
  assert.deepEqual(view.rows.map((r) => r.sequence), [1]);
  for (let i = 0; i < LIMITS.eventsPerTarget; i += 1) store.apply(eventMsg(T, 3 + i, { severity: 'info' }));
  view.update(store.takeChanges());
  assert.deepEqual(view.rows, [], 'the evicted error row left the view');
  view.setFilter(makeViewFilter());
  assert.equal(view.rows.length, LIMITS.eventsPerTarget);
});

test('a filter changed between a row arriving and its frame shows the row once', () => {
  const store = new Store();
  const view = new TimelineView(store, makeViewFilter());
  store.apply(eventMsg(T, 1, { severity: 'error' }));
  view.setFilter(makeViewFilter({ conditions: { severities: ['error'] } })); // rebuild: row 1 in
  view.update(store.takeChanges()); // the frame that reports row 1
  assert.deepEqual(view.rows.map((r) => r.sequence), [1]);
});

test('rebuild applies a new filter to everything buffered', () => {
  const store = new Store();
  store.apply(fixture('session.state'));
  const view = new TimelineView(store, makeViewFilter({ conditions: { lifecycle_states: ['paused'] } }));
  view.rebuild();
  assert.deepEqual(view.rows.map((r) => r.kind), ['event', 'log'], 'child_paused implies paused; logs pass');
  view.setFilter(makeViewFilter({ conditions: { lifecycle_states: ['running'] } }));
  assert.deepEqual(view.rows.map((r) => r.kind), ['log']);
});
