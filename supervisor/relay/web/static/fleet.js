// The target list's model for one relay or a fleet gateway: hosts (target_list entries'
// `host_id`), search, the rows the list shows (host headers and targets) and which of them
// are on screen (a fixed-height virtual window). Pure logic, no DOM.

// Height of one list row (host header or target) in a virtual list, in CSS pixels; the
// stylesheet gives rows the same height (.target-list.virtual > li.row).
export const ROW_HEIGHT = 76;
// Rows rendered beyond the visible ones on each side, so a quick scroll shows no gap.
export const OVERSCAN = 8;
// Up to this many rows the list renders them all, in its natural layout (as without hosts).
export const VIRTUAL_FROM = 120;
// Rows assumed visible while the list has no height yet (hidden, or not laid out).
export const DEFAULT_VISIBLE = 20;
// Collapsed hosts remembered; beyond it the longest-remembered is forgotten.
export const COLLAPSED_KEPT = 2000;

// The host a target is on (its target_list entry's `host_id`), or null (a single relay).
export function hostOf(tg) {
  const host = tg && tg.info ? tg.info.host_id : null;
  return typeof host === 'string' && host ? host : null;
}

// Whether any target says which host it is on: the list is then grouped by host.
export function isFleet(targets) {
  return targets.some((tg) => hostOf(tg) !== null);
}

// The search text as compared: trimmed, lower case.
export function normaliseQuery(text) {
  return String(text ?? '').trim().toLowerCase();
}

// Whether a target matches the (normalised) query: its id, display name or host contains it.
export function matches(tg, query) {
  if (!query) return true;
  for (const text of [tg.targetId, tg.displayName, hostOf(tg)]) {
    if (text && String(text).toLowerCase().includes(query)) return true;
  }
  return false;
}

// What counts against a target's health: its children failing (failures.js) or quarantined,
// as the store knows them, and whether the target itself is unavailable.
export function targetHealth(store, tg, now) {
  const failing = new Set(store.failingPaths(tg.targetId, now));
  for (const [path, rt] of tg.runtime) if (rt && rt.lifecycle_state === 'quarantined') failing.add(path);
  return { children: failing.size, unavailable: tg.connectionState === 'unavailable' };
}

const NO_HEALTH = Object.freeze({ children: 0, unavailable: false });

// Targets grouped by host, hosts in order of their first target: hostId -> {hostId,
// targets, failed (troubled children plus unavailable targets), unavailableTargets,
// unavailable (every target unavailable)}. Targets without a host gather under ''.
export function hostGroups(targets, health = new Map()) {
  const groups = new Map();
  for (const tg of targets) {
    const hostId = hostOf(tg) ?? '';
    let g = groups.get(hostId);
    if (!g) {
      g = { hostId, targets: [], failed: 0, unavailableTargets: 0, unavailable: false };
      groups.set(hostId, g);
    }
    g.targets.push(tg);
    const hl = health.get(tg.targetId) || NO_HEALTH;
    g.failed += hl.children + (hl.unavailable ? 1 : 0);
    if (hl.unavailable) g.unavailableTargets += 1;
  }
  for (const g of groups.values()) g.unavailable = g.targets.length > 0 && g.unavailableTargets === g.targets.length;
  return groups;
}

// The rows the list shows: without hosts, one per matching target (kind 'target'); with
// hosts, a header per host holding a match (kind 'host', with its group's counts) followed,
// unless collapsed, by its matching targets. A search shows the matches of collapsed hosts too.
export function listRows(targets, { query = '', collapsed = new Set(), health = new Map() } = {}) {
  const q = normaliseQuery(query);
  if (!isFleet(targets)) {
    return { fleet: false, rows: targets.filter((tg) => matches(tg, q)).map((tg) => ({ kind: 'target', key: tg.targetId, tg })) };
  }
  const rows = [];
  for (const g of hostGroups(targets, health).values()) {
    const hits = g.targets.filter((tg) => matches(tg, q));
    if (!hits.length) continue;
    const open = Boolean(q) || !collapsed.has(g.hostId);
    rows.push({ kind: 'host', key: `host:${g.hostId}`, group: g, open, hits: hits.length });
    if (open) for (const tg of hits) rows.push({ kind: 'target', key: tg.targetId, tg, hostId: g.hostId });
  }
  return { fleet: true, rows };
}

// The rows to render of `count` fixed-height rows scrolled to `scrollTop` in a viewport
// `viewport` px high: indices [start, end) and the heights of the spacers before and after.
export function visibleWindow({ count, scrollTop = 0, viewport = 0, rowHeight = ROW_HEIGHT, overscan = OVERSCAN }) {
  const shown = viewport > 0 ? Math.ceil(viewport / rowHeight) + 1 : DEFAULT_VISIBLE;
  const first = Math.max(0, Math.min(count, Math.floor(Math.max(0, scrollTop) / rowHeight)));
  const start = Math.max(0, first - overscan);
  const end = Math.min(count, first + shown + overscan);
  const from = Math.min(start, end);
  return { start: from, end, before: from * rowHeight, after: (count - end) * rowHeight };
}

// The scrollTop that brings row `index` into a viewport (`viewport` px) now at `scrollTop`.
export function scrollToRow(index, { scrollTop = 0, viewport = 0, rowHeight = ROW_HEIGHT }) {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  const bottom = top + rowHeight;
  const height = viewport > 0 ? viewport : DEFAULT_VISIBLE * rowHeight;
  return bottom > scrollTop + height ? bottom - height : scrollTop;
}

// Fleet totals: hosts and hosts unavailable, targets per connection state (in `states`
// order, then any other), targets with troubled children and those children.
export function fleetSummary(targets, health = new Map(), states = []) {
  const groups = hostGroups(targets, health);
  const byState = new Map(states.map((s) => [s, 0]));
  let targetsFailing = 0;
  let childrenFailing = 0;
  for (const tg of targets) {
    const cs = tg.connectionState || 'registered';
    byState.set(cs, (byState.get(cs) || 0) + 1);
    const hl = health.get(tg.targetId) || NO_HEALTH;
    if (hl.children) targetsFailing += 1;
    childrenFailing += hl.children;
  }
  let hostsUnavailable = 0;
  for (const g of groups.values()) if (g.unavailable) hostsUnavailable += 1;
  return {
    hosts: groups.size, hostsUnavailable, targets: targets.length,
    byState: [...byState].filter(([, n]) => n > 0), targetsFailing, childrenFailing,
  };
}

// The hosts the operator collapsed, kept in `prefs` (storage.js) as a JSON list.
export class CollapsedHosts {
  constructor(prefs, name = 'collapsed_hosts') {
    this.prefs = prefs;
    this.name = name;
    this.hosts = new Set();
    try {
      const list = JSON.parse(prefs.get(name) || '[]');
      if (Array.isArray(list)) for (const h of list) if (typeof h === 'string') this.hosts.add(h);
    } catch { /* unreadable: nothing collapsed */ }
  }

  has(hostId) {
    return this.hosts.has(hostId);
  }

  // Collapses or expands `hostId` (flips it without `collapsed`) and remembers the choice.
  set(hostId, collapsed = !this.hosts.has(hostId)) {
    this.hosts.delete(hostId);
    if (collapsed) this.hosts.add(hostId);
    while (this.hosts.size > COLLAPSED_KEPT) this.hosts.delete(this.hosts.values().next().value);
    try {
      this.prefs.set(this.name, JSON.stringify([...this.hosts]));
    } catch { /* storage full or disabled: the choice lasts for this page */ }
    return collapsed;
  }
}
