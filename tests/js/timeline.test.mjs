import test from 'node:test';
import assert from 'node:assert/strict';
import { ROW_HEIGHT, isAtBottom, shortTime, visibleRange } from '../../supervisor/relay/web/static/timeline.js';

test('only the rows in view plus overscan are rendered', () => {
  assert.deepEqual(visibleRange(0, 260, 26, 10000, 6), [0, 17]);
  const [start, end] = visibleRange(26 * 5000, 260, 26, 10000, 6);
  assert.deepEqual([start, end], [4994, 5017]);
  assert.ok(end - start < 40);
  assert.deepEqual(visibleRange(26 * 9999, 260, 26, 10000, 6), [9993, 10000]);
  assert.deepEqual(visibleRange(0, 260, 26, 0, 6), [0, 0]);
});

test('follow stays on within one row of the bottom', () => {
  assert.ok(isAtBottom(740, 260, 1000));
  assert.ok(isAtBottom(1000 - 260 - ROW_HEIGHT + 1, 260, 1000));
  assert.equal(isAtBottom(100, 260, 1000), false);
});

test('times show the UTC time of day with milliseconds', () => {
  assert.equal(shortTime('2026-11-28T13:05:15.123456Z'), '13:05:15.123');
  assert.equal(shortTime('2026-11-28T13:05:15Z'), '13:05:15.000');
  assert.equal(shortTime('2026-11-28T13:05:15.5Z'), '13:05:15.500');
  assert.equal(shortTime(null), '');
});
