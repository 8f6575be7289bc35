// Client-side model: per-target state applied from §3 messages, bounded row buffers
// (events, logs, audit, command results), failures (failures.js) and bounded diagnostics.
// No DOM access.

import { FailureLedger } from './failures.js';
import { ResourceHistory } from './resources.js';

// Buffer caps. Oldest entries are evicted first; every row buffer is per target, so the
// timeline holds at most targets × (events + logs + audit + results) rows (21,500 for one
// target); evicted rows leave the timeline at the next frame.
export const LIMITS = Object.freeze({
  eventsPerTarget: 10000,
  logsPerTarget: 10000,
  auditPerTarget: 1000,
  resultsPerTarget: 500,
  diagnostics: 300,
  nodeRecentEvents: 25,
  olderPerTarget: 10000, // rows read back from a target's history (scrolled to, searched)
  historyPage: 200, // records asked for per history request
  historyPending: 50, // history requests awaiting an answer
});

// Rows read from a history sort before every live row (ids from 1 up), by their time:
// microseconds since 1970 minus this offset stay negative and exact in a double.
const HISTORY_ID_OFFSET = 4e15;

// The arrival-order id of a history record: its time, so pages of logs and events interleave.
export function historyRowId(record) {
  let micros = Number(record.occurred_at_unix_nanos) / 1000;
  if (!Number.isFinite(micros)) micros = Date.parse(record.occurred_at) * 1000;
  return (Number.isFinite(micros) ? micros : 0) - HISTORY_ID_OFFSET;
}

// Fixed-capacity FIFO; push returns the evicted item (or undefined).
export class Ring {
  constructor(capacity) {
    this.capacity = capacity;
    this.items = []; // grows to `capacity` as items arrive (thousands of targets hold mostly empty rings)
    this.start = 0;
    this.length = 0;
  }

  push(item) {
    if (this.length < this.capacity) {
      this.items[(this.start + this.length) % this.capacity] = item;
      this.length += 1;
      return undefined;
    }
    const evicted = this.items[this.start];
    this.items[this.start] = item;
    this.start = (this.start + 1) % this.capacity;
    return evicted;
  }

  at(i) {
    return i < 0 || i >= this.length ? undefined : this.items[(this.start + i) % this.capacity];
  }

  toArray() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i += 1) out[i] = this.items[(this.start + i) % this.capacity];
    return out;
  }

  clear() {
    this.items = [];
    this.start = 0;
    this.length = 0;
  }
}

// The diagnostic text for a target entering a connection state.
function targetStateText(t, state) {
  return { key: `diag_target_${state}`, params: { name: t.displayName } };
}

const AUDIT_SEVERITY = { accepted: 'info', completed: 'info', rejected: 'warning', failed: 'error', interrupted: 'warning' };
const RESULT_SEVERITY = { accepted: 'info', completed: 'info', rejected: 'warning', failed: 'error' };

// Whether a command event says its command did not come through a relay (payload.origin,
// see COMMAND_ORIGINS): its requested_by is whatever the sending process wrote.
export function notViaRelay(payload) {
  return Boolean(payload && typeof payload === 'object' && payload.origin && payload.origin !== 'relay');
}

function payloadSummary(payload) {
  if (!payload || typeof payload !== 'object') return '';
  const keys = ['reason', 'message', 'exit_code', 'delay_ms', 'phase', 'error'];
  const parts = [];
  if (notViaRelay(payload)) {
    parts.push(`origin=${payload.origin}`);
    if (payload.requested_by) parts.push(`requested_by=${payload.requested_by}`);
    if (payload.peer && payload.peer.pid) parts.push(`peer_pid=${payload.peer.pid}`);
  }
  for (const key of keys) {
    if (payload[key] !== undefined && payload[key] !== null) {
      const value = typeof payload[key] === 'object' ? JSON.stringify(payload[key]) : payload[key];
      parts.push(`${key}=${value}`);
    }
  }
  return parts.join(' ');
}

