import test from 'node:test';
import assert from 'node:assert/strict';
import { LIMITS, Ring, Store, nodeEvents } from '../../supervisor/relay/web/static/store.js';
import {
  TARGET as T, clone, contractStore as sessionStore, eventMsg, fixture, logMsg, runtimeRow, syntheticTopology,
} from './helpers.mjs';

test('Ring keeps the newest `capacity` items and reports evictions', () => {
  const ring = new Ring(3);
  assert.equal(ring.push(1), undefined);
  ring.push(2);
  ring.push(3);
  assert.equal(ring.push(4), 1);
  assert.deepEqual(ring.toArray(), [2, 3, 4]);
  assert.equal(ring.at(0), 2);
  assert.equal(ring.at(3), undefined);
  assert.equal(ring.length, 3);
});

test('the contract session sequence builds targets, topology, runtime and rows', () => {
  const store = sessionStore();
  assert.equal(store.session.sessionId, '9b2f0c1e-5d1a-4c55-a1f3-2d0e9c7b1a44');
  const t = store.targets.get(T);
  assert.equal(t.displayName, 'payments worker a');
  assert.equal(t.connectionState, 'connected');
  assert.equal(t.supportedCommands.length, 7);
  assert.deepEqual([...t.nodes.keys()], ['/root', '/root/invoice_writer']);
  assert.equal(store.lifecycleOf(T, '/root/invoice_writer'), 'paused');
  assert.equal(store.lifecycleOf(T, '/root'), 'running', 'root falls back to state_summary');
  assert.equal(t.events.length, 1);
  assert.equal(t.logs.length, 1);
  assert.equal(store.eventTotal, 1);
  const changes = store.takeChanges();
  assert.ok(changes.session && changes.targets);
  assert.ok(changes.topology.has(T));
  assert.deepEqual([...changes.runtime.get(T)], ['/root/invoice_writer']);
  assert.deepEqual(changes.rows.map((r) => r.kind), ['event', 'log']);
  assert.deepEqual(changes.rows.map((r) => r.id), [1, 2]);
});

test('events already replayed in state are not added twice', () => {
  const store = sessionStore();
  store.apply(fixture('session.event')); // sequence 1042, also in state.recent_events
  store.apply(fixture('session.state')); // reconnect replays the same state
  const t = store.targets.get(T);
  assert.equal(t.events.length, 1);
  assert.equal(t.logs.length, 1);
  store.apply(eventMsg(T, 1043));
  assert.equal(t.events.length, 2);
  assert.equal(store.eventTotal, 2);
});

test('a sequence gap is reported as a diagnostic', () => {
  const store = sessionStore();
  store.apply(eventMsg(T, 1050));
  const diag = store.diagnostics.toArray().find((d) => d.code === 'sequence_gap');
  assert.ok(diag);
  assert.deepEqual(diag.text, { key: 'diag_gap', params: { from: 1043, to: 1049 } });
});

test('a restarted target (lower sequences in a state without instance_id) resets de-duplication', () => {
  const store = new Store();
  const noInstance = (msg) => { const m = clone(msg); delete m.state.target.instance_id; return m; };
  for (const name of ['server_hello', 'target_list']) store.apply(fixture(`session.${name}`));
  store.targets.get(T).instanceId = null;
  store.apply(noInstance(fixture('session.state')));
  const state = noInstance(fixture('session.state'));
  state.state.recent_events[0].sequence = 1;
  state.state.recent_logs[0].sequence = 1;
  store.apply(state);
  const t = store.targets.get(T);
  assert.equal(t.events.length, 2);
  assert.equal(t.lastEventSeq, 1);
  assert.ok(store.diagnostics.toArray().some((d) => d.code === 'journal_restarted'));
});

test('a new instance_id resets de-duplication: the new process\'s events are shown', () => {
  const store = sessionStore();
  const t = store.targets.get(T);
  const old = fixture('session.state').state.target.instance_id;
  assert.equal(t.instanceId, old);
  const seq = t.lastEventSeq;
  assert.ok(seq > 3);
  store.apply(eventMsg(T, 2)); // a replay of the old instance: a duplicate or gap, not a reset
  assert.equal(t.instanceId, old);
  const listed = clone(fixture('session.target_list'));
  listed.targets[0].instance_id = 'i-new';
  store.apply(listed); // the relay read the restarted target's first state
  assert.equal(t.instanceId, 'i-new');
  const before = t.events.length;
  for (const n of [1, 2, 3]) store.apply(eventMsg(T, n));
  assert.equal(t.events.length, before + 3, 'sequences from 1 again are new events');
  assert.equal(t.lastEventSeq, 3);
  assert.ok(store.diagnostics.toArray().some((d) => d.code === 'journal_restarted'));
  // the same instance again changes nothing
  store.apply(eventMsg(T, 3));
  assert.equal(t.events.length, before + 3);
  const fresh = clone(fixture('session.state'));
  fresh.state.target.instance_id = 'i-new';
  fresh.state.recent_events = [];
  store.apply(fresh);
  assert.equal(t.lastEventSeq, 3);
});

