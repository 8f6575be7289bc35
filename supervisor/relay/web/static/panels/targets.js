// Target list: one button per listed (or selected) target with its connection state, failed
// nodes and dropped counts, plus the dropped totals of all targets in the timeline bar.

import { elements, h } from '../dom.js';
import { t } from '../i18n.js';

export class TargetsPanel {
  // onSelect(targetId) when the operator picks a target.
  constructor(root, { store, selection, onSelect }) {
    this.store = store;
    this.selection = selection;
    this.onSelect = onSelect;
    this.el = elements(root, ['target-list', 'no-targets', 'dropped']);
    this.items = new Map(); // target id -> <li>, reused across renders
  }

  render() {
    const { store, items } = this;
    const selected = this.selection.targetId;
    const targets = [...store.targets.values()].filter((tg) => tg.listed || tg.targetId === selected);
    this.el.noTargets.hidden = targets.length > 0;
    const keep = new Set(targets.map((tg) => tg.targetId));
    for (const [id, li] of items) {
      if (!keep.has(id)) {
        li.remove();
        items.delete(id);
      }
    }
    for (const tg of targets) {
      let li = items.get(tg.targetId);
      if (!li) {
        li = h('li', {}, h('button', { type: 'button', class: 'target', onclick: () => this.onSelect(tg.targetId) }));
        items.set(tg.targetId, li);
      }
      this.el.targetList.appendChild(li); // keeps list order equal to store order
      const button = li.firstChild;
      const cs = tg.connectionState || 'registered';
      button.dataset.targetId = tg.targetId;
      button.setAttribute('aria-pressed', String(tg.targetId === selected));
      const badges = [h('span', { class: `badge cs cs-${cs}` }, t(`cs_${cs}`))];
      if (tg.failedCount) badges.push(h('span', { class: 'badge failed' }, `${tg.failedCount} ${t('lc_failed')}`));
      if (tg.droppedEvents || tg.droppedLogs) {
        badges.push(h('span', { class: 'badge dropped' }, t('dropped_short', { events: tg.droppedEvents, logs: tg.droppedLogs })));
      }
      button.replaceChildren(
        h('span', { class: 'name' }, tg.displayName),
        h('span', { class: 'id' }, tg.targetId),
        h('span', { class: 'badges' }, badges),
      );
    }
    this.renderDropped();
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
    el.textContent = t('dropped', { events, logs });
  }
}
