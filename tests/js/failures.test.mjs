import test from 'node:test';
import assert from 'node:assert/strict';
import {
  FAILURE_TIMES_KEPT, FAILURE_WINDOW_MS, FailureLedger, STABLE_RUN_MS,
} from '../../supervisor/relay/web/static/failures.js';
import { TARGET as T, TestClock, clone, contractStore, fixture, runtimeRow } from './helpers.mjs';

const W = '/root/invoice_writer';

function delta(store, lifecycle, extra = {}) {
  store.apply({ type: 'state_delta', target_id: T, delta: { runtime_state: [{ ...runtimeRow(W, lifecycle), ...extra }] } });
}

test('a child failing every few seconds counts as failed although no frame shows it failed', () => {
  const clock = new TestClock();
  const store = contractStore(clock);
  delta(store, 'running');
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 0 });
  for (let i = 0; i < 3; i += 1) {
    // failed, restarting and running again within one frame: the count never sees `failed`
    delta(store, 'failed', { last_failure: 'RuntimeError: simulated failure' });
    delta(store, 'restarting', { last_failure: 'RuntimeError: simulated failure' });
    delta(store, 'running', { last_failure: 'RuntimeError: simulated failure' });
    assert.equal(store.lifecycleOf(T, W), 'running');
    assert.deepEqual(store.failureTotals(clock.ms), { failing: 1, recent: i + 1 });
    assert.deepEqual(store.failingPaths(T), [W]);
    clock.advance(10_000);
  }
});

test('a child that has run stably since its failure no longer counts; the failure stays recent', () => {
  const clock = new TestClock();
  const store = contractStore(clock);
  delta(store, 'failed', { last_failure: 'exit status 3' });
  delta(store, 'running', { last_failure: 'exit status 3' });
  clock.advance(STABLE_RUN_MS - 1);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 1, recent: 1 });
  clock.advance(1);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 1 });
  assert.equal(store.isFailing(T, W), false);
  clock.advance(FAILURE_WINDOW_MS - STABLE_RUN_MS);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 0 }, 'out of the window');
});

test('a failure shown only by a changed last_failure is still one failure', () => {
  const clock = new TestClock();
  const store = contractStore(clock);
  delta(store, 'running', { last_failure: null });
  delta(store, 'restarting', { last_failure: 'exit status 1' });
  delta(store, 'restarting', { last_failure: 'exit status 1' });
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 1, recent: 1 });
});

test('a short run after the failure, then a hold, keeps the child failing', () => {
  const ledger = new FailureLedger();
  ledger.failed(W, 0);
  ledger.running(W, 1000);
  ledger.left(W, 5000); // paused by an operator after 4 s
  assert.equal(ledger.isFailing(W, 'paused', 10 * STABLE_RUN_MS), true);
  ledger.running(W, 20_000);
  ledger.left(W, 20_000 + STABLE_RUN_MS); // ran long enough, then paused
  assert.equal(ledger.isFailing(W, 'paused', 10 * STABLE_RUN_MS), false);
  assert.equal(ledger.isFailing(W, 'failed', 0), true, 'the failed state always counts');
});

test('failure times are kept in order and bounded', () => {
  const ledger = new FailureLedger();
  for (let i = 0; i < FAILURE_TIMES_KEPT + 10; i += 1) ledger.failed(`/root/c${i % 3}`, 1000 + i);
  ledger.failed('/root/late', 500); // an older failure learned later goes in its place
  assert.equal(ledger.times.length, FAILURE_TIMES_KEPT);
  assert.deepEqual(ledger.times.slice(0, 2), [1010, 1011], 'the oldest went first');
  assert.equal(ledger.recent(1000 + FAILURE_TIMES_KEPT + 9), FAILURE_TIMES_KEPT);
});

test('a state tells past failures through its replayed events, on the browser clock', () => {
  // the browser's clock runs 2 h ahead of the target's: event times are moved by the offset
  // that the state's generated_at shows
  const state = clone(fixture('session.state'));
  const generated = Date.parse(state.state.generated_at);
  const clock = new TestClock(new Date(generated + 2 * 3600_000).toISOString());
  const event = (sequence, type, ago) => ({
    ...state.state.recent_events[0], sequence, event_type: type, target_path: W, severity: 'info',
    occurred_at: new Date(generated - ago).toISOString(),
  });
  state.state.recent_events = [
    event(1, 'child_failed', 20 * 60_000), // before the window
    event(2, 'child_failed', 5 * 60_000),
    event(3, 'child_running', 5 * 60_000 - 500),
  ];
  state.state.runtime_state = [runtimeRow(W, 'running')];
  const store = contractStore(clock);
  store.apply(state);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 1 }, 'it has run stably for 5 min');
  store.apply(state); // the same state again (a filter change): nothing is counted twice
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 1 });
});

test('a child shown failed with no event to date it counts as failing, not as a recent failure', () => {
  const state = clone(fixture('session.state'));
  state.state.recent_events = [];
  state.state.runtime_state = [runtimeRow(W, 'failed')];
  const clock = new TestClock();
  const store = contractStore(clock);
  store.apply(state);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 1, recent: 0 });
  delta(store, 'running');
  clock.advance(STABLE_RUN_MS);
  assert.deepEqual(store.failureTotals(clock.ms), { failing: 0, recent: 0 });
});
