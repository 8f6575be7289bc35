// Active alerts: a banner under the header while any alert fires, with the list of them
// (target, summary, since when); a click on one selects its target and node.

import { elements, h } from '../dom.js';
import { t } from '../i18n.js';
import { shortTime, utcTime } from '../timeline.js';

export class AlertsPanel {
  // onSelect(targetId, path) when an alert of the list is picked.
  constructor(root, { store, onSelect }) {
    this.store = store;
    this.onSelect = onSelect;
    this.el = elements(root, ['alerts-banner', 'alerts-title', 'alerts-list']);
    this.shown = '';
  }

  render() {
    const alerts = this.store.activeAlerts();
    const key = JSON.stringify(alerts.map((a) => [a.targetId, a.alert_id, a.targetName]));
    if (key === this.shown) return; // unchanged: leave the list (and its focus) alone
    this.shown = key;
    const { el } = this;
    el.alertsBanner.hidden = alerts.length === 0;
    el.alertsTitle.textContent = t('alerts_firing', { n: alerts.length });
    el.alertsList.replaceChildren(...alerts.map((a) => h('li', { class: `alert kind-${a.kind}` },
      h('button', {
        type: 'button',
        class: 'link',
        onclick: () => this.onSelect(a.targetId, a.child_path),
      }, h('strong', {}, a.targetName), ' ', a.summary),
      ' ', h('span', { class: 'mono muted', title: utcTime(a.started_at) }, t('alert_since', { time: shortTime(a.started_at) })))));
  }
}
