// The contract's vocabulary has one home on the dashboard side: vocabulary.js, generated
// from supervisor/wire/vocabulary.py. No other module may carry its own copy of a list.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import * as vocabulary from '../../supervisor/relay/web/static/vocabulary.js';
import { STATIC } from './helpers.mjs';

const LISTS = {
  COMMANDS: vocabulary.COMMANDS,
  DANGEROUS_COMMANDS: vocabulary.DANGEROUS_COMMANDS,
  EVENT_TYPES: vocabulary.EVENT_TYPES,
  LIFECYCLE_STATES: vocabulary.LIFECYCLE_STATES,
  SEVERITIES: vocabulary.SEVERITIES,
  CONNECTION_STATES: vocabulary.CONNECTION_STATES,
};

const STRING = String.raw`(?:'[^'\n]*'|"[^"\n]*")`;
const ARRAY = new RegExp(String.raw`\[\s*${STRING}(?:\s*,\s*${STRING})*\s*,?\s*\]`, 'g');
const OBJECT_KEY = /(?:[{,]\s*)([a-z][a-z0-9_]*)\s*:/g;

// Literal lists in `source` (arrays of strings, and the keys of object literals) that copy a
// vocabulary list: all of it, or more than half of it and at least three entries.
function copiedLists(source) {
  const literals = [...source.matchAll(ARRAY)].map((m) => [...m[0].matchAll(new RegExp(STRING, 'g'))].map((s) => s[0].slice(1, -1)));
  for (const block of source.matchAll(/\{[^{}]*\}/g)) literals.push([...block[0].matchAll(OBJECT_KEY)].map((m) => m[1]));
  const found = [];
  for (const values of literals) {
    const set = new Set(values);
    for (const [name, list] of Object.entries(LISTS)) {
      const shared = list.filter((v) => set.has(v)).length;
      if (shared === list.length || (shared >= 3 && shared > list.length / 2)) found.push({ name, values });
    }
  }
  return found;
}

test('the detector finds copied lists and maps, not small subsets', () => {
  const events = vocabulary.EVENT_TYPES.slice(0, 12).map((e) => `'${e}'`).join(', ');
  assert.deepEqual(copiedLists(`const X = [${events}];`).map((f) => f.name), ['EVENT_TYPES']);
  assert.deepEqual(copiedLists(`const SEV = new Set(["trace", "debug", "info", 'warning']);`).map((f) => f.name), ['SEVERITIES']);
  const map = `const L = {\n  child_started: 'starting',\n  child_running: 'running',\n  child_ready: 'running',\n  child_exited: 'stopped',\n  child_failed: 'failed',\n  child_restarting: 'restarting',\n  child_restarted: 'starting',\n  backoff_scheduled: 'restarting',\n  restart_intensity_exceeded: 'failed',\n  child_paused: 'paused',\n  child_resumed: 'running',\n  child_quarantined: 'quarantined',\n};`;
  assert.deepEqual(copiedLists(map).map((f) => f.name), ['EVENT_TYPES']);
  assert.deepEqual(copiedLists(`const D = ['add_child', 'remove_child', 'shutdown_tree'];`).map((f) => f.name), ['DANGEROUS_COMMANDS']);
  assert.deepEqual(copiedLists(`if (['unavailable', 'expired'].includes(s)) x({ failed: 1 });`), []);
});

test('no dashboard module keeps its own copy of the vocabulary', () => {
  const modules = readdirSync(STATIC, { recursive: true }).filter((f) => f.endsWith('.js') && f !== 'vocabulary.js');
  assert.ok(modules.length > 10, modules);
  const copies = modules.flatMap((file) => copiedLists(readFileSync(new URL(file, STATIC), 'utf8')).map((c) => ({ file, ...c })));
  assert.deepEqual(copies, []);
});
