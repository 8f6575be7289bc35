// Timeline filtering: the contract's log_event_filter_conditions applied locally to the
// buffered rows with the relay's semantics, so the local view equals what the relay streams:
// - target_ids: every row;
// - severities, sequence_min, correlation_id, child_paths: events and logs;
// - event_types and lifecycle_states: events only (the lifecycle an event implies);
// - audit records and command results pass all contract conditions except target_ids.
// Row kinds shown and free-text search are local-only additions.

import { normalizeFilter } from './protocol.js';
import { EVENT_LIFECYCLE } from './vocabulary.js';

export function eventLifecycle(row) {
  const payload = row.raw && row.raw.payload;
  if (payload && typeof payload.lifecycle_state === 'string') return payload.lifecycle_state;
  return EVENT_LIFECYCLE[row.type];
}

export const ROW_KINDS = ['event', 'log', 'audit', 'result'];

// Local view filter: contract conditions + kinds shown + free text.
export function makeViewFilter({ conditions = {}, kinds = ROW_KINDS, text = '' } = {}) {
  const c = normalizeFilter(conditions);
  return {
    conditions: c,
    targetIds: c.target_ids.length ? new Set(c.target_ids) : null,
    childPaths: c.child_paths.length ? c.child_paths : null,
    lifecycles: c.lifecycle_states.length ? new Set(c.lifecycle_states) : null,
    eventTypes: c.event_types.length ? new Set(c.event_types) : null,
    severities: c.severities.length ? new Set(c.severities) : null,
    sequenceMin: c.sequence_min,
    correlationId: c.correlation_id,
    kinds: new Set(kinds),
    text: String(text || '').trim().toLowerCase(),
  };
}

// A path matches a child_paths entry when it is that node or below it.
export function pathMatches(path, prefixes) {
  if (!path) return false;
  for (const raw of prefixes) {
    const p = raw.length > 1 ? raw.replace(/\/+$/, '') : raw;
    if (path === p || path.startsWith(`${p}/`)) return true;
  }
  return false;
}

// True when the row passes every non-empty condition that applies to its kind.
export function matchRow(row, f) {
  if (!f.kinds.has(row.kind)) return false;
  if (f.targetIds && !f.targetIds.has(row.targetId)) return false;
  if (row.kind === 'event' || row.kind === 'log') {
    if (f.severities && !f.severities.has(row.severity)) return false;
    if (f.sequenceMin !== null && (typeof row.sequence !== 'number' || row.sequence < f.sequenceMin)) return false;
    if (f.correlationId && row.correlationId !== f.correlationId) return false;
    if (f.childPaths && !pathMatches(row.path, f.childPaths)) return false;
    if (row.kind === 'event') {
      if (f.eventTypes && !f.eventTypes.has(row.type)) return false;
      if (f.lifecycles && !f.lifecycles.has(eventLifecycle(row))) return false;
    }
  }
  if (f.text) {
    const hay = `${row.summary} ${row.detail} ${row.path || ''} ${row.correlationId || ''}`.toLowerCase();
    if (!hay.includes(f.text)) return false;
  }
  return true;
}

function byTimeThenSequence(a, b) {
  return a.id - b.id || (a.kind === b.kind ? a.sequence - b.sequence : 0);
}

// All buffered rows of every target, ascending by arrival id (k-way merge of sorted rings).
export function allRows(store) {
  const lists = [];
  for (const t of store.targets.values()) {
    for (const ring of [t.older, t.events, t.logs, t.audit, t.results]) {
      // history rows arrive a page at a time, newest pages first: sort them by their time id,
      // then by sequence (a target stamps all the lines of one read with one time)
      if (ring.length) lists.push(ring === t.older ? ring.toArray().sort(byTimeThenSequence) : ring.toArray());
    }
  }
  if (lists.length === 1) return lists[0];
  const out = [].concat(...lists);
  out.sort((a, b) => a.id - b.id);
  return out;
}

// The filtered, arrival-ordered rows the timeline shows; grows by appends between rebuilds.
export class TimelineView {
  constructor(store, filter = makeViewFilter()) {
    this.store = store;
    this.filter = filter;
    this.rows = [];
    // the rows in `rows`: a rebuild between a row's arrival and the frame that reports it
    // has already taken it in, and the frame must not add it a second time
    this.shown = new WeakSet();
  }

  setFilter(filter) {
    this.filter = filter;
    this.rebuild();
  }

  rebuild() {
    const out = [];
    for (const row of allRows(this.store)) {
      if (matchRow(row, this.filter)) out.push(row);
    }
    this.rows = out;
    this.shown = new WeakSet(out);
  }

  // Applies one frame's worth of store changes; returns true when rows changed.
  update(changes) {
    if (changes.older) { // history rows go ahead of the live ones: rebuild in order
      this.rebuild();
      return true;
    }
    let changed = false;
    if (changes.evicted) {
      this.rows = this.rows.filter((r) => !r.gone);
      changed = true;
    }
    for (const row of changes.rows) {
      if (!row.gone && !this.shown.has(row) && matchRow(row, this.filter)) {
        this.rows.push(row);
        this.shown.add(row);
        changed = true;
      }
    }
    return changed;
  }
}
