import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { DICTIONARIES, preferredLanguage, setLanguage, t } from '../../supervisor/relay/web/static/i18n.js';
import { LIFECYCLE_STATES, COMMANDS, CONNECTION_STATES, SEVERITIES } from '../../supervisor/relay/web/static/vocabulary.js';
import { ROW_KINDS } from '../../supervisor/relay/web/static/filter.js';
import { STATIC } from './helpers.mjs';

test('English and Chinese have the same keys', () => {
  assert.deepEqual(Object.keys(DICTIONARIES.zh).sort(), Object.keys(DICTIONARIES.en).sort());
});

test('every key used by the page and its modules exists', () => {
  const html = readFileSync(new URL('index.html', STATIC), 'utf8');
  const modules = readdirSync(STATIC, { recursive: true }).filter((f) => f.endsWith('.js'));
  assert.ok(modules.includes('app.js') && modules.some((f) => f.startsWith('panels')), modules);
  const keys = new Set();
  for (const m of html.matchAll(/data-i18n="([^"]+)"/g)) keys.add(m[1]);
  for (const m of html.matchAll(/data-i18n-attr="([^"]+)"/g)) for (const pair of m[1].split(';')) keys.add(pair.split(':')[1]);
  for (const file of modules) {
    const source = readFileSync(new URL(file, STATIC), 'utf8');
    for (const m of source.matchAll(/\bt\('([a-z_]+)'/g)) keys.add(m[1]);
  }
  const dynamic = [
    ...LIFECYCLE_STATES.map((s) => `lc_${s}`), ...COMMANDS.map((c) => `cmd_${c}`),
    ...CONNECTION_STATES.map((s) => `cs_${s}`), ...SEVERITIES.map((s) => `sev_${s}`), ...ROW_KINDS.map((k) => `kind_${k}`),
    ...['offline', 'connecting', 'handshaking', 'established'].map((s) => `relay_${s}`),
  ];
  for (const k of dynamic) keys.add(k);
  assert.ok(keys.size > 60, keys.size);
  const missing = [...keys].filter((k) => !(k in DICTIONARIES.en));
  assert.deepEqual(missing, []);
});

test('placeholders are formatted and the language falls back sensibly', () => {
  setLanguage('zh');
  assert.equal(t('paused_follow', { n: 3 }), '已暂停：下方有 3 条新行');
  assert.equal(t('no_such_key'), 'no_such_key');
  setLanguage('fr');
  assert.equal(t('rows', { shown: 1, total: 2 }), '1 of 2 rows');
  assert.equal(t('rows', {}), '{shown} of {total} rows');
  assert.equal(preferredLanguage(null, ['zh-CN', 'en']), 'zh');
  assert.equal(preferredLanguage('en', ['zh-CN']), 'en');
  assert.equal(preferredLanguage(null, ['de-DE']), 'en');
});
