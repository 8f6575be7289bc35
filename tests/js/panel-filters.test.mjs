import test from 'node:test';
import assert from 'node:assert/strict';
import { ROW_KINDS } from '../../supervisor/relay/web/static/filter.js';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { FILTER_SEND_DELAY_MS, FiltersPanel } from '../../supervisor/relay/web/static/panels/filters.js';
import { emptyFilter } from '../../supervisor/relay/web/static/protocol.js';
import { EVENT_TYPES, LIFECYCLE_STATES, SEVERITIES } from '../../supervisor/relay/web/static/vocabulary.js';
import { choose, loadPage, type } from './dom-shim.mjs';
import { FakeTimers, TARGET, contractStore, fixture } from './helpers.mjs';

setLanguage('en');

function setup({ accepts = true } = {}) {
  const doc = loadPage();
  const store = contractStore();
  const timers = new FakeTimers();
  const sent = [];
  const filters = [];
  const panel = new FiltersPanel(doc, {
    store, timers, onChange: (f) => filters.push(f), send: (msg) => { sent.push(msg); return accepts; },
  });
  panel.relabel();
  return { doc, store, timers, sent, filters, panel, $: (id) => doc.getElementById(id) };
}

const severity = (doc, s) => doc.querySelector(`#f-severities input[value="${s}"]`);

test('the form offers every lifecycle, severity, row kind, event type and target', () => {
  const { doc, $ } = setup();
  assert.deepEqual($('f-lifecycle').options.map((o) => o.value), ['', ...LIFECYCLE_STATES]);
  assert.deepEqual(doc.querySelectorAll('#f-severities input').map((i) => i.value), [...SEVERITIES]);
  assert.ok(doc.querySelectorAll('#f-severities input').every((i) => !i.checked));
  assert.deepEqual(doc.querySelectorAll('#f-kinds input').map((i) => [i.value, i.checked]), ROW_KINDS.map((k) => [k, true]));
  assert.deepEqual(doc.querySelectorAll('#event-types option').map((o) => o.value), [...EVENT_TYPES]);
  assert.deepEqual($('f-target').options.map((o) => [o.value, o.textContent]), [['', 'All'], [TARGET, 'payments worker a']]);
});

test('an edit re-filters at once and reaches the relay once typing settles', () => {
  const { $, timers, sent, filters } = setup();
  type($('f-type'), 'child_f');
  type($('f-type'), 'child_failed');
  assert.equal(filters.length, 2, 'the local view follows every keystroke');
  assert.deepEqual([...filters[1].eventTypes], ['child_failed']);
  assert.deepEqual(sent, [], 'nothing sent while typing');
  assert.equal(timers.pending.length, 1, 'one pending send');
  assert.equal(timers.runNext(), FILTER_SEND_DELAY_MS);
  assert.deepEqual(sent, [{ type: 'log_event_filter_conditions', ...emptyFilter(), event_types: ['child_failed'] }]);
  type($('f-text'), 'worker'); // local-only: the contract conditions did not change
  timers.runNext();
  assert.equal(sent.length, 1);
  assert.equal(filters[2].text, 'worker');
});

test('all contract conditions come from the form', () => {
  const { doc, $, panel } = setup();
  choose($('f-target'), TARGET);
  $('f-path').value = '/root/a, /root/b';
  choose($('f-lifecycle'), 'failed');
  $('f-type').value = 'child_failed child_exited';
  severity(doc, 'error').click();
  severity(doc, 'warning').click();
  $('f-seq').value = '42';
  $('f-corr').value = ' cmd-7f3a ';
  assert.deepEqual(panel.conditions(), {
    target_ids: [TARGET], child_paths: ['/root/a', '/root/b'], lifecycle_states: ['failed'],
    event_types: ['child_exited', 'child_failed'], severities: ['error', 'warning'], sequence_min: 42,
    correlation_id: 'cmd-7f3a',
  });
});

test('the relay\'s own filter is not sent back; a new session without one gets ours', () => {
  const { doc, timers, sent, panel } = setup();
  panel.sessionStarted({ ...fixture('session.server_hello'), log_event_filter_conditions: { severities: ['error'] } });
  severity(doc, 'error').click();
  timers.runNext();
  assert.deepEqual(sent, [], 'the relay already filters on error');
  severity(doc, 'warning').click();
  timers.runNext();
  assert.deepEqual(sent.map((m) => m.severities), [['error', 'warning']]);
  severity(doc, 'warning').click();
  severity(doc, 'warning').click();
  timers.runNext();
  assert.equal(sent.length, 1, 'unchanged since the last send');
  panel.sessionStarted();
  severity(doc, 'warning').click();
  severity(doc, 'warning').click();
  timers.runNext();
  assert.equal(sent.length, 2, 'the new session may not have it');
});

test('a filter the relay could not be sent is sent again', () => {
  const { doc, timers, sent } = setup({ accepts: false });
  severity(doc, 'error').click();
  timers.runNext();
  severity(doc, 'error').click();
  severity(doc, 'error').click();
  timers.runNext();
  assert.deepEqual(sent.map((m) => m.severities), [['error'], ['error']]);
});

test('clear resets the form and shows every row kind again', () => {
  const { doc, $, filters } = setup();
  doc.querySelector('#f-kinds input[value="log"]').click();
  severity(doc, 'error').click();
  type($('f-path'), '/root/x');
  assert.deepEqual([...filters.at(-1).kinds], ['event', 'audit', 'result']);
  $('f-clear').click();
  const f = filters.at(-1);
  assert.deepEqual([...f.kinds], ROW_KINDS);
  assert.equal(f.severities, null);
  assert.equal(f.childPaths, null);
  assert.equal($('f-path').value, '');
});

test('a language change keeps the choices made', () => {
  const { doc, $, panel } = setup();
  choose($('f-lifecycle'), 'paused');
  severity(doc, 'warning').click();
  doc.querySelector('#f-kinds input[value="audit"]').click();
  choose($('f-target'), TARGET);
  setLanguage('zh');
  panel.relabel();
  setLanguage('en');
  assert.equal($('f-lifecycle').value, 'paused');
  assert.equal($('f-lifecycle').options[1].textContent, '启动中');
  assert.deepEqual(doc.querySelectorAll('#f-severities input').filter((i) => i.checked).map((i) => i.value), ['warning']);
  assert.deepEqual(doc.querySelectorAll('#f-kinds input').filter((i) => !i.checked).map((i) => i.value), ['audit']);
  assert.equal($('f-target').value, TARGET);
});

test('a target the store no longer has is dropped from the choice', () => {
  const { $, store, panel } = setup();
  choose($('f-target'), TARGET);
  store.targets.delete(TARGET);
  panel.refreshTargets();
  assert.equal($('f-target').value, '');
  assert.equal($('f-target').options.length, 1);
});

test('the target choice is kept and not rebuilt by frames that bring no new target', () => {
  const { doc, panel, $ } = setup();
  const select = $('f-target');
  choose(select, TARGET);
  const options = select.options;
  panel.refreshTargets();
  panel.refreshTargets();
  assert.deepEqual(select.options, options);
  assert.equal(select.value, TARGET);
});
