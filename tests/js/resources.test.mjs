import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { AlertsPanel } from '../../supervisor/relay/web/static/panels/alerts.js';
import { DetailPanel } from '../../supervisor/relay/web/static/panels/detail.js';
import { TopologyPanel } from '../../supervisor/relay/web/static/panels/topology.js';
import {
  HISTORY, ResourceHistory, compactFigures, formatBytes, siblingRank, sparkPath,
} from '../../supervisor/relay/web/static/resources.js';
import { Selection } from '../../supervisor/relay/web/static/selection.js';
import { PositionMemory, memoryStorage } from '../../supervisor/relay/web/static/storage.js';
import { layoutTree, rankSiblings } from '../../supervisor/relay/web/static/topology-layout.js';
import { fire, loadPage } from './dom-shim.mjs';
import { TARGET, TestClock, contractStore, fixture, memoryPrefs, runtimeRow, syntheticTopology } from './helpers.mjs';

setLanguage('en');
const MIB = 1024 * 1024;
const MIN = 60 * 1000;
const T0 = Date.parse('2026-11-28T13:00:00Z');

const figures = (cpu, rss, extra = {}) => ({ cpu_percent: cpu, rss_bytes: rss, open_fds: 9, threads: 3, ...extra });

test('the history holds samples as steps over 15 minutes and counts restarts per minute', () => {
  const h = new ResourceHistory();
  h.record('/root/a', figures(10, 40 * MIB), T0 - 20 * MIN); // before the window: the value carried in
  h.record('/root/a', figures(50, 80 * MIB), T0 - 7.5 * MIN);
  h.record('/root/a', null, T0 - 1 * MIN); // the process went away
  h.restart('/root/a', T0 - 14.5 * MIN, 2);
  h.restart('/root/a', T0 - 30 * 1000);
  h.restart('/root/a', T0 - 16 * MIN); // out of the window
  const s = h.series('/root/a', T0);
  assert.equal(s.cpu.length, HISTORY.buckets);
  assert.equal(s.cpu[0], 10);
  assert.equal(s.cpu[29], 50, 'the bucket that ends at the sample shows it');
  assert.equal(s.cpu[28], 10);
  assert.equal(s.rss[50], 80 * MIB);
  assert.equal(s.cpu[56], null, 'gone: the line breaks');
  assert.deepEqual(s.restarts, [2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  assert.deepEqual(h.series('/root/none', T0).cpu, new Array(HISTORY.buckets).fill(null));
});

test('the history is bounded and ignores replayed older samples', () => {
  const h = new ResourceHistory({ ...HISTORY, maxPoints: 5, maxRestarts: 3 });
  for (let i = 0; i < 20; i += 1) h.record('/root/a', figures(i, MIB), T0 + i * 1000);
  h.record('/root/a', figures(99, MIB), T0); // older than the last one kept
  assert.equal(h.nodes.get('/root/a').points.length, 5);
  assert.equal(h.nodes.get('/root/a').points.at(-1).cpu, 19);
  for (let i = 0; i < 10; i += 1) h.restart('/root/a', T0 + i);
  assert.equal(h.nodes.get('/root/a').restarts.length, 3);
  // samples leave once they fall out of the window (the last one before it carries its value)
  h.record('/root/a', figures(1, MIB), T0 + 20 * MIN);
  h.record('/root/a', figures(2, MIB), T0 + 40 * MIN);
  assert.deepEqual(h.nodes.get('/root/a').points.map((p) => p.cpu), [1, 2]);
});

test('sparklines, sizes and the compact figure', () => {
  assert.equal(sparkPath([0, 5, 10, null, 10], 40, 20), 'M0,20L10,10L20,0M40,0');
  assert.equal(sparkPath([0, 0], 10, 20, 1), 'M0,20L10,20', 'a floor keeps a flat zero line at the bottom');
  assert.equal(sparkPath([null, null], 10, 10), '');
  assert.deepEqual([900, 1536, 40 * MIB, 1.5 * 1024 * MIB].map(formatBytes), ['900B', '1.5K', '40.0M', '1.5G']);
  assert.equal(compactFigures(figures(12.5, 40 * MIB)), '13% · 40.0M');
  assert.equal(compactFigures(figures(2.25, 900)), '2.3% · 900B');
  assert.equal(compactFigures(null), '');
});

test('siblings sort by a figure, largest first, those without one last as declared', () => {
  const res = { '/root/w0': figures(1, 5), '/root/w2': figures(30, 1), '/root/w3': figures(30, 9) };
  const rank = siblingRank('cpu', (p) => res[p] || null);
  assert.deepEqual(rankSiblings(['/root/w0', '/root/w1', '/root/w2', '/root/w3', '/root/w4'], rank),
    ['/root/w2', '/root/w3', '/root/w0', '/root/w1', '/root/w4']);
  assert.deepEqual(rankSiblings(['/root/w0', '/root/w1', '/root/w3'], siblingRank('rss', (p) => res[p] || null)),
    ['/root/w3', '/root/w0', '/root/w1']);
  assert.equal(siblingRank('declaration', () => null), null);
  const topo = syntheticTopology(4);
  const plain = layoutTree(topo).order;
  const sorted = layoutTree(topo, undefined, rank).order;
  assert.deepEqual(plain.slice(0, 5), ['/root', '/root/w0', '/root/w1', '/root/w2', '/root/w3']);
  assert.deepEqual(sorted.slice(0, 5), ['/root', '/root/w2', '/root/w3', '/root/w0', '/root/w1']);
});

// The store, from a state and deltas carrying figures as the target sends them.
function storeWithFigures(clock = new TestClock()) {
  const store = contractStore(clock);
  const tg = store.targets.get(TARGET);
  const at = (ms) => new Date(ms - tg.clockOffset).toISOString(); // the browser's ms, on the target's clock
  return { store, tg, at };
}

test('rows with figures and the target\'s own figures fill the history; restarts count', () => {
  const clock = new TestClock();
  const { store, tg, at } = storeWithFigures(clock);
  const row = fixture('session.state').state.runtime_state[0];
  store.takeChanges();
  store.apply({ type: 'state_delta', target_id: TARGET, delta: {
    state_generation: 60, runtime_state: [{ ...row, resources: figures(20, 40 * MIB, { sampled_at: at(T0 - 2 * MIN) }) }],
    target_resources: figures(1, 60 * MIB, { sampled_at: at(T0 - 2 * MIN) }) } });
  const changed = store.takeChanges().runtime.get(TARGET);
  assert.deepEqual([...changed].sort(), ['/root', '/root/invoice_writer']);
  assert.equal(store.resourcesOf(TARGET, '/root').rss_bytes, 60 * MIB);
  assert.equal(store.resourcesOf(TARGET, '/root/invoice_writer').cpu_percent, 20);
  store.apply({ type: 'state_delta', target_id: TARGET, delta: {
    runtime_state: [{ ...row, restart_count: row.restart_count + 3, resources: figures(60, 40 * MIB, { sampled_at: at(T0 - 1 * MIN) }) }] } });
  const s = tg.history.series('/root/invoice_writer', clock.ms);
  assert.equal(s.cpu[50], null, 'nothing before the first sample');
  assert.equal(s.cpu[51], 20);
  assert.equal(s.cpu[56], 60);
  assert.equal(s.restarts[14], 3);
  assert.equal(tg.history.series('/root', clock.ms).rss[59], 60 * MIB);
  // an unchanged target_resources (same sampled_at) marks nothing
  store.takeChanges();
  store.apply({ type: 'state_delta', target_id: TARGET, delta: { target_resources: figures(1, 60 * MIB, { sampled_at: at(T0 - 2 * MIN) }) } });
  assert.equal(store.takeChanges().runtime.size, 0);
});

test('the node detail draws CPU, RSS and restarts per minute; a task has restarts only', () => {
  const { store, at } = storeWithFigures();
  const row = fixture('session.state').state.runtime_state[0];
  store.apply({ type: 'state_delta', target_id: TARGET, delta: {
    runtime_state: [{ ...row, resources: figures(12.5, 40 * MIB, { sampled_at: at(T0 - MIN) }) }] } });
  const doc = loadPage();
  const selection = new Selection(memoryPrefs({ selected_target: TARGET }));
  const panel = new DetailPanel(doc, { store, selection });
  selection.selectNode('/root/invoice_writer');
  panel.render();
  const sparks = doc.querySelector('#node-detail .sparks');
  assert.equal(sparks.getAttribute('data-figures'), '13% · 40.0M');
  const labels = sparks.querySelectorAll('span.muted').map((s) => s.textContent);
  assert.deepEqual(labels, ['CPU', 'Memory (RSS)', 'Restarts / min']);
  assert.deepEqual(sparks.querySelectorAll('span.now').map((s) => s.textContent), ['13%', '40.0M', '0']);
  const paths = sparks.querySelectorAll('path').map((p) => p.getAttribute('d'));
  assert.equal(paths.length, 3);
  assert.match(paths[0], /^M\d/, 'a CPU line where there are samples');
  assert.match(doc.getElementById('node-detail').textContent, /Descriptors · threads: 9 · 3/);
  // a node without figures says why
  store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [{ ...row, resources: null }] } });
  store.targets.get(TARGET).history.forget('/root/invoice_writer');
  panel.render();
  assert.deepEqual(doc.querySelectorAll('#node-detail .sparks span.muted').map((s) => s.textContent), ['Restarts / min']);
  assert.equal(doc.querySelector('#node-detail p.no-figures').textContent, 'no figures (not an OS process, or sampling is off)');
});