function newTarget(targetId) {
  return {
    targetId,
    info: null, // target_list entry
    connectionState: null,
    displayName: targetId,
    supportedCommands: [],
    state: null, // last DashboardState without the event/log arrays
    nodes: new Map(), // path -> Node
    runtime: new Map(), // path -> RuntimeState
    topologyVersion: 0,
    stateGeneration: null,
    events: new Ring(LIMITS.eventsPerTarget),
    logs: new Ring(LIMITS.logsPerTarget),
    audit: new Ring(LIMITS.auditPerTarget),
    results: new Ring(LIMITS.resultsPerTarget),
    instanceId: null, // the target process the sequences below belong to (§5 instance_id)
    eventSeqs: new Set(), // sequences held in `events`, for de-duplicating replays
    logSeqs: new Set(),
    lastEventSeq: 0,
    droppedEvents: 0,
    droppedLogs: 0,
    failures: new FailureLedger(),
    history: new ResourceHistory(), // CPU, RSS and restarts per node, last 15 minutes
    ownResources: null, // the target process's figures (the root node's)
    older: new Ring(LIMITS.olderPerTarget), // rows read back from the history
    olderKeys: new Set(), // instance:stream:sequence of the rows in `older`
    historyCursor: { logs: 'end', events: 'end' }, // where scrolling back continues; null: done
    childLogs: null, // {path, records, loading} of the node detail's logs view
    clockOffset: 0, // browser ms minus the target's clock, from the last state's generated_at
    listed: false,
  };
}

// Accumulated effects of applied messages, consumed once per animation frame.
export function emptyChanges() {
  return {
    session: false,
    targets: false, // the target set or a target's name, connection state or commands
    counters: false, // totals the header shows (events, failures)
    dropped: false, // dropped counts
    topology: new Set(), // target ids whose topology was replaced
    runtime: new Map(), // target id -> Set of paths whose runtime changed
    rows: [], // new rows, ascending id
    evicted: 0,
    older: false, // rows from a history page joined the timeline (ahead of the live ones)
    childLogs: false, // a node's logs view has new records
    history: false, // a history page (or its refusal) arrived: what the history line says changed
    diagnostics: false,
    results: [], // {kind:'result'|'refused', ...} for toasts
  };
}

// The timeline row of an EventRecord.
function eventRow(targetId, ev) {
  return {
    kind: 'event',
    targetId,
    sequence: ev.sequence,
    severity: ev.severity,
    type: ev.event_type,
    path: ev.target_path ?? null,
    correlationId: ev.correlation_id ?? null,
    time: ev.occurred_at,
    summary: `${ev.event_type} ${ev.target_path ?? ''}`.trim(),
    detail: payloadSummary(ev.payload),
    notViaRelay: notViaRelay(ev.payload),
    raw: ev,
  };
}

// The timeline row of a LogRecord.
function logRow(targetId, log) {
  const fields = log.fields || {};
  return {
    kind: 'log',
    targetId,
    sequence: log.sequence,
    severity: log.severity,
    type: 'log',
    path: fields.child_path ?? null,
    correlationId: log.correlation_id ?? null,
    time: log.occurred_at,
    summary: log.message,
    detail: [fields.child_path, fields.stream && `stream=${fields.stream}`].filter(Boolean).join(' · '),
    raw: log,
  };
}

export class Store {
  constructor({ now = () => new Date() } = {}) {
    this.now = now;
    this.session = {
      sessionId: null, clientIdentity: null, principal: null,
      permittedCommands: null, // from server_hello; null: not announced (offer what targets support)
      filterMode: null, filter: null, filterVersion: null,
    };
    this.targets = new Map();
    this.diagnostics = new Ring(LIMITS.diagnostics);
    this.pending = new Map(); // command_id -> sent command message
    this.historyPending = new Map(); // request_id -> {targetId, stream, purpose, path}
    this.nextHistoryId = 1;
    this.nextRowId = 1;
    this.eventTotal = 0;
    this.changes = emptyChanges();
  }

