// Target list: one button per listed (or selected) target with its connection state,
// failing children and dropped counts, plus the dropped totals of all targets in the timeline
// bar. Items are kept by target id and updated in place, so a live stream never rebuilds the
// button an operator is on. Behind a fleet gateway (targets with `host_id`) the targets are
// grouped under collapsible host headers, a search box filters them and a fleet summary
// counts them (fleet.js); a long list renders only the rows on screen between two spacers.

import { elements, h, setAttr, setText } from '../dom.js';
import { language, t } from '../i18n.js';
import { Preferences, memoryStorage } from '../storage.js';
import { CONNECTION_STATES } from '../vocabulary.js';
import {
  CollapsedHosts, ROW_HEIGHT, VIRTUAL_FROM, fleetSummary, isFleet, listRows, scrollToRow, targetHealth, visibleWindow,
} from '../fleet.js';

const MOVES = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };

export class TargetsPanel {
  // onSelect(targetId) when the operator picks a target; prefs keeps the collapsed hosts.
  constructor(root, { store, selection, onSelect, prefs = new Preferences(memoryStorage()) }) {
    this.store = store;
    this.selection = selection;
    this.onSelect = onSelect;
    this.el = elements(root, ['target-list', 'no-targets', 'no-target-matches', 'dropped', 'target-search',
      'fleet-summary', 'fleet-hosts', 'fleet-states', 'fleet-health']);
    this.collapsed = new CollapsedHosts(prefs);
    this.items = new Map(); // row key (target id, or host:<id>) -> item
    this.rows = []; // what the list shows, in order (fleet.js listRows)
    this.fleet = false;
    this.virtual = false;
    this.query = '';
    this.statesKey = '';
    const list = this.el.targetList;
    this.spacers = [h('li', { class: 'spacer', 'aria-hidden': 'true', hidden: true }),
      h('li', { class: 'spacer', 'aria-hidden': 'true', hidden: true })];
    list.replaceChildren(...this.spacers);
    list.addEventListener('scroll', () => {
      if (this.virtual) this.renderWindow();
    });
    list.addEventListener('keydown', (ev) => this._key(ev));
    this.el.targetSearch.addEventListener('input', () => {
      this.query = this.el.targetSearch.value;
      list.scrollTop = 0;
      this.render();
    });
  }

  render() {
    const { store } = this;
    const selected = this.selection.targetId;
    const targets = [...store.targets.values()].filter((tg) => tg.listed || tg.targetId === selected);
    const fleet = isFleet(targets);
    const health = new Map();
    if (fleet) {
      const now = store.now().getTime();
      for (const tg of targets) health.set(tg.targetId, targetHealth(store, tg, now));
    }
    const { rows } = listRows(targets, { query: fleet ? this.query : '', collapsed: this.collapsed.hosts, health });
    this.fleet = fleet;
    this.rows = rows;
    this.el.targetSearch.hidden = !fleet;
    this.el.noTargets.hidden = targets.length > 0;
    this.el.noTargetMatches.hidden = !(targets.length && !rows.length);
    this.renderSummary(fleet ? fleetSummary(targets, health, CONNECTION_STATES) : null);
    this.renderWindow();
    this.renderDropped();
  }

  // Puts the rows on screen in the list (all of them up to VIRTUAL_FROM), in order, between
  // the two spacers; items already in place are not moved (a moved element loses focus).
  renderWindow() {
    const { rows, items } = this;
    const list = this.el.targetList;
    const virtual = rows.length > VIRTUAL_FROM;
    if (virtual !== this.virtual) {
      this.virtual = virtual;
      list.classList.toggle('virtual', virtual);
      const panel = list.closest('.targets');
      if (panel) panel.classList.toggle('virtual', virtual);
    }
    const win = virtual
      ? visibleWindow({ count: rows.length, scrollTop: list.scrollTop, viewport: list.clientHeight })
      : { start: 0, end: rows.length, before: 0, after: 0 };
    const [top, bottom] = this.spacers;
    top.hidden = !virtual;
    bottom.hidden = !virtual;
    top.style.height = `${win.before}px`;
    bottom.style.height = `${win.after}px`;
    const shown = rows.slice(win.start, win.end);
    const keep = new Set(shown.map((r) => r.key));
    for (const [key, item] of items) {
      if (!keep.has(key)) {
        item.li.remove();
        items.delete(key);
      }
    }
    const selected = this.selection.targetId;
    shown.forEach((row, i) => {
      let item = items.get(row.key);
      if (item && item.kind !== row.kind) item = null;
      if (!item) {
        item = row.kind === 'host' ? this._hostItem(row.group.hostId) : this._item(row.tg.targetId);
        items.set(row.key, item);
      }
      const at = list.children[i + 1];
      if (at !== item.li) list.insertBefore(item.li, at || bottom);
      if (row.kind === 'host') this._fillHost(item, row);
      else this._fill(item, row.tg, row.tg.targetId === selected, row.hostId !== undefined);
    });
    if (list.children[list.children.length - 1] !== bottom) list.appendChild(bottom);
  }

  _item(targetId) {
    const item = {
      kind: 'target',
      name: h('span', { class: 'name' }),
      id: h('span', { class: 'id' }),
      cs: h('span', { class: 'badge cs' }),
      failed: h('span', { class: 'badge failed' }),
      dropped: h('span', { class: 'badge dropped' }),
    };
    item.button = h('button', { type: 'button', class: 'target', dataset: { targetId, rowKey: targetId }, onclick: () => this.onSelect(targetId) },
      item.name, item.id, h('span', { class: 'badges' }, item.cs, item.failed, item.dropped));
    item.li = h('li', { class: 'row' }, item.button);
    return item;
  }

