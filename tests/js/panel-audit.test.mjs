import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { AUDIT_ROWS_SHOWN, AuditPanel } from '../../supervisor/relay/web/static/panels/audit.js';
import { loadPage } from './dom-shim.mjs';
import { contractStore, fixture } from './helpers.mjs';

setLanguage('en');

function audit(n, extra = {}) {
  const msg = fixture('session.audit_event');
  return { ...msg, audit: { ...msg.audit, audit_id: `a-${n}`, command_id: `cmd-${n}`, ...extra } };
}

const rows = (doc) => doc.querySelectorAll('#audit-body tr').map((tr) => tr.querySelectorAll('td').map((td) => td.textContent));

test('audit records are listed newest first with who sent what and why', () => {
  const doc = loadPage();
  const store = contractStore();
  const panel = new AuditPanel(doc, { store });
  panel.render();
  assert.equal(doc.getElementById('audit-empty').hidden, false);
  store.apply(audit(1));
  store.apply(audit(2, { command: 'resume_child', result: 'rejected', detail: 'command_not_permitted', target: {}, reason: 'done' }));
  panel.render();
  assert.equal(doc.getElementById('audit-empty').hidden, true);
  assert.deepEqual(rows(doc), [
    ['13:05:15.123', 'payments-worker-a', 'resume_child', '—', 'rejected (command_not_permitted)', 'O=Example Ops, CN=demo operator', 'done'],
    ['13:05:15.123', 'payments-worker-a', 'pause_child', '/root/invoice_writer', 'completed', 'O=Example Ops, CN=demo operator', 'maintenance window'],
  ]);
  assert.deepEqual(doc.querySelectorAll('#audit-body tr').map((tr) => tr.className), ['res-rejected', 'res-completed']);
});

test('the pane is redrawn for new audit rows only while shown', () => {
  const doc = loadPage();
  const store = contractStore();
  const panel = new AuditPanel(doc, { store });
  store.takeChanges();
  store.apply(audit(1));
  const changes = store.takeChanges();
  panel.update(changes, false);
  assert.equal(rows(doc).length, 0);
  panel.update(changes, true);
  assert.equal(rows(doc).length, 1);
  store.apply(audit(2));
  store.apply(audit(3));
  panel.update({ ...store.takeChanges(), rows: [] }, true);
  assert.equal(rows(doc).length, 1, 'no audit rows in this frame: left as it is');
});

test('only the newest records are shown', () => {
  const doc = loadPage();
  const store = contractStore();
  for (let i = 0; i < AUDIT_ROWS_SHOWN + 20; i += 1) store.apply(audit(i, { reason: `r${i}` }));
  const panel = new AuditPanel(doc, { store });
  panel.render();
  const shown = rows(doc);
  assert.equal(shown.length, AUDIT_ROWS_SHOWN);
  assert.equal(shown[0][6], `r${AUDIT_ROWS_SHOWN + 19}`);
  assert.equal(shown.at(-1)[6], 'r20');
});

test('in Chinese the command and its result are translated; the peer\'s detail is kept', () => {
  const doc = loadPage();
  const store = contractStore();
  store.apply(audit(1, { result: 'rejected', detail: 'command_not_permitted' }));
  setLanguage('zh');
  try {
    new AuditPanel(doc, { store }).render();
    const [row] = rows(doc);
    assert.deepEqual([row[2], row[4]], ['暂停子节点', '已拒绝 (command_not_permitted)']);
    assert.equal(doc.querySelector('#audit-body td').title, '2026-11-28T13:05:15.123456Z (UTC)');
  } finally {
    setLanguage('en');
  }
});
