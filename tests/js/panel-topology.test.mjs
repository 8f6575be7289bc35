import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { TopologyPanel } from '../../supervisor/relay/web/static/panels/topology.js';
import { Selection } from '../../supervisor/relay/web/static/selection.js';
import { PositionMemory, memoryStorage } from '../../supervisor/relay/web/static/storage.js';
import { LIFECYCLE_STATES } from '../../supervisor/relay/web/static/vocabulary.js';
import { fire, key, loadPage, type } from './dom-shim.mjs';
import { TARGET, contractStore, memoryPrefs, runtimeRow, syntheticTopology } from './helpers.mjs';

setLanguage('en');

function setup({ selected = TARGET, topology = null } = {}) {
  const doc = loadPage();
  doc.getElementById('topology-svg').rect = { width: 800, height: 500 };
  const store = contractStore();
  if (topology) {
    store.apply({
      type: 'state_delta', target_id: TARGET,
      delta: { topology, runtime_state: topology.nodes.slice(1).map((n, i) => runtimeRow(n.path, i % 3 ? 'running' : 'failed')) },
    });
  }
  const selection = new Selection(memoryPrefs(selected ? { selected_target: selected } : {}));
  const storage = memoryStorage();
  const picked = [];
  const panel = new TopologyPanel(doc, {
    store, selection, memory: new PositionMemory(storage), onSelect: (path) => picked.push(path),
  });
  return { doc, store, selection, panel, picked, storage };
}

const node = (doc, path) => doc.querySelector(`#topology-svg g.node[data-path="${path}"]`);

test('the selected target\'s tree is drawn with lifecycle colours and a title', () => {
  const { doc, panel } = setup();
  panel.render();
  assert.deepEqual(doc.querySelectorAll('#topology-svg g.node').map((g) => g.getAttribute('data-path')), ['/root', '/root/invoice_writer']);
  assert.equal(node(doc, '/root/invoice_writer').getAttribute('class'), 'node st-paused');
  assert.equal(node(doc, '/root').getAttribute('class'), 'node st-running', 'the root falls back to its summary');
  assert.equal(node(doc, '/root/invoice_writer').querySelector('text.name').textContent, 'invoice writer');
  assert.equal(doc.getElementById('topology-empty').hidden, true);
  assert.equal(doc.getElementById('topology-target').textContent, 'payments worker a · connected');
  assert.equal(doc.getElementById('topology-target').className, 'muted cs-text cs-connected');
  assert.match(doc.querySelector('#topology-svg g.viewport').getAttribute('transform'), /^translate\(.+\) scale\(.+\)$/, 'fitted');
});

test('without a selected target the panel says to pick one', () => {
  const { doc, panel } = setup({ selected: null });
  panel.render();
  assert.equal(doc.querySelectorAll('#topology-svg g.node').length, 0);
  assert.equal(doc.getElementById('topology-empty').hidden, false);
  assert.equal(doc.getElementById('topology-empty').textContent, 'Select a target to see its tree.');
  assert.equal(doc.getElementById('topology-target').textContent, '');
});

test('clicking a node selects it; runtime changes re-colour only what changed', () => {
  const { doc, store, panel, picked } = setup({ topology: syntheticTopology(5) });
  panel.render();
  const g = node(doc, '/root/w1');
  fire(g, 'pointerdown', { button: 0, clientX: 10, clientY: 10, pointerId: 1 });
  fire(g, 'pointerup', { clientX: 10, clientY: 10, pointerId: 1 });
  assert.deepEqual(picked, ['/root/w1']);
  assert.equal(g.getAttribute('class'), 'node st-running selected');
  store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/w1', 'restarting'), runtimeRow('/root/w2', 'paused')] } });
  panel.refreshStates(new Set(['/root/w1']));
  assert.equal(g.getAttribute('class'), 'node st-restarting selected');
  assert.equal(node(doc, '/root/w2').getAttribute('class'), 'node st-running', 'not in the changed set');
});

test('search marks matches, Enter selects the first; failed only dims the rest', () => {
  const { doc, panel, picked } = setup({ topology: syntheticTopology(12) });
  panel.render();
  type(doc.getElementById('node-search'), 'worker 1');
  const matches = doc.querySelectorAll('#topology-svg g.node.match').map((g) => g.getAttribute('data-path'));
  assert.deepEqual(matches, ['/root/w1', '/root/w10', '/root/w11']);
  assert.equal(doc.querySelectorAll('#topology-svg g.node.dim').length, 16 - 3);
  const enter = key(doc.getElementById('node-search'), 'Enter');
  assert.equal(enter, false, 'Enter is handled (default prevented)');
  assert.deepEqual(picked, ['/root/w1']);
  type(doc.getElementById('node-search'), '');
  const failedOnly = doc.getElementById('failed-only');
  failedOnly.click();
  const failed = doc.querySelectorAll('#topology-svg g.node.st-failed');
  assert.ok(failed.length > 0);
  assert.equal(doc.querySelectorAll('#topology-svg g.node.st-failed.dim').length, 0);
  assert.equal(doc.querySelectorAll('#topology-svg g.node.dim').length, 16 - failed.length);
});