test('state_delta merges changed runtime rows', () => {
  const store = sessionStore();
  store.takeChanges();
  const failed = { ...runtimeRow('/root/invoice_writer', 'failed'), last_failure: 'exit status 3' };
  store.apply({ type: 'state_delta', target_id: T, delta: { state_generation: 60, runtime_state: [failed] } });
  const t = store.targets.get(T);
  assert.equal(t.stateGeneration, 60);
  assert.equal(store.lifecycleOf(T, '/root/invoice_writer'), 'failed');
  const changes = store.takeChanges();
  assert.ok(changes.runtime.get(T).has('/root/invoice_writer'));
  assert.equal(changes.counters, true, 'a failure changes the header totals');
  assert.equal(changes.targets, false, 'the target list itself did not change');
});

test('a delta with topology replaces nodes and all runtime rows', () => {
  const store = sessionStore();
  const topology = syntheticTopology(3);
  store.apply({
    type: 'state_delta', target_id: T,
    delta: { topology, runtime_state: topology.nodes.slice(1).map((n) => runtimeRow(n.path, 'failed')) },
  });
  const t = store.targets.get(T);
  assert.equal(t.nodes.size, topology.nodes.length);
  assert.equal(t.runtime.has('/root/invoice_writer'), false);
  assert.equal(store.failingPaths(T).length, topology.nodes.length - 1);
  assert.equal(t.state.topology, topology);
});

test('dropped counts and connection states are recorded', () => {
  const store = sessionStore();
  store.apply({ type: 'dropped_count', target_id: T, dropped_event_count: 17, dropped_log_count: 2 });
  store.apply(fixture('session.connection_state'));
  const t = store.targets.get(T);
  assert.equal(t.droppedEvents, 17);
  assert.equal(t.droppedLogs, 2);
  assert.equal(t.connectionState, 'unavailable');
  assert.ok(store.diagnostics.toArray().some((d) => d.code === 'target_unavailable' && d.targetId === T));
  store.apply({ type: 'connection_state', target_id: T, state: 'connected' });
  assert.equal(t.connectionState, 'connected');
});

test('a target missing from a new target list becomes expired', () => {
  const store = sessionStore();
  store.apply({ type: 'target_list', targets: [] });
  assert.equal(store.targets.get(T).connectionState, 'expired');
  assert.equal(store.listedTargets().length, 0);
});

test('command results are matched to the command that was sent', () => {
  const store = sessionStore();
  store.trackCommand({ ...fixture('session.command') });
  store.takeChanges();
  store.apply(fixture('session.command_result'));
  const changes = store.takeChanges();
  assert.equal(store.pending.size, 0);
  assert.equal(changes.results.length, 1);
  assert.equal(changes.results[0].kind, 'result');
  assert.equal(changes.results[0].sent.command, 'pause_child');
  assert.equal(changes.rows[0].kind, 'result');
  assert.equal(changes.rows[0].summary, 'pause_child /root/invoice_writer → completed');
  assert.equal(changes.rows[0].correlationId, 'cmd-7f3a');
  assert.equal(store.session.principal, 'O=Example Ops, CN=demo operator');
  assert.equal(store.targets.get(T).stateGeneration, 58, 'the result state_delta is applied');
});

test('a refused command error is matched by the command_id beside it', () => {
  const store = sessionStore();
  const error = fixture('session.error');
  store.trackCommand({ ...fixture('session.command'), command: 'remove_child', confirmed: false, command_id: error.command_id });
  store.trackCommand({ ...fixture('session.command'), command: 'pause_child', command_id: 'newer' });
  store.takeChanges();
  store.apply(fixture('session.error'));
  const changes = store.takeChanges();
  assert.equal(changes.results[0].kind, 'refused');
  assert.equal(changes.results[0].error.code, 'confirmation_required');
  assert.equal(changes.rows[0].severity, 'error');
  assert.match(changes.rows[0].detail, /^confirmation_required: /);
  assert.equal(changes.results[0].sent.command, 'remove_child', 'not the newest pending command');
  assert.deepEqual([...store.pending.keys()], ['newer']);
  assert.ok(store.diagnostics.toArray().some((d) => d.code === 'confirmation_required'));
});

