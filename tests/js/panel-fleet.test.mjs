import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { TargetsPanel } from '../../supervisor/relay/web/static/panels/targets.js';
import { Selection } from '../../supervisor/relay/web/static/selection.js';
import { Store } from '../../supervisor/relay/web/static/store.js';
import { ROW_HEIGHT, VIRTUAL_FROM } from '../../supervisor/relay/web/static/fleet.js';
import { fire, key, loadPage, type } from './dom-shim.mjs';
import { contractStore, memoryPrefs, runtimeRow } from './helpers.mjs';

setLanguage('en');

const entry = (id, host, cs = 'connected') => ({
  target_id: id, display_name: `${id.split('/').pop()} worker`, registration_state: 'active', connection_state: cs,
  supported_commands: [], ...(host === null ? {} : { host_id: host }),
});

function setup(targets, { prefs = memoryPrefs(), store = new Store() } = {}) {
  const doc = loadPage();
  store.apply({ type: 'target_list', targets });
  const selection = new Selection(prefs);
  const picked = [];
  const panel = new TargetsPanel(doc, { store, selection, prefs, onSelect: (id) => picked.push(id) });
  panel.render();
  return { doc, store, selection, panel, picked, prefs, list: doc.getElementById('target-list') };
}

const rows = (doc) => doc.querySelectorAll('#target-list li.row');
const keys = (doc) => doc.querySelectorAll('#target-list li.row button').map((b) => b.dataset.rowKey);
const header = (doc, host) => doc.querySelector(`#target-list button.host-group[data-host-id="${host}"]`);

function twoHosts() {
  return [entry('alpha/api', 'alpha'), entry('alpha/db', 'alpha'), entry('beta/api', 'beta', 'unavailable'), entry('beta/cache', 'beta', 'unavailable')];
}

test('targets with host_id are grouped under host headers with counts, failed and unavailable', () => {
  const { doc, store, panel } = setup(twoHosts());
  store.apply({ type: 'state_delta', target_id: 'alpha/db', delta: { runtime_state: [runtimeRow('/root/x', 'failed'), runtimeRow('/root/y', 'quarantined')] } });
  panel.render();
  assert.deepEqual(keys(doc), ['host:alpha', 'alpha/api', 'alpha/db', 'host:beta', 'beta/api', 'beta/cache']);
  const alpha = header(doc, 'alpha');
  assert.equal(alpha.querySelector('.name').textContent, 'alpha');
  assert.equal(alpha.querySelector('.badge.count').textContent, '2 targets');
  assert.equal(alpha.querySelector('.badge.failed').textContent, '2 failed', 'a failed and a quarantined child');
  assert.equal(alpha.querySelector('.badge.cs-unavailable').hidden, true);
  const beta = header(doc, 'beta');
  assert.equal(beta.querySelector('.badge.failed').textContent, '2 failed', 'two unavailable targets');
  assert.equal(beta.querySelector('.badge.cs-unavailable').hidden, false);
  assert.equal(beta.querySelector('.badge.cs-unavailable').textContent, 'host unavailable');
  assert.equal(doc.getElementById('fleet-summary').hidden, false);
  assert.equal(doc.getElementById('fleet-hosts').textContent, '2 · 1 unavailable');
  assert.deepEqual(doc.querySelectorAll('#fleet-states .badge').map((b) => b.textContent), ['connected 2', 'unavailable 2']);
  assert.equal(doc.getElementById('fleet-health').textContent, '2 failed children in 1 targets');
  assert.equal(doc.getElementById('target-search').hidden, false);
  setLanguage('zh');
  panel.render();
  assert.equal(beta.querySelector('.badge.cs-unavailable').textContent, '主机不可用');
  assert.deepEqual(doc.querySelectorAll('#fleet-states .badge').map((b) => b.textContent), ['已连接 2', '不可用 2']);
  setLanguage('en');
});

test('a host collapses and expands by click and keyboard, and the choice survives a reload', () => {
  const prefs = memoryPrefs();
  const { doc, panel } = setup(twoHosts(), { prefs });
  header(doc, 'alpha').click();
  assert.deepEqual(keys(doc), ['host:alpha', 'host:beta', 'beta/api', 'beta/cache']);
  assert.equal(header(doc, 'alpha').getAttribute('aria-expanded'), 'false');
  header(doc, 'alpha').focus();
  key(header(doc, 'alpha'), 'ArrowRight');
  assert.deepEqual(keys(doc).slice(0, 3), ['host:alpha', 'alpha/api', 'alpha/db']);
  assert.equal(doc.activeElement, header(doc, 'alpha'));
  key(header(doc, 'alpha'), 'ArrowDown');
  assert.equal(doc.activeElement.dataset.rowKey, 'alpha/api');
  key(doc.activeElement, 'ArrowLeft');
  assert.equal(doc.activeElement, header(doc, 'alpha'), 'Left on a target goes to its host');
  key(doc.activeElement, 'ArrowLeft');
  assert.equal(header(doc, 'alpha').getAttribute('aria-expanded'), 'false');
  assert.equal(panel.collapsed.has('alpha'), true);
  // a reload (a new page over the same preferences) shows it collapsed
  const again = setup(twoHosts(), { prefs });
  assert.deepEqual(keys(again.doc), ['host:alpha', 'host:beta', 'beta/api', 'beta/cache']);
});