test('a redraw keeps the selected node and the search', () => {
  const { doc, selection, panel } = setup({ topology: syntheticTopology(5) });
  selection.selectNode('/root/w2');
  type(doc.getElementById('node-search'), 'sub');
  panel.render();
  assert.match(node(doc, '/root/w2').getAttribute('class'), /\bselected\b/);
  assert.deepEqual(doc.querySelectorAll('#topology-svg g.node.match').map((g) => g.getAttribute('data-path')),
    ['/root/sub', '/root/sub/a', '/root/sub/b']);
});

test('a dragged node is remembered for its target until relayout', () => {
  const { doc, panel, storage, picked } = setup({ topology: syntheticTopology(3) });
  panel.render();
  const before = node(doc, '/root/w0').getAttribute('transform');
  const g = node(doc, '/root/w0');
  fire(g, 'pointerdown', { button: 0, clientX: 100, clientY: 100, pointerId: 1 });
  fire(g, 'pointermove', { clientX: 150, clientY: 180, pointerId: 1 });
  fire(g, 'pointerup', { clientX: 150, clientY: 180, pointerId: 1 });
  assert.deepEqual(picked, [], 'a drag is not a click');
  const moved = node(doc, '/root/w0').getAttribute('transform');
  assert.notEqual(moved, before);
  assert.ok(storage.getItem(`supervisor-dashboard.positions.${TARGET}`).includes('/root/w0'));
  panel.render();
  assert.equal(node(doc, '/root/w0').getAttribute('transform'), moved, 'a redraw keeps the hand-placed position');
  doc.getElementById('relayout').click();
  assert.equal(node(doc, '/root/w0').getAttribute('transform'), before);
  assert.equal(storage.getItem(`supervisor-dashboard.positions.${TARGET}`), null);
});

test('zoom buttons scale the view around its centre; the legend lists every lifecycle', () => {
  const { doc, panel } = setup();
  panel.render();
  const scale = () => Number(/scale\(([\d.]+)\)/.exec(doc.querySelector('#topology-svg g.viewport').getAttribute('transform'))[1]);
  const k0 = scale();
  doc.getElementById('zoom-in').click();
  assert.equal(scale(), Math.round(k0 * 1.25 * 1000) / 1000);
  doc.getElementById('zoom-out').click();
  assert.equal(scale(), Math.round(k0 * 1000) / 1000);
  panel.relabel();
  const legend = doc.querySelectorAll('#legend li');
  assert.deepEqual(legend.map((li) => li.querySelector('.swatch').className), LIFECYCLE_STATES.map((s) => `swatch st-${s}`));
  assert.equal(legend[0].textContent, 'starting');
});

test('names and paths from the target are drawn as text, never as markup', () => {
  const topology = syntheticTopology(2);
  topology.nodes[1].name = '<img src=x onerror="alert(1)">';
  const { doc, panel } = setup({ topology });
  panel.render();
  const g = node(doc, '/root/w0');
  assert.equal(g.querySelector('text.name').textContent, '<img src=x onerror=…');
  assert.equal(doc.querySelector('#topology-svg img'), null);
});

test('the selected node is exposed to screen readers as the tree\'s active item', () => {
  const { doc, selection, panel } = setup({ topology: syntheticTopology(3) });
  panel.render();
  const svg = doc.getElementById('topology-svg');
  assert.equal(svg.getAttribute('role'), 'tree');
  assert.ok(doc.querySelectorAll('#topology-svg g.node').every((g) => g.getAttribute('role') === 'treeitem'
    && g.getAttribute('aria-selected') === 'false'));
  assert.equal(svg.getAttribute('aria-activedescendant'), null);
  svg.focus();
  key(svg, 'ArrowDown');
  const active = doc.getElementById(svg.getAttribute('aria-activedescendant'));
  assert.equal(active.getAttribute('data-path'), '/root');
  assert.equal(active.getAttribute('aria-selected'), 'true');
  key(svg, 'ArrowDown');
  assert.equal(node(doc, '/root').getAttribute('aria-selected'), 'false');
  assert.equal(doc.getElementById(svg.getAttribute('aria-activedescendant')).getAttribute('data-path'), '/root/w0');
  selection.selectNode('/root/w1');
  panel.render(); // a redraw keeps it
  assert.equal(doc.getElementById(svg.getAttribute('aria-activedescendant')).getAttribute('data-path'), '/root/w1');
});

test('failed only keeps the children that are failing, also while they restart', () => {
  const { doc, store, panel } = setup({ topology: syntheticTopology(3) });
  panel.render();
  for (const lifecycle of ['running', 'failed', 'restarting']) {
    store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/w1', lifecycle)] } });
  }
  panel.refreshStates(new Set(['/root/w1']));
  doc.getElementById('failed-only').click();
  assert.equal(node(doc, '/root/w1').getAttribute('class'), 'node st-restarting');
  assert.match(node(doc, '/root/w2').getAttribute('class'), /\bdim\b/);
});
