// Target list: one button per listed (or selected) target with its connection state,
// failing children and dropped counts, plus the dropped totals of all targets in the timeline
// bar. Items are kept by target id and updated in place, so a live stream never rebuilds the
// button an operator is on.

import { elements, h, setAttr, setText } from '../dom.js';
import { t } from '../i18n.js';

export class TargetsPanel {
  // onSelect(targetId) when the operator picks a target.
  constructor(root, { store, selection, onSelect }) {
    this.store = store;
    this.selection = selection;
    this.onSelect = onSelect;
    this.el = elements(root, ['target-list', 'no-targets', 'dropped']);
    this.items = new Map(); // target id -> {li, button, name, id, cs, failed, dropped}
  }

  render() {
    const { store, items } = this;
    const selected = this.selection.targetId;
    const targets = [...store.targets.values()].filter((tg) => tg.listed || tg.targetId === selected);
    this.el.noTargets.hidden = targets.length > 0;
    const keep = new Set(targets.map((tg) => tg.targetId));
    for (const [id, item] of items) {
      if (!keep.has(id)) {
        item.li.remove();
        items.delete(id);
      }
    }
    const list = this.el.targetList;
    targets.forEach((tg, index) => {
      let item = items.get(tg.targetId);
      if (!item) {
        item = this._item(tg.targetId);
        items.set(tg.targetId, item);
      }
      const at = list.children[index];
      if (at !== item.li) list.insertBefore(item.li, at || null); // list order = store order
      this._fill(item, tg, tg.targetId === selected);
    });
    this.renderDropped();
  }

  _item(targetId) {
    const item = {
      name: h('span', { class: 'name' }),
      id: h('span', { class: 'id' }),
      cs: h('span', { class: 'badge cs' }),
      failed: h('span', { class: 'badge failed' }),
      dropped: h('span', { class: 'badge dropped' }),
    };
    item.button = h('button', { type: 'button', class: 'target', dataset: { targetId }, onclick: () => this.onSelect(targetId) },
      item.name, item.id, h('span', { class: 'badges' }, item.cs, item.failed, item.dropped));
    item.li = h('li', {}, item.button);
    return item;
  }

  _fill(item, tg, selected) {
    const cs = tg.connectionState || 'registered';
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