test('from a relay without command_id beside errors, a refusal matches the newest pending command', () => {
  const store = sessionStore();
  store.trackCommand({ ...fixture('session.command'), command: 'remove_child', confirmed: false });
  store.takeChanges();
  const { command_id: _, ...error } = fixture('session.error');
  store.apply(error);
  const changes = store.takeChanges();
  assert.equal(changes.results[0].kind, 'refused');
  assert.equal(changes.results[0].sent.command, 'remove_child');
});

test('an error unrelated to a command is shown as a plain error', () => {
  const store = sessionStore();
  store.takeChanges();
  store.apply({ type: 'error', error: { code: 'unsupported_message_type', stage: 'session', target_id: null, message: 'x', retryable: false } });
  const changes = store.takeChanges();
  assert.equal(changes.results[0].kind, 'error');
  assert.equal(changes.rows.length, 0);
});

test('audit events become rows and reveal our principal', () => {
  const store = sessionStore();
  store.apply(fixture('session.audit_event'));
  const t = store.targets.get(T);
  assert.equal(t.audit.length, 1);
  const row = t.audit.at(0);
  assert.equal(row.kind, 'audit');
  assert.equal(row.correlationId, 'cmd-7f3a');
  assert.equal(row.path, '/root/invoice_writer');
  assert.equal(store.session.principal, 'O=Example Ops, CN=demo operator');
});

test('per-target buffers are bounded and evicted rows are flagged', () => {
  const store = sessionStore();
  const t = store.targets.get(T);
  const first = t.events.at(0);
  for (let i = 0; i < LIMITS.eventsPerTarget + 10; i += 1) store.apply(eventMsg(T, 2000 + i));
  for (let i = 0; i < LIMITS.logsPerTarget + 10; i += 1) store.apply(logMsg(T, 9000 + i));
  assert.equal(t.events.length, LIMITS.eventsPerTarget);
  assert.equal(t.logs.length, LIMITS.logsPerTarget);
  assert.equal(t.eventSeqs.size, LIMITS.eventsPerTarget, 'the de-duplication index shrinks too');
  assert.equal(first.gone, true);
  assert.ok(store.takeChanges().evicted > 0);
  for (let i = 0; i < LIMITS.diagnostics + 5; i += 1) store.diag('info', 'x', String(i));
  assert.equal(store.diagnostics.length, LIMITS.diagnostics);
});

test('the pending command map is bounded', () => {
  const store = new Store();
  for (let i = 0; i < 500; i += 1) store.trackCommand({ command_id: `c${i}`, target_id: T, command: 'pause_child', target: { child_path: '/root/a' } });
  assert.ok(store.pending.size <= 200);
  assert.ok(store.pending.has('c499'));
});

test('nodeEvents lists a node’s recent events newest first', () => {
  const store = sessionStore();
  store.apply(eventMsg(T, 1043, { target_path: '/root/invoice_writer' }));
  store.apply(eventMsg(T, 1044, { target_path: '/root/other' }));
  const rows = nodeEvents(store, T, '/root/invoice_writer');
  assert.deepEqual(rows.map((r) => r.sequence), [1043, 1042]);
});

test('unknown message types become diagnostics', () => {
  const store = new Store();
  store.apply({ type: 'filter_update' });
  assert.equal(store.diagnostics.at(0).code, 'unsupported_message_type');
});

test('replayed events and logs enter the timeline in time order', () => {
  const store = new Store();
  const state = clone(fixture('session.state'));
  const ev = state.state.recent_events[0];
  const lg = state.state.recent_logs[0];
  state.state.recent_events = [
    { ...ev, sequence: 1, occurred_at: '2026-11-28T13:00:01.000000Z' },
    { ...ev, sequence: 2, occurred_at: '2026-11-28T13:00:03.000000Z' },
  ];
  state.state.recent_logs = [{ ...lg, sequence: 7, occurred_at: '2026-11-28T13:00:02.000000Z' }];
  store.apply(state);
  assert.deepEqual(store.takeChanges().rows.map((r) => `${r.kind}${r.sequence}`), ['event1', 'log7', 'event2']);
});