  target(targetId) {
    let entry = this.targets.get(targetId);
    if (!entry) {
      entry = newTarget(targetId);
      this.targets.set(targetId, entry);
    }
    return entry;
  }

  listedTargets() {
    return [...this.targets.values()].filter((t) => t.listed);
  }

  // Paths of the target's children that count as failed (failures.js) at `now` (ms).
  failingPaths(targetId, now = this.now().getTime()) {
    const t = this.targets.get(targetId);
    if (!t) return [];
    const out = [];
    for (const [path, rt] of t.runtime) if (t.failures.isFailing(path, rt.lifecycle_state, now)) out.push(path);
    return out;
  }

  isFailing(targetId, path, now = this.now().getTime()) {
    const t = this.targets.get(targetId);
    const rt = t && t.runtime.get(path);
    return Boolean(rt && t.failures.isFailing(path, rt.lifecycle_state, now));
  }

  // Failing children of every target, and failures in the recent window, at `now` (ms).
  failureTotals(now = this.now().getTime()) {
    let failing = 0;
    let recent = 0;
    for (const t of this.targets.values()) {
      failing += this.failingPaths(t.targetId, now).length;
      recent += t.failures.recent(now);
    }
    return { failing, recent };
  }

  runtimeOf(targetId, path) {
    const t = this.targets.get(targetId);
    return t ? t.runtime.get(path) : undefined;
  }

  // Lifecycle of a node: its runtime row, else the topology summary (the root has no row).
  lifecycleOf(targetId, path) {
    const t = this.targets.get(targetId);
    if (!t) return undefined;
    const rt = t.runtime.get(path);
    if (rt) return rt.lifecycle_state;
    const node = t.nodes.get(path);
    return node ? node.state_summary : undefined;
  }

  takeChanges() {
    const c = this.changes;
    this.changes = emptyChanges();
    return c;
  }

  // A diagnostic. `text` is the relay's or target's own message (a string, shown as sent) or
  // {key, params} of a text of ours, shown in the current language.
  diag(level, code, text, targetId = null) {
    this.diagnostics.push({ at: this.now().toISOString(), level, code, text, targetId });
    this.changes.diagnostics = true;
  }

  // The target's process instance as the relay reports it; a new one numbers its journal
  // from 1 again, so the sequences held for the old one no longer de-duplicate anything.
  _instance(t, instanceId) {
    if (typeof instanceId !== 'string' || !instanceId || instanceId === t.instanceId) return;
    const previous = t.instanceId;
    t.instanceId = instanceId;
    if (previous) this._forgetSequences(t);
  }

  _forgetSequences(t) {
    t.eventSeqs.clear();
    t.logSeqs.clear();
    t.lastEventSeq = 0;
    this.diag('info', 'journal_restarted', { key: 'diag_journal_restarted', params: { name: t.displayName } }, t.targetId);
  }

  // Records a command we sent, so its result or refusal can be matched.
  trackCommand(msg) {
    this.pending.set(msg.command_id, { ...msg, sentAt: this.now().toISOString() });
    // Keep the pending map small: a relay that never answers must not grow it forever.
    if (this.pending.size > 200) this.pending.delete(this.pending.keys().next().value);
  }

  apply(msg) {
    const handler = HANDLERS[msg.type];
    if (!handler) {
      this.diag('warning', 'unsupported_message_type', { key: 'diag_unknown_type', params: { type: msg.type } });
      return;
    }
    handler(this, msg);
  }

  _markRuntime(targetId, path) {
    let set = this.changes.runtime.get(targetId);
    if (!set) {
      set = new Set();
      this.changes.runtime.set(targetId, set);
    }
    set.add(path);
  }

