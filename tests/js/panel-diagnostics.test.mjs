import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { DiagnosticsPanel } from '../../supervisor/relay/web/static/panels/diagnostics.js';
import { loadPage } from './dom-shim.mjs';
import { TARGET, contractStore, fixture } from './helpers.mjs';

setLanguage('en');

const WS = 'wss://relay.example:9443/supervisor';

function setup() {
  const doc = loadPage();
  const store = contractStore();
  store.takeChanges();
  return { doc, store, panel: new DiagnosticsPanel(doc, { store, wsUrl: WS }), badge: doc.getElementById('diag-count') };
}

test('diagnostics arriving while the pane is hidden are counted on the tab', () => {
  const { doc, store, panel, badge } = setup();
  assert.equal(badge.hidden, true);
  store.apply(fixture('session.connection_state'));
  panel.update(store.takeChanges(), false);
  store.apply(fixture('session.error'));
  panel.update(store.takeChanges(), false);
  panel.update(store.takeChanges(), false); // a frame without diagnostics
  assert.equal(badge.hidden, false);
  assert.equal(badge.textContent, '2');
  assert.equal(doc.querySelectorAll('#diag-body tr').length, 0, 'not drawn while hidden');
  panel.open();
  assert.equal(badge.hidden, true);
  assert.equal(panel.unseen, 0);
  const codes = doc.querySelectorAll('#diag-body tr').map((tr) => tr.querySelectorAll('td')[2].textContent);
  assert.deepEqual(codes, ['confirmation_required', 'target_unavailable'], 'newest first');
  assert.equal(doc.querySelector('#diag-body tr').className, 'lvl-error');
  assert.equal(doc.querySelector('#diag-body tr').querySelectorAll('td')[3].textContent, TARGET);
});

test('a shown pane is redrawn at once and shows the session facts', () => {
  const { doc, store, panel, badge } = setup();
  panel.render();
  assert.equal(doc.querySelector('#diag-body td.empty').textContent, 'Nothing to report.');
  assert.equal(doc.getElementById('diag-session').textContent,
    `Session: 9b2f0c1e-5d1a-4c55-a1f3-2d0e9c7b1a44 · ${WS} · filter version 0`);
  store.diag('warning', 'relay_connection', 'closed (1006); retry in 500 ms');
  panel.update(store.takeChanges(), true);
  assert.equal(badge.hidden, true);
  assert.deepEqual(doc.querySelectorAll('#diag-body tr').map((tr) => tr.querySelectorAll('td')[4].textContent),
    ['closed (1006); retry in 500 ms']);
});

test('our own diagnostics and their levels follow the language; a peer\'s message is shown as sent', () => {
  const { doc, store, panel } = setup();
  store.apply(fixture('session.connection_state'));
  store.apply(fixture('session.error'));
  setLanguage('zh');
  try {
    panel.open();
    const cells = doc.querySelectorAll('#diag-body tr').map((tr) => tr.querySelectorAll('td').map((td) => td.textContent));
    assert.deepEqual([cells[1][1], cells[1][4]], ['警告', 'payments worker a 不可用']);
    assert.deepEqual([cells[0][1], cells[0][4]], ['错误', fixture('session.error').error.message]);
  } finally {
    setLanguage('en');
  }
});
