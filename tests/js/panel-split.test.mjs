import test from 'node:test';
import assert from 'node:assert/strict';
import { SPLIT, SplitPanel, clampSplit } from '../../supervisor/relay/web/static/panels/split.js';
import { fire, key, loadPage } from './dom-shim.mjs';
import { memoryPrefs } from './helpers.mjs';

function setup(stored = {}) {
  const doc = loadPage();
  const prefs = memoryPrefs(stored);
  let resized = 0;
  const panel = new SplitPanel(doc, { prefs, onResize: () => { resized += 1; } });
  return { doc, prefs, panel, resized: () => resized, $: (id) => doc.getElementById(id) };
}

test('the split starts from the remembered share, clamped, and is a labelled separator', () => {
  const { $ } = setup({ split: '63' });
  assert.equal($('layout').style.getPropertyValue('--split'), '63%');
  assert.equal($('split').getAttribute('role'), 'separator');
  assert.equal($('split').getAttribute('aria-valuenow'), '63');
  assert.equal(setup({ split: '99' }).$('layout').style.getPropertyValue('--split'), `${SPLIT.max}%`);
  assert.equal(setup({ split: 'junk' }).$('layout').style.getPropertyValue('--split'), `${SPLIT.initial}%`);
  assert.equal(clampSplit(-5), SPLIT.min);
});

test('arrow keys, Home and End move the split; the share is remembered and the panes re-measure', () => {
  const { $, prefs, resized } = setup();
  const before = resized();
  key($('split'), 'ArrowDown');
  assert.equal($('split').getAttribute('aria-valuenow'), String(SPLIT.initial + SPLIT.step));
  key($('split'), 'Home');
  assert.equal($('layout').style.getPropertyValue('--split'), `${SPLIT.min}%`);
  key($('split'), 'End');
  assert.equal(prefs.get('split'), String(SPLIT.max));
  assert.equal(resized() - before, 3);
  assert.equal(key($('split'), 'x'), true, 'other keys are left alone');
});

test('dragging the separator sets the share from the pointer, saved when released', () => {
  const { $, prefs } = setup();
  $('layout').rect = { width: 1000, height: 600 };
  fire($('split'), 'pointerdown', { button: 0, pointerId: 1, clientY: 276 });
  fire($('split'), 'pointermove', { pointerId: 1, clientY: 300 });
  assert.equal($('split').getAttribute('aria-valuenow'), '50');
  assert.equal(prefs.get('split'), null, 'not saved while dragging');
  fire($('split'), 'pointerup', { pointerId: 1, clientY: 300 });
  assert.equal(prefs.get('split'), '50');
  fire($('split'), 'pointermove', { pointerId: 1, clientY: 500 });
  assert.equal($('split').getAttribute('aria-valuenow'), '50', 'released: moves no more');
});
