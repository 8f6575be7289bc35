import test from 'node:test';
import assert from 'node:assert/strict';
import {
  DANGEROUS, RelayConnection, backoffDelay, buildCommand, clientHello, emptyFilter,
  filterMessage, filtersEqual, normalizeFilter, parseFrame, parseManifest, shortIdentity, splitList,
  uuid, websocketUrl,
} from '../../supervisor/relay/web/static/protocol.js';
import { COMMANDS } from '../../supervisor/relay/web/static/vocabulary.js';
import { FakeSocket, FakeTimers, fixture } from './helpers.mjs';

test('the WebSocket URL is the page origin with path /supervisor', () => {
  assert.equal(websocketUrl({ protocol: 'https:', host: 'relay.example:9443' }), 'wss://relay.example:9443/supervisor');
  assert.equal(websocketUrl({ protocol: 'http:', host: '127.0.0.1:8000' }), 'ws://127.0.0.1:8000/supervisor');
});

test('client_hello has exactly the contract keys', () => {
  const example = fixture('session.client_hello');
  const hello = clientHello('store-1');
  assert.deepEqual(Object.keys(hello).sort(), Object.keys(example).sort());
  assert.deepEqual(hello, { type: 'client_hello', client_store_id: 'store-1', resume_cursor: {} });
  assert.throws(() => clientHello('  '));
});

test('commands list the contract commands, signal_child, reload_config; four are dangerous', () => {
  assert.deepEqual(COMMANDS, ['restart_child', 'pause_child', 'resume_child', 'quarantine_child',
    'remove_child', 'add_child', 'shutdown_tree', 'signal_child', 'reload_config']);
  assert.deepEqual([...DANGEROUS].sort(), ['add_child', 'reload_config', 'remove_child', 'shutdown_tree']);
});

test('a dry run is built for reload_config only, unconfirmed, and needs no child path', () => {
  const msg = buildCommand({ commandId: 'c1', targetId: 't', command: 'reload_config', reason: 'edit', dryRun: true });
  assert.deepEqual(msg, { type: 'command', command_id: 'c1', correlation_id: null, target_id: 't',
    command: 'reload_config', target: { child_path: null }, reason: 'edit', confirmed: false, dry_run: true });
  assert.throws(() => buildCommand({ commandId: 'c2', targetId: 't', command: 'reload_config', reason: 'edit' }),
    (e) => e.code === 'confirmation_required');
  assert.throws(() => buildCommand({ commandId: 'c3', targetId: 't', command: 'pause_child', childPath: '/root/a', reason: 'x', dryRun: true }),
    (e) => e.code === 'invalid_message_schema');
});

test('a built command matches the contract example and never carries requested_by', () => {
  const example = fixture('session.command');
  const msg = buildCommand({
    commandId: 'cmd-7f3a', targetId: 'payments-worker-a', command: 'pause_child',
    childPath: '/root/invoice_writer', reason: ' maintenance window ',
  });
  assert.deepEqual(msg, example);
  assert.equal('requested_by' in msg, false);
});

test('command validation: reason, path, confirmation', () => {
  const base = { commandId: 'c1', targetId: 't', childPath: '/root/a', reason: 'r' };
  assert.throws(() => buildCommand({ ...base, command: 'pause_child', reason: '  ' }), { code: 'empty_reason' });
  assert.throws(() => buildCommand({ ...base, command: 'pause_child', childPath: null }), { code: 'invalid_message_schema' });
  assert.throws(() => buildCommand({ ...base, command: 'remove_child' }), { code: 'confirmation_required' });
  assert.throws(() => buildCommand({ ...base, command: 'restart' }), { code: 'unsupported_command' });
  assert.throws(() => buildCommand({ ...base, command: 'pause_child', commandId: '' }), { code: 'invalid_message_schema' });
  const remove = buildCommand({ ...base, command: 'remove_child', confirmed: true });
  assert.equal(remove.confirmed, true);
  const shutdown = buildCommand({ ...base, command: 'shutdown_tree', childPath: null, confirmed: true });
  assert.deepEqual(shutdown.target, { child_path: null });
  const add = buildCommand({ ...base, command: 'add_child', childPath: '/root/new', confirmed: true, childManifest: { id: 'new' } });
  assert.deepEqual(add.target, { child_path: '/root/new', child_manifest: { id: 'new' } });
});

test('manifest text is sent as an object when it is a JSON object, else as text', () => {
  assert.deepEqual(parseManifest('{"id": "x"}'), { id: 'x' });
  assert.equal(parseManifest('id: x\nkind: task'), 'id: x\nkind: task');
  assert.equal(parseManifest('{broken'), '{broken');
  assert.equal(parseManifest('   '), undefined);
});

test('filter messages are normalised to the contract shape', () => {
  const example = fixture('session.filter');
  const msg = filterMessage({ target_ids: ['payments-worker-a'], severities: ['warning', 'error', 'error'] });
  assert.deepEqual(msg, example);
  assert.deepEqual(Object.keys(filterMessage({})).sort(), Object.keys(example).sort());
  const n = normalizeFilter({ sequence_min: '12.7', correlation_id: '  ', child_paths: [' /root/a ', ''] });
  assert.equal(n.sequence_min, 12);
  assert.equal(n.correlation_id, null);
  assert.deepEqual(n.child_paths, ['/root/a']);
  assert.equal(normalizeFilter({ sequence_min: 'abc' }).sequence_min, null);
  assert.ok(filtersEqual(emptyFilter(), fixture('session.server_hello').log_event_filter_conditions));
  assert.ok(!filtersEqual(emptyFilter(), { severities: ['error'] }));
  assert.deepEqual(splitList(' a, b  c,,'), ['a', 'b', 'c']);
});