  _pushRow(t, ringName, row) {
    row.id = this.nextRowId;
    this.nextRowId += 1;
    const evicted = t[ringName].push(row);
    if (evicted) {
      evicted.gone = true;
      if (ringName === 'events') t.eventSeqs.delete(evicted.sequence);
      if (ringName === 'logs') t.logSeqs.delete(evicted.sequence);
      this.changes.evicted += 1;
    }
    this.changes.rows.push(row);
    return row;
  }

  // history_request messages to send (and remembered until answered): `older` continues
  // scrolling back, `search` looks for `text`, `child` reads the logs of `path`.
  historyRequests(targetId, purpose, { text = null, path = null } = {}) {
    const t = this.target(targetId);
    const streams = purpose === 'child' ? ['logs'] : ['logs', 'events'];
    const out = [];
    for (const stream of streams) {
      const before = purpose === 'older' ? t.historyCursor[stream] : 'end';
      if (before === null) continue; // scrolled back to the oldest record kept
      if (purpose === 'older' && [...this.historyPending.values()].some((p) => p.purpose === 'older'
        && p.targetId === targetId && p.stream === stream)) continue; // that page is on its way
      if (this.historyPending.size >= LIMITS.historyPending) break;
      const requestId = `h${this.nextHistoryId}`;
      this.nextHistoryId += 1;
      this.historyPending.set(requestId, { targetId, stream, purpose, path });
      out.push({
        type: 'history_request', request_id: requestId, target_id: targetId, stream,
        before, limit: LIMITS.historyPage, child_path: path, text: text || null,
      });
    }
    if (purpose === 'child') {
      t.childLogs = { path, records: [], loading: true };
      this.changes.childLogs = true;
    }
    return out;
  }

  // Where scrolling back stands: 'loading' (a page is on its way), 'oldest' (every listed
  // target's history was read back to its oldest record kept) or 'more'.
  historyState() {
    if ([...this.historyPending.values()].some((p) => p.purpose !== 'child')) return 'loading';
    const listed = [...this.targets.values()].filter((tg) => tg.listed);
    const done = listed.length && listed.every((tg) => tg.historyCursor.logs === null && tg.historyCursor.events === null);
    return done ? 'oldest' : 'more';
  }

  // Records of a history page join `older` (once each, never twice with live rows).
  addOlder(t, stream, records) {
    const seqs = stream === 'logs' ? t.logSeqs : t.eventSeqs;
    let added = 0;
    for (const record of records) {
      if (!record || typeof record.sequence !== 'number') continue;
      if (record.instance_id && record.instance_id === t.instanceId && seqs.has(record.sequence)) continue;
      const key = `${record.instance_id}:${stream}:${record.sequence}`;
      if (t.olderKeys.has(key)) continue;
      t.olderKeys.add(key);
      const row = stream === 'logs' ? logRow(t.targetId, record) : eventRow(t.targetId, record);
      row.id = historyRowId(record);
      row.history = true;
      row.key = key;
      const evicted = t.older.push(row);
      if (evicted) {
        evicted.gone = true;
        t.olderKeys.delete(evicted.key);
        this.changes.evicted += 1;
      }
      added += 1;
    }
    if (added) this.changes.older = true;
    return added;
  }

  addEvent(targetId, ev) {
    const t = this.target(targetId);
    if (t.eventSeqs.has(ev.sequence)) return null;
    if (t.lastEventSeq && ev.sequence > t.lastEventSeq + 1) {
      this.diag('info', 'sequence_gap', { key: 'diag_gap', params: { from: t.lastEventSeq + 1, to: ev.sequence - 1 } }, targetId);
    }
    t.lastEventSeq = Math.max(t.lastEventSeq, ev.sequence);
    t.eventSeqs.add(ev.sequence);
    this.eventTotal += 1;
    return this._pushRow(t, 'events', eventRow(targetId, ev));
  }

  addLog(targetId, log) {
    const t = this.target(targetId);
    if (t.logSeqs.has(log.sequence)) return null;
    t.logSeqs.add(log.sequence);
    return this._pushRow(t, 'logs', logRow(targetId, log));
  }