test('tree nodes show their compact figures and siblings can be ordered by them', () => {
  const doc = loadPage();
  doc.getElementById('topology-svg').rect = { width: 800, height: 500 };
  const store = contractStore();
  const topo = syntheticTopology(3);
  for (const n of topo.nodes) if (n.path.startsWith('/root/w')) n.kind = 'child_process';
  const rss = { '/root/w0': 10 * MIB, '/root/w1': 90 * MIB, '/root/w2': 50 * MIB };
  store.apply({ type: 'state_delta', target_id: TARGET, delta: {
    topology: topo,
    runtime_state: topo.nodes.slice(1).map((n) => ({ ...runtimeRow(n.path), resources: rss[n.path] ? figures(5, rss[n.path], { sampled_at: '2026-11-28T13:05:15.123456Z' }) : null })) } });
  const selection = new Selection(memoryPrefs({ selected_target: TARGET }));
  const panel = new TopologyPanel(doc, { store, selection, memory: new PositionMemory(memoryStorage()), onSelect: () => {} });
  panel.render();
  const fig = (path) => doc.querySelector(`#topology-svg g.node[data-path="${path}"] text.figures`);
  assert.equal(fig('/root/w1').textContent, '5% · 90.0M');
  assert.equal(fig('/root/w0').textContent, '5% · 10.0M');
  assert.equal(fig('/root').textContent, '', 'the root has room for the target\'s own, none sent yet');
  const supervisors = topo.nodes.filter((n) => n.kind === 'supervisor').map((n) => n.path);
  assert.ok(supervisors.length > 0);
  for (const path of supervisors) assert.equal(fig(path), null, 'a nested supervisor is no OS process');
  const leaves = () => doc.querySelectorAll('#topology-svg g.node').map((g) => g.getAttribute('data-path')).filter((p) => /^\/root\/w\d$/.test(p));
  assert.deepEqual(leaves(), ['/root/w0', '/root/w1', '/root/w2']);
  const sort = doc.getElementById('node-sort');
  sort.value = 'rss';
  fire(sort, 'change');
  assert.deepEqual(leaves(), ['/root/w1', '/root/w2', '/root/w0']);
  assert.equal(fig('/root/w1').textContent, '5% · 90.0M', 'figures are drawn again after the new layout');
  sort.value = 'declaration';
  fire(sort, 'change');
  assert.deepEqual(leaves(), ['/root/w0', '/root/w1', '/root/w2']);
});

