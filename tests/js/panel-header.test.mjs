import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { HeaderPanel } from '../../supervisor/relay/web/static/panels/header.js';
import { loadPage } from './dom-shim.mjs';
import { STABLE_RUN_MS } from '../../supervisor/relay/web/static/failures.js';
import { TARGET, TestClock, contractStore, fixture, runtimeRow } from './helpers.mjs';

setLanguage('en');

test('the header shows the relay status, our principal from the first frame, our fingerprint and the totals', () => {
  const doc = loadPage();
  const store = contractStore();
  const header = new HeaderPanel(doc, { store });
  header.render();
  const $ = (id) => doc.getElementById(id);
  assert.equal($('relay-status').className, 'status st-offline');
  assert.equal($('relay-status-text').textContent, 'Offline');
  assert.equal($('identity-fingerprint').textContent, 'sha256:3f3f3f3f3f3f…');
  assert.equal($('identity').title, fixture('session.server_hello').client_identity);
  assert.equal($('identity-principal').hidden, false, 'server_hello names our principal');
  assert.equal($('identity-principal').textContent, fixture('session.server_hello').principal);
  assert.equal($('count-targets').textContent, '1');
  assert.equal($('count-events').textContent, '1');
  assert.equal($('count-failed').textContent, '0');
  assert.equal($('count-failures').textContent, '0 in 15 min');
  assert.equal($('count-failed').parentElement.classList.contains('alert'), false);
  assert.match($('failed-counter').title, /have not run for 60 s since.*last 15 minutes/);

  store.apply({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/invoice_writer', 'failed')] } });
  header.render();
  assert.equal($('count-failed').textContent, '1');
  assert.equal($('count-failures').textContent, '1 in 15 min');
  assert.equal($('count-failed').parentElement.classList.contains('alert'), true);
});

test('from a relay whose server_hello has no principal, our own audit record names it', () => {
  const doc = loadPage();
  const store = contractStore();
  const { principal, permitted_commands: _, ...hello } = fixture('session.server_hello');
  store.session.principal = null;
  store.apply(hello);
  const header = new HeaderPanel(doc, { store });
  header.render();
  const $ = (id) => doc.getElementById(id);
  assert.equal($('identity-principal').hidden, true, 'no principal known yet');
  store.apply(fixture('session.audit_event'));
  header.render();
  assert.equal($('identity-principal').hidden, false);
  assert.equal($('identity-principal').textContent, 'O=Example Ops, CN=demo operator');
  assert.notEqual(principal, $('identity-principal').textContent);
});

test('a relay status change is shown at once, with the retry delay while waiting', () => {
  const doc = loadPage();
  const header = new HeaderPanel(doc, { store: contractStore() });
  header.setRelayStatus('waiting', { attempt: 3, delay: 2400, reason: 'closed (1006)' });
  assert.equal(header.status, 'waiting');
  assert.equal(doc.getElementById('relay-status').className, 'status st-waiting');
  assert.equal(doc.getElementById('relay-status-text').textContent, 'Relay unreachable, retrying in 2s (attempt 3)');
  header.setRelayStatus('established', { attempt: 0 });
  assert.equal(doc.getElementById('relay-status-text').textContent, 'Connected to relay');
});

test('a failed child stays counted until it has run stably, then only as a recent failure', () => {
  const doc = loadPage();
  const clock = new TestClock();
  const store = contractStore(clock);
  const header = new HeaderPanel(doc, { store });
  const row = (lifecycle) => ({ type: 'state_delta', target_id: TARGET, delta: { runtime_state: [runtimeRow('/root/invoice_writer', lifecycle)] } });
  for (const lifecycle of ['failed', 'restarting', 'running']) store.apply(row(lifecycle));
  header.render();
  const $ = (id) => doc.getElementById(id);
  assert.deepEqual([$('count-failed').textContent, $('count-failures').textContent], ['1', '1 in 15 min']);
  clock.advance(STABLE_RUN_MS);
  header.render(); // the app redraws the header every few seconds
  assert.deepEqual([$('count-failed').textContent, $('count-failures').textContent], ['0', '1 in 15 min']);
  assert.equal($('failed-counter').classList.contains('alert'), false);
  assert.equal($('failed-counter').classList.contains('recent'), true);
});
