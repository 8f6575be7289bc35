import test from 'node:test';
import assert from 'node:assert/strict';
import { TABS, TabsPanel } from '../../supervisor/relay/web/static/panels/tabs.js';
import { key, loadPage } from './dom-shim.mjs';

function setup() {
  const doc = loadPage();
  const shown = [];
  const panel = new TabsPanel(doc, { onShow: (name) => shown.push(name) });
  const state = () => TABS.map((name) => {
    const tab = doc.getElementById(`tab-${name}`);
    return [name, tab.getAttribute('aria-selected'), tab.tabIndex, doc.getElementById(`pane-${name}`).hidden];
  });
  return { doc, panel, shown, state };
}

test('a clicked tab shows its pane only', () => {
  const { doc, panel, shown, state } = setup();
  assert.equal(panel.active, 'timeline');
  doc.getElementById('tab-audit').click();
  assert.equal(panel.active, 'audit');
  assert.deepEqual(shown, ['audit']);
  assert.deepEqual(state(), [['timeline', 'false', -1, true], ['audit', 'true', 0, false], ['diagnostics', 'false', -1, true]]);
});

test('arrow keys move between tabs, wrapping around, and move the focus', () => {
  const { doc, shown } = setup();
  key(doc.getElementById('tab-timeline'), 'ArrowLeft');
  assert.deepEqual(shown, ['diagnostics']);
  assert.equal(doc.activeElement, doc.getElementById('tab-diagnostics'));
  key(doc.getElementById('tab-diagnostics'), 'ArrowRight');
  assert.equal(doc.activeElement, doc.getElementById('tab-timeline'));
  assert.equal(key(doc.getElementById('tab-timeline'), 'a'), true, 'other keys are left alone');
  assert.deepEqual(shown, ['diagnostics', 'timeline']);
});