test('the search filters targets across hosts by id, name or host', () => {
  const { doc, selection } = setup(twoHosts());
  header(doc, 'beta').click(); // collapsed: a search still shows its matches
  const search = doc.getElementById('target-search');
  type(search, 'API');
  assert.deepEqual(keys(doc), ['host:alpha', 'alpha/api', 'host:beta', 'beta/api']);
  assert.equal(header(doc, 'alpha').querySelector('.badge.count').textContent, '1 of 2 targets');
  type(search, 'cache worker');
  assert.deepEqual(keys(doc), ['host:beta', 'beta/cache']);
  type(search, 'alpha');
  assert.deepEqual(keys(doc), ['host:alpha', 'alpha/api', 'alpha/db']);
  type(search, 'nothing like it');
  assert.deepEqual(keys(doc), []);
  assert.equal(doc.getElementById('no-target-matches').hidden, false);
  assert.equal(doc.getElementById('no-targets').hidden, true);
  type(search, '');
  assert.deepEqual(keys(doc), ['host:alpha', 'alpha/api', 'alpha/db', 'host:beta']);
  doc.querySelector('#target-list button.target[data-target-id="alpha/db"]').click();
  assert.equal(selection.targetId, null, 'selection goes through onSelect');
});

test('without host_id: no headers, no summary, no search box, the list as before', () => {
  const { doc } = setup([entry('a', null), entry('b', null, 'unavailable')]);
  assert.deepEqual(keys(doc), ['a', 'b']);
  assert.equal(doc.querySelectorAll('#target-list .host-group').length, 0);
  assert.equal(doc.getElementById('fleet-summary').hidden, true);
  assert.equal(doc.getElementById('target-search').hidden, true);
  assert.equal(doc.getElementById('target-list').classList.contains('virtual'), false);
  assert.ok(doc.querySelectorAll('#target-list li.spacer').every((s) => s.hidden), 'spacers take no room');
  const { doc: doc2 } = setup([]);
  assert.equal(doc2.getElementById('no-targets').hidden, false);
  assert.equal(doc2.getElementById('no-target-matches').hidden, true);
  // the contract's own session has no host_id either
  const store = contractStore();
  const { doc: doc3 } = setup(store.listedTargets().map((x) => x.info), { store });
  assert.equal(doc3.getElementById('fleet-summary').hidden, true);
});

function bigFleet(hosts, perHost) {
  const out = [];
  for (let hI = 0; hI < hosts; hI += 1) {
    const host = `host-${String(hI).padStart(4, '0')}`;
    for (let i = 0; i < perHost; i += 1) out.push(entry(`${host}/t${i}`, host, hI % 100 === 7 ? 'unavailable' : 'connected'));
  }
  return out;
}

test('10,000 targets: only a window of rows is in the list, with spacers, and scrolling moves it', () => {
  const { doc, list, store, panel } = setup(bigFleet(1000, 10));
  assert.equal(list.classList.contains('virtual'), true);
  const total = 11000; // 1000 headers and 10,000 targets
  assert.equal(panel.rows.length, total);
  assert.ok(rows(doc).length > 0 && rows(doc).length < 60, rows(doc).length);
  assert.equal(keys(doc)[0], 'host:host-0000');
  list.clientHeight = 20 * ROW_HEIGHT;
  list.scrollTop = total * ROW_HEIGHT - list.clientHeight;
  fire(list, 'scroll');
  assert.ok(rows(doc).length < 60, rows(doc).length);
  assert.equal(keys(doc).at(-1), 'host-0999/t9', 'the last target is rendered');
  const [top, bottom] = doc.querySelectorAll('#target-list li.spacer');
  assert.equal(Number.parseFloat(top.style.height) + rows(doc).length * ROW_HEIGHT + Number.parseFloat(bottom.style.height), total * ROW_HEIGHT);
  assert.equal(doc.getElementById('fleet-hosts').textContent, '1000 · 10 unavailable');
  // a new target_list updates the rows by target id: the rows on screen are the same elements
  const last = doc.querySelector('#target-list button[data-row-key="host-0999/t9"]');
  store.apply({ type: 'target_list', targets: bigFleet(1000, 10).map((e) => (e.target_id === 'host-0999/t9' ? { ...e, connection_state: 'reconnecting' } : e)) });
  panel.render();
  assert.equal(doc.querySelector('#target-list button[data-row-key="host-0999/t9"]'), last);
  assert.equal(last.querySelector('.badge.cs').textContent, 'reconnecting');
  // keyboard: Home goes to the first row (scrolled to it), End back to the last
  last.focus();
  key(last, 'Home');
  assert.equal(list.scrollTop, 0);
  assert.equal(doc.activeElement.dataset.rowKey, 'host:host-0000');
  key(doc.activeElement, 'End');
  assert.equal(doc.activeElement.dataset.rowKey, 'host-0999/t9');
  assert.ok(rows(doc).length < 60);
});

test('a list grows virtual only past VIRTUAL_FROM rows', () => {
  const few = Array.from({ length: VIRTUAL_FROM }, (_, i) => entry(`t${i}`, null));
  const { doc, list } = setup(few);
  assert.equal(list.classList.contains('virtual'), false);
  assert.equal(rows(doc).length, VIRTUAL_FROM);
  const { list: list2 } = setup([...few, entry('one-more', null)]);
  assert.equal(list2.classList.contains('virtual'), true);
});
