import test from 'node:test';
import assert from 'node:assert/strict';
import { language, setLanguage } from '../../supervisor/relay/web/static/i18n.js';
import { PreferencesPanel } from '../../supervisor/relay/web/static/panels/preferences.js';
import { choose, loadPage } from './dom-shim.mjs';
import { memoryPrefs } from './helpers.mjs';

function setup(stored = {}) {
  const doc = loadPage();
  const prefs = memoryPrefs(stored);
  let relabelled = 0;
  const panel = new PreferencesPanel(doc, { prefs, onLanguage: () => { relabelled += 1; } });
  return { doc, prefs, panel, relabelled: () => relabelled };
}

test('choosing a language translates the page and is remembered', () => {
  const { doc, prefs, relabelled } = setup();
  choose(doc.getElementById('lang-select'), 'zh');
  assert.equal(language(), 'zh');
  assert.equal(doc.documentElement.lang, 'zh-CN');
  assert.equal(doc.getElementById('targets-h').textContent, '目标');
  assert.equal(doc.getElementById('zoom-in').getAttribute('aria-label'), '放大');
  assert.equal(doc.title, '监督树 · dashboard');
  assert.equal(prefs.get('lang'), 'zh');
  assert.equal(relabelled(), 1, 'the panels redraw their own texts');
});

test('the theme toggles, is remembered and wins over the system preference', () => {
  setLanguage('en');
  const { doc, prefs, panel } = setup();
  panel.initTheme(true);
  assert.equal(doc.documentElement.dataset.theme, 'dark', 'nothing stored: the system decides');
  panel.render();
  const toggle = doc.getElementById('theme-toggle');
  assert.equal(toggle.getAttribute('aria-pressed'), 'true');
  assert.equal(toggle.textContent, '☾ Dark');
  toggle.click();
  assert.equal(doc.documentElement.dataset.theme, 'light');
  assert.equal(toggle.getAttribute('aria-pressed'), 'false');
  assert.equal(prefs.get('theme'), 'light');
  const again = setup({ theme: 'light' });
  again.panel.initTheme(true);
  assert.equal(again.doc.documentElement.dataset.theme, 'light');
});
