import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { DetailPanel } from '../../supervisor/relay/web/static/panels/detail.js';
import { Selection } from '../../supervisor/relay/web/static/selection.js';
import { loadPage } from './dom-shim.mjs';
import { TARGET, contractStore, eventMsg, memoryPrefs } from './helpers.mjs';

setLanguage('en');

function setup() {
  const doc = loadPage();
  const store = contractStore();
  const selection = new Selection(memoryPrefs({ selected_target: TARGET }));
  return { doc, store, selection, panel: new DetailPanel(doc, { store, selection }) };
}

// The facts list as label -> value.
const facts = (doc) => {
  const dl = doc.querySelector('#node-detail dl.facts');
  const dts = dl.querySelectorAll('dt');
  return Object.fromEntries(dts.map((dt, i) => [dt.textContent, dl.querySelectorAll('dd')[i]]));
};

test('without a selected node the panel asks for one', () => {
  const { doc, panel } = setup();
  panel.render();
  assert.equal(doc.getElementById('node-detail').textContent, 'Select a node in the tree.');
});

test('the selected node shows its facts, runtime state and recent events', () => {
  const { doc, store, selection, panel } = setup();
  store.apply({ type: 'event', target_id: TARGET, event: { ...eventMsg(TARGET, 1043).event, target_path: '/root/invoice_writer', event_type: 'child_resumed' } });
  selection.selectNode('/root/invoice_writer');
  panel.render();
  const host = doc.getElementById('node-detail');
  assert.equal(host.querySelector('.detail-title strong').textContent, 'invoice writer');
  assert.equal(host.querySelector('.badge.lc').className, 'badge lc st-paused');
  assert.equal(host.querySelector('.badge.lc').textContent, 'paused');
  const f = facts(doc);
  assert.equal(f.Path.textContent, '/root/invoice_writer');
  assert.equal(f.Path.className, 'mono path');
  assert.equal(f.Path.querySelectorAll('wbr').length, 2, 'a long path may wrap after each /, not inside a name');
  assert.equal(f['Kind · criticality'].textContent, 'process · standard');
  assert.equal(f['Lifecycle'], undefined, 'the badge shows it');
  assert.equal(f.Tags.textContent, 'billing');
  const events = host.querySelectorAll('ol.node-events li');
  assert.deepEqual(events.map((li) => li.querySelectorAll('span')[2].textContent), ['#1043', '#1042'], 'newest first');
  assert.equal(events[0].querySelector('span').title, '2026-11-28T13:05:15.123456Z (UTC)');
  assert.equal(events[0].className, 'sev-info');
});

test('a last failure is marked and empty facts show a dash', () => {
  const { doc, store, selection, panel } = setup();
  store.apply({
    type: 'state_delta', target_id: TARGET,
    delta: { runtime_state: [{ child_path: '/root/invoice_writer', lifecycle_state: 'failed', last_failure: 'exit status 3' }] },
  });
  selection.selectNode('/root/invoice_writer');
  panel.render();
  const f = facts(doc);
  assert.equal(f['Last failure'].textContent, 'exit status 3');
  assert.equal(f['Last failure'].className, 'bad');
  assert.equal(f['Generation · attempt'].textContent, '—');
  assert.equal(f['Shutdown state'], undefined, 'shown only while shutting down');
  assert.equal(doc.querySelector('#node-detail .badge.lc').textContent, 'failed');
});

test('the root has no runtime row and no events of its own', () => {
  const { doc, selection, panel } = setup();
  selection.selectNode('/root');
  panel.render();
  assert.equal(doc.querySelector('#node-detail .badge.lc').textContent, 'running');
  assert.equal(doc.querySelector('#node-detail p.empty').textContent, 'No events buffered for this node.');
});

test('in Chinese the policy decision and event types are translated; unknown text is kept', () => {
  const { doc, store, selection, panel } = setup();
  store.apply({
    type: 'state_delta', target_id: TARGET,
    delta: { runtime_state: [{ child_path: '/root/invoice_writer', lifecycle_state: 'restarting', last_policy_decision: 'restart after 8655 ms (backoff)' }] },
  });
  selection.selectNode('/root/invoice_writer');
  setLanguage('zh');
  try {
    panel.render();
    const f = facts(doc);
    assert.equal(f['最近策略决定'].textContent, '8655 毫秒后重启（退避）');
    const [li] = doc.querySelectorAll('#node-detail ol.node-events li');
    assert.equal(li.querySelectorAll('span')[1].textContent, '子节点已暂停');
    store.apply({
      type: 'state_delta', target_id: TARGET,
      delta: { runtime_state: [{ child_path: '/root/invoice_writer', lifecycle_state: 'restarting', last_policy_decision: 'something new' }] },
    });
    panel.render();
    assert.equal(facts(doc)['最近策略决定'].textContent, 'something new');
  } finally {
    setLanguage('en');
  }
});
