import test from 'node:test';
import assert from 'node:assert/strict';
import { setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { MAX_TOASTS, TOAST_MS, ToastsPanel } from '../../supervisor/relay/web/static/panels/toasts.js';
import { fire, loadPage } from './dom-shim.mjs';
import { FakeTimers, fixture } from './helpers.mjs';

setLanguage('en');

function setup() {
  const doc = loadPage();
  const timers = new FakeTimers();
  return { doc, timers, panel: new ToastsPanel(doc, { timers }) };
}

const shown = (doc) => doc.querySelectorAll('#toasts .toast').map((el) => [el.className, el.querySelector('span').textContent]);

test('toasts expire, errors later than others, and can be closed', () => {
  const { doc, timers, panel } = setup();
  panel.show('sent', 'info');
  panel.show('broken', 'error');
  assert.deepEqual(shown(doc), [['toast info', 'sent'], ['toast error', 'broken']]);
  assert.equal(doc.querySelector('#toasts .toast.error').getAttribute('role'), 'alert');
  assert.equal(doc.querySelector('#toasts .toast.info').getAttribute('role'), null);
  assert.equal(timers.runNext(), TOAST_MS.other);
  assert.deepEqual(shown(doc), [['toast error', 'broken']]);
  assert.equal(timers.runNext(), TOAST_MS.error);
  assert.deepEqual(shown(doc), []);
  panel.show('bye');
  doc.querySelector('#toasts .toast-close').click();
  assert.deepEqual(shown(doc), []);
});

test('at most four toasts are shown, the oldest leave first', () => {
  const { doc, panel } = setup();
  for (let i = 0; i < 8; i += 1) panel.show(`n${i}`);
  assert.equal(MAX_TOASTS, 4);
  assert.deepEqual(shown(doc).map(([, text]) => text), ['n4', 'n5', 'n6', 'n7']);
});

test('command outcomes: completed, refused, error', () => {
  const { doc, panel } = setup();
  const sent = fixture('session.command');
  const { result } = fixture('session.command_result');
  panel.showResult({ kind: 'result', result, sent });
  panel.showResult({ kind: 'result', result: { ...result, status: 'failed' }, sent });
  panel.showResult({ kind: 'result', result: { ...result, error: { code: 'target_unavailable', message: 'gone' } }, sent: null });
  const err = fixture('session.error').error;
  panel.showResult({ kind: 'refused', error: err, sent });
  panel.showResult({ kind: 'error', error: { code: 'rate_limited', message: 'slow down' }, sent: null });
  assert.deepEqual(shown(doc), [
    ['toast ok', 'Pause child on /root/invoice_writer: completed'],
    ['toast error', 'Pause child on /root/invoice_writer: failed'],
    ['toast error', 'cmd-7f3a refused: target_unavailable — gone'],
    ['toast error', 'Pause child refused: confirmation_required — dangerous command requires confirmed=true'],
    ['toast error', 'Error rate_limited: slow down'],
  ].slice(-MAX_TOASTS));
});

test('a toast stays while pointed at and leaves its full time after the pointer does', () => {
  const { doc, timers, panel } = setup();
  panel.show('read me', 'info');
  const toast = doc.querySelector('#toasts .toast');
  fire(toast, 'mouseenter');
  assert.equal(timers.pending.length, 0, 'no removal pending while pointed at');
  fire(toast, 'mouseleave');
  assert.equal(timers.runNext(), TOAST_MS.other);
  assert.deepEqual(shown(doc), []);
});