  // Replaces or merges runtime rows. With `live`, each row is a change the target just made:
  // entering `failed` (or a new last_failure, in case `failed` was skipped) is a failure,
  // entering or leaving `running` starts or ends a run (failures.js).
  _applyRuntimeRows(t, rows, { previous = t.runtime, live = true } = {}) {
    const at = this.now().getTime();
    for (const row of rows || []) {
      const path = row.child_path;
      const before = previous.get(path);
      if (live) {
        const was = before ? before.lifecycle_state : null;
        const is = row.lifecycle_state;
        const newFailure = Boolean(before && row.last_failure && row.last_failure !== before.last_failure);
        if ((is === 'failed' && was !== 'failed') || newFailure) {
          t.failures.failed(path, at);
          this.changes.counters = true;
        }
        if (is === 'running' && was !== 'running') t.failures.running(path, at);
        if (was === 'running' && is !== 'running') t.failures.left(path, at);
      }
      this._recordFigures(t, path, row.resources, before ? before.resources : undefined, at);
      if (before && row.restart_count > before.restart_count) {
        t.history.restart(path, at, Math.min(100, row.restart_count - before.restart_count));
      }
      t.runtime.set(path, row);
      this._markRuntime(t.targetId, path);
    }
  }

  // A node's resource figures (a row's `resources`, the state's `target_resources`) into its
  // history, at the time they were sampled on the browser's clock.
  _recordFigures(t, path, resources, before, at) {
    if (resources === undefined || (resources === null && !before)) return;
    if (before && resources && before.sampled_at === resources.sampled_at) return;
    const sampled = resources ? Date.parse(resources.sampled_at) + t.clockOffset : at;
    t.history.record(path, resources, Number.isNaN(sampled) ? at : sampled);
  }

  _setOwnResources(t, resources) {
    if (resources === undefined) return;
    const before = t.ownResources;
    if ((before && before.sampled_at) === (resources && resources.sampled_at)) return;
    const rootPath = (t.state && t.state.topology && t.state.topology.root && t.state.topology.root.path) || '/root';
    this._recordFigures(t, rootPath, resources, t.ownResources || undefined, this.now().getTime());
    t.ownResources = resources;
    this._markRuntime(t.targetId, rootPath);
  }

  // The figures of a node: its row's, or the target process's for the root.
  resourcesOf(targetId, path) {
    const t = this.targets.get(targetId);
    if (!t) return null;
    const rt = t.runtime.get(path);
    if (rt) return rt.resources || null;
    return t.nodes.get(path) && t.nodes.get(path).kind === 'root_supervisor' ? t.ownResources : null;
  }

  // Alerts the relay reports active (its target_list's active_alerts), oldest first.
  activeAlerts() {
    const out = [];
    for (const t of this.listedTargets()) {
      for (const a of (t.info && t.info.active_alerts) || []) out.push({ ...a, targetId: t.targetId, targetName: t.displayName });
    }
    out.sort((a, b) => (a.started_at < b.started_at ? -1 : a.started_at > b.started_at ? 1 : 0));
    return out;
  }

  // Failures and runs told by replayed events, at their time on the browser's clock.
  _replayFailures(t, rows) {
    for (const row of rows) {
      const at = Date.parse(row.time) + t.clockOffset;
      if (!row.path || Number.isNaN(at)) continue;
      if (row.type === 'child_failed') {
        t.failures.left(row.path, at);
        t.failures.failed(row.path, at);
      } else if (row.type === 'child_running') {
        t.failures.running(row.path, at);
      } else if (row.type === 'child_exited') {
        t.failures.left(row.path, at);
      }
    }
  }

  _applyTopology(t, topology) {
    t.nodes = new Map((topology.nodes || []).map((n) => [n.path, n]));
    if (topology.root && !t.nodes.has(topology.root.path)) t.nodes.set(topology.root.path, topology.root);
    t.topologyVersion += 1;
    this.changes.topology.add(t.targetId);
  }

