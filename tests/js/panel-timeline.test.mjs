import test from 'node:test';
import assert from 'node:assert/strict';
import { makeViewFilter } from '../../supervisor/relay/web/static/filter.js';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { TimelinePanel, rowSummary } from '../../supervisor/relay/web/static/panels/timeline.js';
import { Store } from '../../supervisor/relay/web/static/store.js';
import { ROW_HEIGHT } from '../../supervisor/relay/web/static/timeline.js';
import { fire, key, loadPage } from './dom-shim.mjs';
import { TARGET, contractStore, eventMsg, fixture, logMsg } from './helpers.mjs';

setLanguage('en');

function setup() {
  const doc = loadPage();
  const store = contractStore();
  const panel = new TimelinePanel(doc, { store });
  panel.update(store.takeChanges());
  return { doc, store, panel, $: (id) => doc.getElementById(id) };
}

const cells = (doc, cls) => doc.querySelectorAll(`#timeline .tl-row .tl-${cls}`).map((c) => c.textContent);

test('rows of the store appear in the grid with their kind, severity and target name', () => {
  const { doc, $ } = setup();
  assert.deepEqual(cells(doc, 'seq'), ['ev 1042', 'log 5120'], 'each kind has its own numbering');
  assert.deepEqual(cells(doc, 'kind'), ['event', 'log']);
  assert.deepEqual(cells(doc, 'target'), ['payments worker a', 'payments worker a']);
  assert.equal(doc.querySelector('#timeline .tl-row').className, 'tl-row sev-info kind-event');
  assert.equal($('row-count').textContent, '2 of 2 rows');
  assert.equal($('timeline').getAttribute('aria-rowcount'), '2');
});

test('a filter narrows the rows; the count shows shown of total', () => {
  const { doc, panel, $ } = setup();
  panel.setFilter(makeViewFilter({ kinds: ['log'] }));
  assert.deepEqual(cells(doc, 'kind'), ['log']);
  assert.equal($('row-count').textContent, '1 of 2 rows');
});

test('while follow is paused new rows are counted; resuming clears the count', () => {
  const { doc, store, panel, $ } = setup();
  panel.relabel();
  assert.equal($('follow-state').textContent, 'Live: following new rows');
  assert.equal($('follow-resume').hidden, true);
  panel.grid.setFollowing(false);
  assert.equal($('follow-resume').hidden, false);
  for (let s = 1043; s < 1046; s += 1) store.apply(eventMsg(TARGET, s));
  store.apply(logMsg(TARGET, 5121));
  panel.update(store.takeChanges());
  assert.equal($('follow-state').textContent, 'Paused: 4 new rows below');
  assert.equal($('follow-state').className, 'paused');
  $('follow-resume').click();
  assert.equal($('follow-state').textContent, 'Live: following new rows');
  assert.equal($('follow-state').className, 'live');
  assert.equal(doc.activeElement, $('timeline'));
  assert.equal(panel.pausedNew, 0);
});

test('following keeps the newest row in view as rows arrive', () => {
  const { store, panel, $ } = setup();
  $('timeline').clientHeight = 10 * ROW_HEIGHT;
  for (let s = 1043; s < 1143; s += 1) store.apply(eventMsg(TARGET, s));
  panel.update(store.takeChanges());
  assert.equal($('timeline').scrollTop, 102 * ROW_HEIGHT - 10 * ROW_HEIGHT);
  const seqs = $('timeline').querySelectorAll('.tl-seq').map((c) => c.textContent);
  assert.ok(seqs.includes('ev 1142'));
  assert.ok(seqs.length < 30, 'only the visible window is in the DOM');
});

test('an opened row shows its raw message until closed', () => {
  const { doc, $ } = setup();
  const timeline = $('timeline');
  key(timeline, 'ArrowUp');
  key(timeline, 'Enter');
  assert.equal($('row-detail').hidden, false);
  assert.equal(JSON.parse($('row-detail-body').textContent).sequence, 5120, 'the last row (the log line)');
  $('row-detail-close').click();
  assert.equal($('row-detail').hidden, true);
  fire(doc.querySelector('#timeline .tl-row .tl-summary'), 'click');
  assert.equal($('row-detail').hidden, false);
  assert.equal(JSON.parse($('row-detail-body').textContent).event_type, 'child_paused');
});

test('the active row is exposed to screen readers', () => {
  const { doc, $ } = setup();
  const timeline = $('timeline');
  assert.equal(timeline.getAttribute('aria-activedescendant'), null);
  key(timeline, 'ArrowUp');
  const active = doc.getElementById(timeline.getAttribute('aria-activedescendant'));
  assert.equal(active.getAttribute('aria-selected'), 'true');
  assert.equal(active.querySelector('.tl-seq').textContent, 'log 5120');
  assert.deepEqual(doc.querySelectorAll('#timeline .tl-row').map((r) => r.getAttribute('aria-selected')), ['false', 'true']);
  key(timeline, 'ArrowUp');
  assert.equal(doc.getElementById(timeline.getAttribute('aria-activedescendant')).querySelector('.tl-seq').textContent, 'ev 1042');
});

test('times are local with the UTC time on hover; Chinese labels event types and outcomes', () => {
  const tz = process.env.TZ;
  process.env.TZ = 'Asia/Shanghai';
  try {
    const { doc, store, panel } = setup();
    const time = doc.querySelector('#timeline .tl-row .tl-time');
    assert.equal(time.textContent, '21:05:15.123', 'UTC+8');
    assert.equal(time.title, '2026-11-28T13:05:15.123456Z (UTC)');
    setLanguage('zh');
    store.apply(fixture('session.audit_event'));
    panel.update(store.takeChanges());
    panel.relabel();
    assert.deepEqual(cells(doc, 'summary'), ['子节点已暂停 /root/invoice_writer', 'flushed 12 invoices', '暂停子节点 /root/invoice_writer → 已完成']);
    assert.deepEqual(cells(doc, 'seq'), ['事件 1042', '日志 5120', '']);
  } finally {
    setLanguage('en');
    process.env.TZ = tz;
  }
});

test('a command that did not come through a relay is marked in its summary and detail', () => {
  setLanguage('en');
  const store = new Store();
  const payload = { command: 'pause_child', requested_by: 'CN=demo operator', reason: 'x', origin: 'direct_ipc',
                    peer: { pid: 4242, uid: 1000 } };
  const direct = store.addEvent(TARGET, eventMsg(TARGET, 1, { event_type: 'command_received', payload }).event);
  assert.equal(rowSummary(direct), 'command_received /root/w0 · NOT via the relay (direct_ipc): sender unverified');
  assert.match(direct.detail, /^origin=direct_ipc requested_by=CN=demo operator peer_pid=4242 reason=x/);
  const relayed = store.addEvent(TARGET, eventMsg(TARGET, 2, {
    event_type: 'command_received', payload: { ...payload, origin: 'relay', peer: undefined } }).event);
  assert.equal(rowSummary(relayed), 'command_received /root/w0');
  assert.equal(relayed.detail, 'reason=x');
});
