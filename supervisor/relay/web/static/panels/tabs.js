// The bottom panel's tabs (timeline, audit, diagnostics): one pane shown at a time, arrow
// keys move between tabs.

import { elements } from '../dom.js';

export const TABS = Object.freeze(['timeline', 'audit', 'diagnostics']);

export class TabsPanel {
  // onShow(name) after a tab's pane is shown.
  constructor(root, { onShow }) {
    this.onShow = onShow;
    this.active = 'timeline';
    const el = elements(root, TABS.flatMap((name) => [`tab-${name}`, `pane-${name}`]));
    const cap = (name) => name[0].toUpperCase() + name.slice(1);
    this.tabs = new Map(TABS.map((name) => [name, el[`tab${cap(name)}`]]));
    this.panes = new Map(TABS.map((name) => [name, el[`pane${cap(name)}`]]));
    TABS.forEach((name, i) => {
      const tab = this.tabs.get(name);
      tab.addEventListener('click', () => this.show(name));
      tab.addEventListener('keydown', (ev) => {
        let j = null;
        if (ev.key === 'ArrowRight') j = (i + 1) % TABS.length;
        if (ev.key === 'ArrowLeft') j = (i + TABS.length - 1) % TABS.length;
        if (j === null) return;
        ev.preventDefault();
        this.show(TABS[j]);
        this.tabs.get(TABS[j]).focus();
      });
    });
  }

  show(name) {
    this.active = name;
    for (const tab of TABS) {
      const on = tab === name;
      const el = this.tabs.get(tab);
      el.setAttribute('aria-selected', String(on));
      el.tabIndex = on ? 0 : -1;
      this.panes.get(tab).hidden = !on;
    }
    this.onShow(name);
  }
}