  _fill(item, tg, selected, inHost) {
    const cs = tg.connectionState || 'registered';
    setAttr(item.li, 'class', inHost ? 'row in-host' : 'row');
    setAttr(item.button, 'aria-pressed', selected);
    setText(item.name, tg.displayName);
    setText(item.id, tg.targetId);
    setAttr(item.cs, 'class', `badge cs cs-${cs}`);
    setText(item.cs, t(`cs_${cs}`));
    const failing = this.store.failingPaths(tg.targetId).length;
    item.failed.hidden = !failing;
    setText(item.failed, failing ? t('failing_badge', { n: failing }) : '');
    item.dropped.hidden = !(tg.droppedEvents || tg.droppedLogs);
    setText(item.dropped, item.dropped.hidden ? '' : t('dropped_short', { events: tg.droppedEvents, logs: tg.droppedLogs }));
  }

  _hostItem(hostId) {
    const key = `host:${hostId}`;
    const item = {
      kind: 'host',
      caret: h('span', { class: 'caret', 'aria-hidden': 'true' }),
      name: h('span', { class: 'name' }),
      count: h('span', { class: 'badge count' }),
      failed: h('span', { class: 'badge failed' }),
      down: h('span', { class: 'badge cs cs-unavailable' }),
    };
    item.button = h('button', {
      type: 'button', class: 'host-group', dataset: { hostId, rowKey: key }, onclick: () => this.toggleHost(hostId),
    }, h('span', { class: 'host-line' }, item.caret, item.name), h('span', { class: 'badges' }, item.count, item.failed, item.down));
    item.li = h('li', { class: 'row host' }, item.button);
    return item;
  }

  _fillHost(item, row) {
    const g = row.group;
    setAttr(item.button, 'aria-expanded', row.open);
    setText(item.caret, row.open ? '▾' : '▸');
    setText(item.name, g.hostId || t('host_none'));
    const n = g.targets.length;
    setText(item.count, row.hits < n ? t('host_matches', { shown: row.hits, n }) : t('host_targets', { n }));
    item.failed.hidden = !g.failed;
    setText(item.failed, g.failed ? t('failing_badge', { n: g.failed }) : '');
    item.down.hidden = !g.unavailable;
    setText(item.down, t('host_unavailable'));
    item.li.classList.toggle('down', g.unavailable);
  }

  // Collapses or expands a host's group (remembered across reloads).
  toggleHost(hostId, collapsed) {
    this.collapsed.set(hostId, collapsed);
    this.render();
  }

  // Arrow keys, Page Up/Down, Home and End move between the rows (scrolling a long list);
  // on a host header Left collapses and Right expands it, on a target Left goes to its host.
  _key(ev) {
    const button = ev.target && ev.target.closest ? ev.target.closest('button') : null;
    if (!button || !button.dataset.rowKey) return;
    const index = this.rows.findIndex((r) => r.key === button.dataset.rowKey);
    if (index < 0) return;
    const row = this.rows[index];
    let to = null;
    if (ev.key in MOVES) to = index + MOVES[ev.key];
    else if (ev.key === 'Home') to = 0;
    else if (ev.key === 'End') to = this.rows.length - 1;
    else if (row.kind === 'host' && (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight')) {
      ev.preventDefault();
      if (row.open !== (ev.key === 'ArrowRight')) this.toggleHost(row.group.hostId, ev.key === 'ArrowLeft');
      this.focusRow(row.key);
      return;
    } else if (row.kind === 'target' && ev.key === 'ArrowLeft' && row.hostId !== undefined) {
      to = this.rows.findIndex((r) => r.key === `host:${row.hostId}`);
    }
    if (to === null || to < 0) return;
    ev.preventDefault();
    this.focusRow(this.rows[Math.max(0, Math.min(this.rows.length - 1, to))].key);
  }

  // Scrolls the row with `key` into view and focuses its button.
  focusRow(key) {
    const index = this.rows.findIndex((r) => r.key === key);
    if (index < 0) return;
    const list = this.el.targetList;
    if (this.virtual) {
      const top = scrollToRow(index, { scrollTop: list.scrollTop, viewport: list.clientHeight, rowHeight: ROW_HEIGHT });
      if (top !== list.scrollTop) list.scrollTop = top;
      this.renderWindow();
    }
    const item = this.items.get(key);
    if (item) item.button.focus();
  }

  // The fleet's totals (null: no hosts, no summary).
  renderSummary(summary) {
    const el = this.el;
    el.fleetSummary.hidden = !summary;
    if (!summary) return;
    setText(el.fleetHosts, t('fleet_hosts_value', { total: summary.hosts, unavailable: summary.hostsUnavailable }));
    el.fleetHosts.classList.toggle('bad', summary.hostsUnavailable > 0);
    const key = summary.byState.map(([s, n]) => `${s}:${n}`).join(',');
    if (`${language()}|${key}` !== this.statesKey) {
      this.statesKey = `${language()}|${key}`;
      el.fleetStates.replaceChildren(...summary.byState.map(([s, n]) => h('span', { class: `badge cs cs-${s}`, dataset: { state: s } },
        t('fleet_state', { state: t(`cs_${s}`), n }))));
    }
    setText(el.fleetHealth, t('fleet_health_value', { targets: summary.targetsFailing, children: summary.childrenFailing }));
    el.fleetHealth.classList.toggle('bad', summary.childrenFailing > 0);
  }

  renderDropped() {
    let events = 0;
    let logs = 0;
    for (const tg of this.store.targets.values()) {
      events += tg.droppedEvents;
      logs += tg.droppedLogs;
    }
    const el = this.el.dropped;
    el.hidden = !(events || logs);
    setText(el, t('dropped', { events, logs }));
  }
}
