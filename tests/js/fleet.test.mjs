import test from 'node:test';
import assert from 'node:assert/strict';
import {
  CollapsedHosts, COLLAPSED_KEPT, DEFAULT_VISIBLE, OVERSCAN, ROW_HEIGHT, fleetSummary, hostGroups, hostOf, isFleet,
  listRows, matches, normaliseQuery, scrollToRow, targetHealth, visibleWindow,
} from '../../supervisor/relay/web/static/fleet.js';
import { Store } from '../../supervisor/relay/web/static/store.js';
import { memoryPrefs, runtimeRow } from './helpers.mjs';

// Store-shaped targets: {targetId, displayName, connectionState, info: {host_id}}.
function tg(targetId, { host = null, name = targetId, cs = 'connected' } = {}) {
  return { targetId, displayName: name, connectionState: cs, runtime: new Map(), info: host === null ? { target_id: targetId } : { target_id: targetId, host_id: host } };
}

test('the host of a target is its host_id; without any there is no fleet', () => {
  assert.equal(hostOf(tg('a', { host: 'h1' })), 'h1');
  assert.equal(hostOf(tg('a')), null);
  assert.equal(hostOf({ targetId: 'x', info: null }), null);
  assert.equal(hostOf({ targetId: 'x', info: { host_id: 7 } }), null, 'not a string: no host');
  assert.equal(isFleet([tg('a'), tg('b')]), false);
  assert.equal(isFleet([tg('a'), tg('h1/b', { host: 'h1' })]), true);
});

test('the search matches id, display name and host, ignoring case and blanks', () => {
  const x = tg('h-7/payments', { host: 'h-7', name: 'Payments Worker' });
  assert.equal(normaliseQuery('  WORKER '), 'worker');
  for (const q of ['', 'pay', 'worker', 'h-7', 'H-7/P'.toLowerCase()]) assert.equal(matches(x, q), true, q);
  assert.equal(matches(x, 'orders'), false);
});

test('without hosts the rows are the matching targets, in order, no headers', () => {
  const { fleet, rows } = listRows([tg('a'), tg('b'), tg('c')], { query: 'b' });
  assert.equal(fleet, false);
  assert.deepEqual(rows.map((r) => [r.kind, r.key]), [['target', 'b']]);
  assert.deepEqual(listRows([tg('a'), tg('b')]).rows.map((r) => r.key), ['a', 'b']);
});

test('hosts group their targets in order; failed counts troubled children plus unavailable targets', () => {
  const targets = [tg('h1/a', { host: 'h1' }), tg('h2/a', { host: 'h2', cs: 'unavailable' }), tg('h1/b', { host: 'h1' }),
    tg('h2/b', { host: 'h2', cs: 'unavailable' }), tg('h3/a', { host: 'h3', cs: 'unavailable' }), tg('h3/b', { host: 'h3' })];
  const health = new Map(targets.map((x) => [x.targetId, { children: x.targetId === 'h1/b' ? 2 : 0, unavailable: x.connectionState === 'unavailable' }]));
  const groups = hostGroups(targets, health);
  assert.deepEqual([...groups.keys()], ['h1', 'h2', 'h3']);
  assert.deepEqual(groups.get('h1').targets.map((x) => x.targetId), ['h1/a', 'h1/b']);
  assert.deepEqual([groups.get('h1').failed, groups.get('h1').unavailable], [2, false]);
  assert.deepEqual([groups.get('h2').failed, groups.get('h2').unavailable], [2, true], 'every target unavailable: the host is');
  assert.deepEqual([groups.get('h3').failed, groups.get('h3').unavailable], [1, false], 'one of two: the host is not');
  const { fleet, rows } = listRows(targets, { health, collapsed: new Set(['h2']) });
  assert.equal(fleet, true);
  assert.deepEqual(rows.map((r) => r.key), ['host:h1', 'h1/a', 'h1/b', 'host:h2', 'host:h3', 'h3/a', 'h3/b']);
  assert.deepEqual(rows.filter((r) => r.kind === 'host').map((r) => r.open), [true, false, true]);
});

test('a search shows only hosts with matches, collapsed ones opened, with their match counts', () => {
  const targets = [tg('h1/api', { host: 'h1' }), tg('h1/db', { host: 'h1' }), tg('h2/api', { host: 'h2' }), tg('h3/cache', { host: 'h3' })];
  const { rows } = listRows(targets, { query: 'API', collapsed: new Set(['h2']) });
  assert.deepEqual(rows.map((r) => r.key), ['host:h1', 'h1/api', 'host:h2', 'h2/api']);
  assert.deepEqual(rows.filter((r) => r.kind === 'host').map((r) => [r.hits, r.group.targets.length, r.open]), [[1, 2, true], [1, 1, true]]);
  assert.deepEqual(listRows(targets, { query: 'h3' }).rows.map((r) => r.key), ['host:h3', 'h3/cache'], 'the host name matches');
  assert.deepEqual(listRows(targets, { query: 'nothing' }).rows, []);
  const mixed = listRows([tg('lonely'), tg('h1/a', { host: 'h1' })]).rows;
  assert.deepEqual(mixed.map((r) => r.key), ['host:', 'lonely', 'host:h1', 'h1/a'], 'targets without a host gather under one header');
});