test('backoff grows exponentially, is capped and jittered within bounds', () => {
  const mid = () => 0.5; // no jitter
  assert.equal(backoffDelay(0, {}, mid), 500);
  assert.equal(backoffDelay(1, {}, mid), 1000);
  assert.equal(backoffDelay(3, {}, mid), 4000);
  assert.equal(backoffDelay(30, {}, mid), 15000);
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const lo = backoffDelay(attempt, {}, () => 0);
    const hi = backoffDelay(attempt, {}, () => 0.999);
    assert.ok(lo <= hi && lo >= 250 && hi <= 15000, `attempt ${attempt}: ${lo}..${hi}`);
  }
});

test('frames are parsed without throwing', () => {
  assert.deepEqual(parseFrame('nope'), { error: 'invalid_json' });
  assert.deepEqual(parseFrame('[1]'), { error: 'missing_type' });
  assert.equal(parseFrame('{"type":"filter_update"}').error, 'unknown_type');
  assert.equal(parseFrame(JSON.stringify(fixture('session.event'))).msg.type, 'event');
});

test('identity is shortened to a fingerprint prefix', () => {
  const id = fixture('session.server_hello').client_identity;
  assert.equal(shortIdentity(id), 'sha256:3f3f3f3f3f3f…');
  assert.equal(shortIdentity('trusted_proxy:alice'), 'trusted_proxy:alice');
  assert.equal(shortIdentity(null), '');
});

function makeConnection(extra = {}) {
  FakeSocket.instances = [];
  const timers = new FakeTimers();
  const received = [];
  const statuses = [];
  const conn = new RelayConnection({
    url: 'wss://h/supervisor', clientStoreId: 'store-1', WebSocketImpl: FakeSocket, timers,
    random: () => 0.5, onMessage: (m) => received.push(m), onStatus: (s) => statuses.push(s), ...extra,
  });
  return { conn, timers, received, statuses };
}

test('the session sends nothing before server_hello, then client_hello', () => {
  const { conn, received, statuses } = makeConnection();
  conn.start();
  const ws = FakeSocket.instances[0];
  ws.open();
  assert.deepEqual(ws.sent, []);
  assert.equal(conn.send({ type: 'command' }), false, 'no commands before the handshake');
  ws.receive(fixture('session.server_hello'));
  assert.deepEqual(ws.sent, [{ type: 'client_hello', client_store_id: 'store-1', resume_cursor: {} }]);
  assert.equal(conn.established, true);
  assert.deepEqual(statuses, ['connecting', 'handshaking', 'established']);
  ws.receive(fixture('session.target_list'));
  assert.deepEqual(received.map((m) => m.type), ['server_hello', 'target_list']);
  assert.equal(conn.send({ type: 'command' }), true);
});

test('the wanted filter is re-sent after the handshake only when it differs', () => {
  let wanted = null;
  const { conn, timers } = makeConnection({ getFilter: () => wanted });
  conn.start();
  let ws = FakeSocket.instances[0];
  ws.receive(fixture('session.server_hello'));
  assert.equal(ws.sent.length, 1);
  wanted = { severities: ['error'] };
  ws.drop();
  timers.runNext();
  ws = FakeSocket.instances[1];
  ws.receive(fixture('session.server_hello'));
  assert.deepEqual(ws.sent.map((m) => m.type), ['client_hello', 'log_event_filter_conditions']);
  assert.deepEqual(ws.sent[1].severities, ['error']);
});

test('a lost connection is retried with growing delays, reset by a target list', () => {
  const { conn, timers, statuses } = makeConnection();
  conn.start();
  FakeSocket.instances[0].drop();
  assert.equal(statuses.at(-1), 'waiting');
  assert.equal(timers.runNext(), 500);
  FakeSocket.instances[1].drop();
  assert.equal(timers.runNext(), 1000);
  const ws = FakeSocket.instances[2];
  ws.receive(fixture('session.server_hello'));
  ws.receive(fixture('session.target_list'));
  ws.drop();
  assert.equal(timers.runNext(), 500, 'a working session resets the backoff');
  assert.equal(FakeSocket.instances.length, 4);
});

test('stop() closes the socket and cancels retries', () => {
  const { conn, timers } = makeConnection();
  conn.start();
  FakeSocket.instances[0].drop();
  conn.stop();
  assert.equal(timers.pending.length, 0);
  assert.equal(conn.status, 'offline');
});

test('unreadable frames are reported, not thrown', () => {
  const calls = [];
  const { conn } = makeConnection({ onMessage: (m, p) => calls.push([m, p.error]) });
  conn.start();
  const ws = FakeSocket.instances[0];
  ws.receive('{oops');
  assert.deepEqual(calls, [[null, 'invalid_json']]);
});

test('ids are version 4 UUIDs, from randomUUID or from random bytes', () => {
  assert.equal(uuid({ randomUUID: () => 'from-randomUUID' }), 'from-randomUUID');
  const bytes = { getRandomValues: (b) => b.fill(0xff) };
  assert.equal(uuid(bytes), 'ffffffff-ffff-4fff-bfff-ffffffffffff');
  assert.match(uuid({ getRandomValues: (b) => b.fill(0) }), /^00000000-0000-4000-8000-000000000000$/);
});
