import test from 'node:test';
import assert from 'node:assert/strict';
import {
  PREFIX, PositionMemory, Preferences, memoryStorage, openStorage,
} from '../../supervisor/relay/web/static/storage.js';

test('hand-placed positions are remembered per target', () => {
  const data = new Map();
  const storage = { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => data.set(k, v), removeItem: (k) => data.delete(k) };
  const mem = new PositionMemory(storage);
  mem.save('t1', new Map([['/root/a', { x: 10.4, y: 20.6 }]]));
  assert.deepEqual([...mem.load('t1')], [['/root/a', { x: 10, y: 21 }]]);
  assert.equal(mem.load('t2').size, 0);
  mem.save('t1', new Map());
  assert.equal(data.size, 0, 'relayout forgets the target entry');
  storage.setItem('supervisor-dashboard.positions.bad', '{not json');
  assert.equal(mem.load('bad').size, 0);
});

test('the window storage is used when it works, memory when it throws', () => {
  const real = memoryStorage();
  assert.equal(openStorage({ localStorage: real }), real);
  assert.equal(real.getItem(`${PREFIX}probe`), null, 'the probe leaves nothing behind');
  const broken = { setItem() { throw new Error('SecurityError'); } };
  const fallback = openStorage({ localStorage: broken });
  assert.notEqual(fallback, broken);
  fallback.setItem('k', 1);
  assert.equal(fallback.getItem('k'), '1');
  fallback.removeItem('k');
  assert.equal(fallback.getItem('k'), null);
});

test('preferences live under the dashboard prefix; the client store id is made once', () => {
  const storage = memoryStorage();
  const prefs = new Preferences(storage);
  prefs.set('theme', 'dark');
  assert.equal(storage.getItem('supervisor-dashboard.theme'), 'dark');
  let made = 0;
  const newId = () => { made += 1; return `id-${made}`; };
  assert.equal(prefs.clientStoreId(newId), 'id-1');
  assert.equal(new Preferences(storage).clientStoreId(newId), 'id-1', 'a reload keeps the id');
  assert.equal(made, 1);
});