test('the virtual window covers the visible rows plus overscan, and spacers the rest', () => {
  const viewport = 10 * ROW_HEIGHT;
  assert.deepEqual(visibleWindow({ count: 10000, scrollTop: 0, viewport }),
    { start: 0, end: 11 + OVERSCAN, before: 0, after: (10000 - 11 - OVERSCAN) * ROW_HEIGHT });
  const mid = visibleWindow({ count: 10000, scrollTop: 5000 * ROW_HEIGHT + 5, viewport });
  assert.deepEqual([mid.start, mid.end], [5000 - OVERSCAN, 5011 + OVERSCAN]);
  assert.equal(mid.before + (mid.end - mid.start) * ROW_HEIGHT + mid.after, 10000 * ROW_HEIGHT, 'the list keeps its full height');
  const end = visibleWindow({ count: 10000, scrollTop: 10000 * ROW_HEIGHT - viewport, viewport });
  assert.deepEqual([end.end, end.after], [10000, 0]);
  assert.ok(end.end - end.start <= 11 + 2 * OVERSCAN);
  const past = visibleWindow({ count: 30, scrollTop: 1e9, viewport });
  assert.deepEqual([past.start, past.end, past.after], [30 - OVERSCAN, 30, 0], 'scrolled past a shrunken list');
  assert.equal(visibleWindow({ count: 1000, viewport: 0 }).end, DEFAULT_VISIBLE + OVERSCAN, 'no height yet: a default window');
  assert.deepEqual(visibleWindow({ count: 0, viewport }), { start: 0, end: 0, before: 0, after: 0 });
});

test('scrolling to a row moves only as far as needed', () => {
  const viewport = 5 * ROW_HEIGHT;
  assert.equal(scrollToRow(2, { scrollTop: 0, viewport }), 0, 'already visible');
  assert.equal(scrollToRow(9, { scrollTop: 0, viewport }), 5 * ROW_HEIGHT, 'below: its bottom at the bottom');
  assert.equal(scrollToRow(1, { scrollTop: 4 * ROW_HEIGHT, viewport }), ROW_HEIGHT, 'above: its top at the top');
});

test('the fleet summary counts hosts, unavailable hosts, targets per state and troubled targets', () => {
  const targets = [tg('h1/a', { host: 'h1' }), tg('h1/b', { host: 'h1', cs: 'reconnecting' }),
    tg('h2/a', { host: 'h2', cs: 'unavailable' }), tg('h2/b', { host: 'h2', cs: 'unavailable' })];
  const health = new Map([['h1/a', { children: 3, unavailable: false }], ['h1/b', { children: 1, unavailable: false }],
    ['h2/a', { children: 0, unavailable: true }], ['h2/b', { children: 0, unavailable: true }]]);
  assert.deepEqual(fleetSummary(targets, health, ['registered', 'connected', 'reconnecting', 'unavailable']), {
    hosts: 2, hostsUnavailable: 1, targets: 4, targetsFailing: 2, childrenFailing: 4,
    byState: [['connected', 1], ['reconnecting', 1], ['unavailable', 2]],
  });
});

test("a target's health counts failed and quarantined children as the store knows them", () => {
  const store = new Store();
  store.apply({ type: 'target_list', targets: [{ target_id: 'h1/a', host_id: 'h1', display_name: 'a', connection_state: 'unavailable', supported_commands: [] }] });
  store.apply({ type: 'state_delta', target_id: 'h1/a', delta: { runtime_state: [
    runtimeRow('/root/x', 'failed'), runtimeRow('/root/y', 'quarantined'), runtimeRow('/root/z', 'running')] } });
  const t = store.targets.get('h1/a');
  assert.deepEqual(targetHealth(store, t, store.now().getTime()), { children: 2, unavailable: true });
});

test('collapsed hosts are remembered in the preferences, bounded', () => {
  const prefs = memoryPrefs();
  const hosts = new CollapsedHosts(prefs);
  assert.equal(hosts.has('h1'), false);
  assert.equal(hosts.set('h1'), true, 'flips to collapsed');
  hosts.set('h2', true);
  assert.equal(hosts.set('h2'), false, 'flips back');
  assert.deepEqual([...new CollapsedHosts(prefs).hosts], ['h1'], 'a reload reads them back');
  assert.equal(new CollapsedHosts(memoryPrefs({ collapsed_hosts: '{not json' })).hosts.size, 0);
  for (let i = 0; i < COLLAPSED_KEPT + 5; i += 1) hosts.set(`x${i}`, true);
  assert.equal(hosts.hosts.size, COLLAPSED_KEPT);
  assert.equal(hosts.has('h1'), false, 'the longest remembered goes first');
});