test('the alerts banner lists the relay\'s active alerts and picks the node of one', () => {
  const doc = loadPage();
  const store = contractStore();
  const picked = [];
  const panel = new AlertsPanel(doc, { store, onSelect: (...args) => picked.push(args) });
  panel.render();
  assert.equal(doc.getElementById('alerts-banner').hidden, true);
  const list = fixture('session.target_list');
  list.targets[0].active_alerts = [
    { alert_id: 'alert-2', rule: 'stale', kind: 'child_stale', child_path: '/root/invoice_writer',
      summary: '/root/invoice_writer stale for 60 s', started_at: '2026-11-28T13:06:00.000000Z' },
    { alert_id: 'alert-1', rule: 'storm', kind: 'restart_storm', child_path: '/root/invoice_writer',
      summary: '/root/invoice_writer restarted 5 times within 5 min', started_at: '2026-11-28T13:05:00.000000Z' },
  ];
  store.apply(list);
  panel.render();
  assert.equal(doc.getElementById('alerts-banner').hidden, false);
  assert.equal(doc.getElementById('alerts-title').textContent, '2 alerts firing');
  const items = doc.querySelectorAll('#alerts-list li');
  assert.deepEqual(items.map((li) => li.className), ['alert kind-restart_storm', 'alert kind-child_stale'], 'oldest first');
  assert.match(items[0].textContent, /payments worker a \/root\/invoice_writer restarted 5 times/);
  fire(items[1].querySelector('button'), 'click');
  assert.deepEqual(picked, [[TARGET, '/root/invoice_writer']]);
  list.targets[0].active_alerts = [];
  store.apply(list);
  panel.render();
  assert.equal(doc.getElementById('alerts-banner').hidden, true);
  assert.equal(doc.querySelectorAll('#alerts-list li').length, 0);
});
