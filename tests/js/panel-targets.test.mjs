import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { TargetsPanel } from '../../supervisor/relay/web/static/panels/targets.js';
import { Selection, defaultTarget } from '../../supervisor/relay/web/static/selection.js';
import { loadPage } from './dom-shim.mjs';
import { TARGET, contractStore, memoryPrefs, runtimeRow } from './helpers.mjs';

setLanguage('en');

function setup(selected = TARGET) {
  const doc = loadPage();
  const store = contractStore();
  const selection = new Selection(memoryPrefs({ selected_target: selected }));
  const picked = [];
  const panel = new TargetsPanel(doc, { store, selection, onSelect: (id) => picked.push(id) });
  return { doc, store, selection, panel, picked };
}

const buttons = (doc) => doc.querySelectorAll('#target-list button.target');

test('each listed target gets a button with its state; clicking selects it', () => {
  const { doc, panel, picked } = setup();
  assert.equal(doc.getElementById('no-targets').hidden, false, 'the page starts empty');
  panel.render();
  assert.equal(doc.getElementById('no-targets').hidden, true);
  const [button] = buttons(doc);
  assert.equal(button.dataset.targetId, TARGET);
  assert.equal(button.getAttribute('aria-pressed'), 'true');
  assert.equal(button.querySelector('.name').textContent, 'payments worker a');
  assert.equal(button.querySelector('.badge.cs').textContent, 'connected');
  assert.equal(button.querySelector('.badge.failed').hidden, true);
  assert.equal(button.querySelector('.badge.dropped').hidden, true);
  button.click();
  assert.deepEqual(picked, [TARGET]);
});

test('failed nodes and dropped counts show as badges and in the dropped total', () => {
  const { doc, store, panel } = setup();
  store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/invoice_writer', 'failed')] } });
  store.apply({ type: 'dropped_count', target_id: TARGET, dropped_event_count: 17, dropped_log_count: 3 });
  panel.render();
  const [button] = buttons(doc);
  assert.equal(button.querySelector('.badge.failed').hidden, false);
  assert.equal(button.querySelector('.badge.failed').textContent, '1 failed');
  assert.equal(button.querySelector('.badge.dropped').textContent, 'dropped 17/3');
  assert.equal(doc.getElementById('dropped').hidden, false);
  assert.equal(doc.getElementById('dropped').textContent, 'Dropped: 17 events, 3 logs');
});

test('list items are reused; a target gone from the list stays only while selected', () => {
  const { doc, store, selection, panel } = setup();
  store.apply({
    type: 'target_list',
    targets: [{ target_id: TARGET, display_name: 'a', connection_state: 'connected', supported_commands: [] },
      { target_id: 'other', display_name: 'b', connection_state: 'connecting', supported_commands: [] }],
  });
  panel.render();
  const first = buttons(doc)[0];
  assert.deepEqual(buttons(doc).map((b) => b.dataset.targetId), [TARGET, 'other']);
  assert.equal(buttons(doc)[1].getAttribute('aria-pressed'), 'false');
  store.apply({ type: 'target_list', targets: [] });
  panel.render();
  assert.deepEqual(buttons(doc).map((b) => b.dataset.targetId), [TARGET], 'the selected target stays');
  assert.equal(buttons(doc)[0], first, 'same element, updated in place');
  assert.equal(first.querySelector('.badge.cs').textContent, 'expired');
  selection.selectTarget('other');
  panel.render();
  assert.deepEqual(buttons(doc).map((b) => b.dataset.targetId), ['other']);
});

test('the shown target is the selected one while known, else the first listed', () => {
  const store = contractStore();
  assert.equal(defaultTarget(store, TARGET), TARGET);
  assert.equal(defaultTarget(store, 'forgotten'), TARGET);
  assert.equal(defaultTarget(store, null), TARGET);
  store.apply({ type: 'target_list', targets: [] });
  assert.equal(defaultTarget(store, null), null, 'nothing listed: nothing to pick');
});

test('the selection forgets the node on a new target and remembers the target', () => {
  const prefs = memoryPrefs();
  const selection = new Selection(prefs);
  assert.equal(selection.targetId, null);
  selection.selectTarget('a');
  selection.selectNode('/root/x');
  selection.selectTarget('a');
  assert.equal(selection.path, '/root/x', 'the same target keeps the node');
  selection.selectTarget('b');
  assert.equal(selection.path, null);
  assert.equal(prefs.get('selected_target'), 'b');
  assert.equal(new Selection(prefs).targetId, 'b');
});

test('a live stream updates the items in place: the button in use is neither moved nor rebuilt', () => {
  const { doc, store, panel } = setup();
  store.apply({
    type: 'target_list',
    targets: [{ target_id: TARGET, display_name: 'a', connection_state: 'connected', supported_commands: [] },
      { target_id: 'other', display_name: 'b', connection_state: 'connected', supported_commands: [] }],
  });
  panel.render();
  const [first, second] = buttons(doc);
  const parts = second.querySelectorAll('span');
  second.focus();
  // every new frame of the stream: events, deltas, dropped counts
  let moved = 0;
  const list = doc.getElementById('target-list');
  for (const method of ['insertBefore', 'appendChild']) {
    const original = list[method].bind(list);
    list[method] = (...args) => { moved += 1; return original(...args); };
  }
  for (let i = 0; i < 3; i += 1) {
    store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/invoice_writer', i % 2 ? 'running' : 'failed')] } });
    store.apply({ type: 'dropped_count', target_id: 'other', dropped_event_count: i, dropped_log_count: 0 });
    panel.render();
  }
  assert.equal(moved, 0, 'items already in order are not moved (a moved element loses focus)');
  assert.deepEqual(buttons(doc), [first, second]);
  assert.deepEqual(second.querySelectorAll('span'), parts, 'the same elements, new text');
  assert.equal(doc.activeElement, second);
  assert.equal(second.querySelector('.badge.dropped').textContent, 'dropped 2/0');
  assert.equal(first.querySelector('.badge.failed').textContent, '1 failed', 'it failed twice: still failing');
});
