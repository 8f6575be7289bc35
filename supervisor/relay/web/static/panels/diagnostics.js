// Diagnostics pane: the session's facts and the store's diagnostics, newest first, with a
// badge on the tab counting those that arrived while the pane was not shown.

import { elements, h } from '../dom.js';
import { t, tv } from '../i18n.js';
import { shortTime, utcTime } from '../timeline.js';

// A diagnostic's text: a text of ours in the current language, or a peer's message as sent.
export function diagnosticText(d) {
  return typeof d.text === 'string' ? d.text : t(d.text.key, d.text.params);
}

export class DiagnosticsPanel {
  // wsUrl: the session's WebSocket address, shown with the session facts.
  constructor(root, { store, wsUrl }) {
    this.store = store;
    this.wsUrl = wsUrl;
    this.unseen = 0;
    this.el = elements(root, ['diag-count', 'diag-session', 'diag-body']);
  }

  // Applies one frame of store changes.
  update(changes, visible) {
    if (!changes.diagnostics) return;
    if (!visible) this.unseen += 1;
    this.renderBadge();
    if (visible) this.render();
  }

  // The pane is shown: everything is seen.
  open() {
    this.unseen = 0;
    this.renderBadge();
    this.render();
  }

  renderBadge() {
    const badge = this.el.diagCount;
    badge.hidden = this.unseen === 0;
    badge.textContent = String(this.unseen);
  }

  render() {
    const s = this.store.session;
    this.el.diagSession.replaceChildren(
      h('strong', {}, `${t('diag_session')}: `),
      h('span', { class: 'mono' }, s.sessionId || '—'), ' · ',
      h('span', { class: 'mono' }, this.wsUrl), ' · ',
      `${t('diag_filter_version')} ${s.filterVersion ?? '—'}`);
    const rows = this.store.diagnostics.toArray().reverse();
    this.el.diagBody.replaceChildren(...(rows.length ? rows.map((d) => h('tr', { class: `lvl-${d.level}` },
      h('td', { class: 'mono', title: utcTime(d.at) }, shortTime(d.at)),
      h('td', {}, tv('sev', d.level)),
      h('td', { class: 'mono' }, d.code),
      h('td', {}, d.targetId || ''),
      h('td', {}, diagnosticText(d)))) : [h('tr', {}, h('td', { colspan: '5', class: 'empty' }, t('diag_empty')))]));
  }
}