  applyDelta(targetId, delta) {
    const t = this.target(targetId);
    if (!delta) return;
    if (delta.topology) {
      const { topology } = delta;
      t.state = { ...(t.state || {}), topology };
      this._applyTopology(t, topology);
      // With a new topology, runtime_state lists every row: replace instead of merge.
      if (delta.runtime_state) {
        const previous = t.runtime;
        t.runtime = new Map();
        this._applyRuntimeRows(t, delta.runtime_state, { previous });
      }
    } else if (delta.runtime_state) {
      this._applyRuntimeRows(t, delta.runtime_state);
    }
    if (typeof delta.state_generation === 'number') t.stateGeneration = delta.state_generation;
    this._setOwnResources(t, delta.target_resources);
    this._setDropped(t, delta.dropped_event_count, delta.dropped_log_count);
  }

  _setDropped(t, events, logs) {
    if (typeof events === 'number' && events !== t.droppedEvents) {
      t.droppedEvents = events;
      this.changes.dropped = true;
    }
    if (typeof logs === 'number' && logs !== t.droppedLogs) {
      t.droppedLogs = logs;
      this.changes.dropped = true;
    }
  }
}

const HANDLERS = {
  server_hello(store, msg) {
    Object.assign(store.session, {
      sessionId: msg.session_id,
      clientIdentity: msg.client_identity,
      principal: msg.principal ?? store.session.principal,
      permittedCommands: Array.isArray(msg.permitted_commands) ? msg.permitted_commands : null,
      filterMode: msg.log_event_filter_mode,
      filter: msg.log_event_filter_conditions ?? null,
      filterVersion: msg.filter_config_version ?? null,
    });
    store.changes.session = true;
  },

  target_list(store, msg) {
    const seen = new Set();
    for (const info of msg.targets || []) {
      const t = store.target(info.target_id);
      seen.add(info.target_id);
      const previous = t.connectionState;
      t.info = info;
      t.listed = true;
      t.displayName = info.display_name || info.target_id;
      t.supportedCommands = (info.supported_commands || []).map((c) => c.name);
      t.connectionState = info.connection_state;
      store._instance(t, info.instance_id);
      if (previous !== info.connection_state && ['unavailable', 'expired'].includes(info.connection_state)) {
        store.diag('warning', `target_${info.connection_state}`, targetStateText(t, info.connection_state), t.targetId);
      }
    }
    // Targets gone from the list stay visible as expired until the buffers are no longer needed.
    for (const t of store.targets.values()) {
      if (t.listed && !seen.has(t.targetId)) {
        t.listed = false;
        t.connectionState = 'expired';
      }
    }
    store.changes.targets = true;
  },

  state(store, msg) {
    const t = store.target(msg.target_id);
    const st = msg.state || {};
    const { recent_events: events = [], recent_logs: logs = [], ...rest } = st;
    t.state = rest;
    if (st.target) {
      t.displayName = st.target.display_name || t.displayName;
      if (st.target.connection_state) t.connectionState = st.target.connection_state;
      store._instance(t, st.target.instance_id);
    }
    if (st.topology) store._applyTopology(t, st.topology);
    const generated = Date.parse(st.generated_at);
    if (!Number.isNaN(generated)) t.clockOffset = store.now().getTime() - generated;
    const previousRows = t.runtime;
    t.runtime = new Map();
    store._applyRuntimeRows(t, st.runtime_state, { live: false, previous: previousRows });
    store._setOwnResources(t, st.target_resources ?? null);
    t.stateGeneration = st.state_generation ?? null;
    store._setDropped(t, st.dropped_event_count, st.dropped_log_count);
    // A target without instance_id: a journal numbered below what we hold is a new process.
    const maxSeq = events.reduce((m, e) => Math.max(m, e.sequence), 0);
    if (!t.instanceId && maxSeq && maxSeq < t.lastEventSeq) store._forgetSequences(t);
    // Replayed events and logs join the timeline in time order (RFC 3339 UTC strings with a
    // fixed precision compare correctly as text); sequence breaks ties within a kind.
    const replay = [
      ...events.map((e) => ({ at: e.occurred_at || '', seq: e.sequence, add: () => store.addEvent(t.targetId, e) })),
      ...logs.map((l) => ({ at: l.occurred_at || '', seq: l.sequence, add: () => store.addLog(t.targetId, l) })),
    ];
    replay.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.seq - b.seq));
    const added = replay.map((item) => item.add()).filter((row) => row && row.kind === 'event');
    // What happened before this state (or while the session was away) comes from the events
    // it replays; a child shown failed with no such event is failing since an unknown time.
    store._replayFailures(t, added);
    for (const [path, rt] of t.runtime) {
      if (rt.lifecycle_state === 'failed' && !t.failures.knows(path)) {
        t.failures.failed(path, store.now().getTime(), { counted: false });
      }
    }
    store.changes.targets = true;
    store.changes.counters = true;
  },

  event(store, msg) {
    store.addEvent(msg.target_id, msg.event);
    store.changes.counters = true;
  },

  log(store, msg) {
    store.addLog(msg.target_id, msg.log);
  },

  state_delta(store, msg) {
    store.applyDelta(msg.target_id, msg.delta);
  },

  dropped_count(store, msg) {
    store._setDropped(store.target(msg.target_id), msg.dropped_event_count, msg.dropped_log_count);
  },

  connection_state(store, msg) {
    const t = store.target(msg.target_id);
    const previous = t.connectionState;
    t.connectionState = msg.state;
    if (previous !== msg.state && ['unavailable', 'expired', 'reconnecting'].includes(msg.state)) {
      store.diag(msg.state === 'reconnecting' ? 'info' : 'warning', `target_${msg.state}`,
        targetStateText(t, msg.state), t.targetId);
    }
    store.changes.targets = true;
  },

  command_result(store, msg) {
    const result = msg.result || {};
    const sent = store.pending.get(result.command_id);
    store.pending.delete(result.command_id);
    const t = store.target(msg.target_id);
    if (result.state_delta) store.applyDelta(msg.target_id, result.state_delta);
    if (result.requested_by && sent) store.session.principal = result.requested_by;
    const command = sent ? sent.command : null;
    const path = sent ? sent.target.child_path : null;
    const row = store._pushRow(t, 'results', {
      kind: 'result',
      targetId: msg.target_id,
      sequence: null,
      severity: RESULT_SEVERITY[result.status] || 'info',
      type: command || 'command_result',
      path,
      correlationId: result.correlation_id ?? result.command_id ?? null,
      time: result.completed_at,
      outcome: result.status,
      summary: `${command || 'command'} ${path || ''} → ${result.status}`.replace(/\s+/g, ' '),
      detail: result.error ? `${result.error.code}: ${result.error.message}` : '',
      raw: result,
    });
    if (result.error) {
      store.diag('warning', result.error.code, {
        key: 'diag_command_error', params: { command: command || result.command_id, message: result.error.message },
      }, msg.target_id);
    }
    store.changes.results.push({ kind: 'result', result, sent, row });
  },

  audit_event(store, msg) {
    const a = msg.audit || {};
    const t = store.target(msg.target_id);
    if (a.identity && a.identity.client_identity === store.session.clientIdentity && a.identity.principal) {
      store.session.principal = a.identity.principal;
      store.changes.session = true;
    }
    const path = a.target ? a.target.child_path ?? null : null;
    store._pushRow(t, 'audit', {
      kind: 'audit',
      targetId: msg.target_id,
      sequence: null,
      severity: AUDIT_SEVERITY[a.result] || 'info',
      type: a.command,
      path,
      correlationId: a.command_id ?? null,
      time: a.occurred_at,
      outcome: a.result,
      summary: `${a.command} ${path || ''} → ${a.result}`.replace(/\s+/g, ' '),
      detail: `${a.identity ? a.identity.principal : ''}: ${a.reason || ''}${a.detail ? ` (${a.detail})` : ''}`,
      raw: a,
    });
  },

  history_page(store, msg) {
    const asked = store.historyPending.get(msg.request_id);
    if (!asked) return; // an answer to a request of an earlier page load
    store.historyPending.delete(msg.request_id);
    const t = store.target(asked.targetId);
    const records = Array.isArray(msg.records) ? msg.records : [];
    if (asked.purpose === 'child') {
      if (t.childLogs && t.childLogs.path === asked.path) {
        t.childLogs = { path: asked.path, records, loading: false };
        store.changes.childLogs = true;
      }
      return;
    }
    if (asked.purpose === 'older') t.historyCursor[asked.stream] = msg.next_cursor ?? null;
    store.addOlder(t, asked.stream, records);
    store.changes.history = true;
  },

  error(store, msg) {
    const err = msg.error || {};
    const asked = msg.request_id ? store.historyPending.get(msg.request_id) : null;
    if (asked) {
      store.historyPending.delete(msg.request_id);
      store.changes.history = true;
      const t = store.target(asked.targetId);
      if (asked.purpose === 'child' && t.childLogs && t.childLogs.path === asked.path) {
        t.childLogs = { ...t.childLogs, loading: false, error: err.message || err.code };
        store.changes.childLogs = true;
      }
      store.diag('warning', err.code || 'error', err.message || '', asked.targetId);
      return;
    }
    // A refused command's id is beside the error (§5); from a relay that does not send it,
    // match the newest pending command of the target.
    let sent = null;
    if (typeof msg.command_id === 'string' && store.pending.has(msg.command_id)) {
      sent = store.pending.get(msg.command_id);
      store.pending.delete(msg.command_id);
    } else if (msg.command_id === undefined
      && (String(err.stage || '').startsWith('command') || COMMAND_REFUSALS.has(err.code))) {
      for (const [id, cmd] of [...store.pending.entries()].reverse()) {
        if (!err.target_id || cmd.target_id === err.target_id) {
          sent = cmd;
          store.pending.delete(id);
          break;
        }
      }
    }
    store.diag('error', err.code || 'error', err.message || '', err.target_id ?? null);
    if (sent) {
      const t = store.target(sent.target_id);
      const row = store._pushRow(t, 'results', {
        kind: 'result',
        targetId: sent.target_id,
        sequence: null,
        severity: 'error',
        type: sent.command,
        path: sent.target.child_path,
        correlationId: sent.command_id,
        time: store.now().toISOString(),
        outcome: 'refused',
        summary: `${sent.command} ${sent.target.child_path || ''} → refused`.replace(/\s+/g, ' '),
        detail: `${err.code}: ${err.message}`,
        raw: err,
      });
      store.changes.results.push({ kind: 'refused', error: err, sent, row });
    } else {
      store.changes.results.push({ kind: 'error', error: err, sent: null, row: null });
    }
  },
};

// Error codes the relay uses to refuse a command (§4).
export const COMMAND_REFUSALS = new Set([
  'session_not_established', 'target_not_bound', 'target_unavailable', 'unsupported_command',
  'requested_by_override', 'empty_reason', 'confirmation_required', 'command_not_permitted',
]);

// Recent events of one node, newest first, from the target's event buffer.
export function nodeEvents(store, targetId, path, limit = LIMITS.nodeRecentEvents) {
  const t = store.targets.get(targetId);
  if (!t) return [];
  const out = [];
  for (let i = t.events.length - 1; i >= 0 && out.length < limit; i -= 1) {
    const row = t.events.at(i);
    if (row.path === path) out.push(row);
  }
  return out;
}
