// Shared test helpers: contract fixtures, small synthetic trees, fake timers and sockets.
import { readFileSync } from 'node:fs';
import { Store } from '../../supervisor/relay/web/static/store.js';
import { Preferences, memoryStorage } from '../../supervisor/relay/web/static/storage.js';

export const STATIC = new URL('../../supervisor/relay/web/static/', import.meta.url);

export function fixture(name) {
  return JSON.parse(readFileSync(new URL(`../contract_examples/${name}.json`, import.meta.url), 'utf8'));
}

export const TARGET = 'payments-worker-a';

// A clock the test moves: clock.now() for a Store, clock.advance(ms).
export class TestClock {
  constructor(iso = '2026-11-28T13:00:00Z') {
    this.ms = Date.parse(iso);
  }

  now() {
    return new Date(this.ms);
  }

  advance(ms) {
    this.ms += ms;
  }
}

// A store after the contract's session sequence: server_hello, target_list, state.
export function contractStore(clock = new TestClock()) {
  const store = new Store({ now: () => clock.now() });
  for (const name of ['server_hello', 'target_list', 'state']) store.apply(fixture(`session.${name}`));
  return store;
}

// Preferences over storage kept in memory, optionally with stored values (name -> value).
export function memoryPrefs(values = {}) {
  const prefs = new Preferences(memoryStorage());
  for (const [name, value] of Object.entries(values)) prefs.set(name, value);
  return prefs;
}

export function clone(value) {
  return JSON.parse(JSON.stringify(value));
}

// A DashboardState topology: root with `leaves` children plus one nested supervisor with
// two children and a dependency edge between two leaves.
export function syntheticTopology(leaves = 5) {
  const node = (path, kind, name) => ({
    node_id: path, child_id: path === '/root' ? null : path.split('/').pop(), path, name, kind,
    tags: [], criticality: 'standard', state_summary: 'running', diagnostics: {},
  });
  const root = node('/root', 'root_supervisor', 'root supervisor');
  const nodes = [root];
  const edges = [];
  for (let i = 0; i < leaves; i += 1) {
    const path = `/root/w${i}`;
    nodes.push(node(path, 'child_task', `worker ${i}`));
    edges.push({ edge_id: `parent:/root->${path}`, source_path: '/root', target_path: path, kind: 'parent_child', order: i });
  }
  nodes.push(node('/root/sub', 'supervisor', 'nested'));
  edges.push({ edge_id: 'parent:/root->/root/sub', source_path: '/root', target_path: '/root/sub', kind: 'parent_child', order: leaves });
  for (const c of ['a', 'b']) {
    nodes.push(node(`/root/sub/${c}`, 'child_process', `sub ${c}`));
    edges.push({ edge_id: `parent:/root/sub->/root/sub/${c}`, source_path: '/root/sub', target_path: `/root/sub/${c}`, kind: 'parent_child', order: c === 'a' ? 0 : 1 });
  }
  if (leaves >= 2) {
    // w0 depends on w1: the dependency (w1) is the source
    edges.push({ edge_id: 'dependency:/root/w1->/root/w0', source_path: '/root/w1', target_path: '/root/w0', kind: 'dependency', order: 0 });
  }
  return { root, nodes, edges, declaration_order: nodes.map((n) => n.path) };
}

export function runtimeRow(path, lifecycle = 'running') {
  return {
    child_path: path, lifecycle_state: lifecycle, health: 'healthy', readiness: 'ready', generation: 1,
    attempt: 1, restart_count: 0, last_failure: null, last_policy_decision: null, shutdown_state: 'idle',
  };
}

export function eventMsg(targetId, sequence, extra = {}) {
  return {
    type: 'event',
    target_id: targetId,
    event: {
      target_id: targetId, sequence, correlation_id: `c-${sequence}`, event_type: 'child_running',
      severity: 'info', target_path: '/root/w0', child_id: 'w0', occurred_at: '2026-11-28T13:05:15.123456Z',
      config_version: 'v1', payload: {}, ...extra,
    },
  };
}

export function logMsg(targetId, sequence, extra = {}) {
  return {
    type: 'log',
    target_id: targetId,
    log: {
      target_id: targetId, sequence, correlation_id: null, severity: 'info', message: `line ${sequence}`,
      fields: { stream: 'stdout', child_path: '/root/w1' }, occurred_at: '2026-11-28T13:05:15.123456Z', ...extra,
    },
  };
}

// Fake timers: setTimeout records callbacks; run() fires the earliest.
export class FakeTimers {
  constructor() {
    this.pending = [];
    this.next = 1;
  }

  setTimeout(fn, delay) {
    const id = this.next;
    this.next += 1;
    this.pending.push({ id, fn, delay });
    return id;
  }

  clearTimeout(id) {
    this.pending = this.pending.filter((p) => p.id !== id);
  }

  runNext() {
    this.pending.sort((a, b) => a.delay - b.delay);
    const p = this.pending.shift();
    p.fn();
    return p.delay;
  }
}

// Fake WebSocket: records sent frames; the test drives open/message/close.
export class FakeSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closed = false;
    FakeSocket.instances.push(this);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close() {
    this.closed = true;
  }

  open() {
    this.onopen();
  }

  receive(msg) {
    this.onmessage({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }

  drop(code = 1006) {
    this.onclose({ code, reason: '' });
  }
}
