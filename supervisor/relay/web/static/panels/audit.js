// Audit pane: the newest audit records of every target, newest first.

import { elements, h, pathText } from '../dom.js';
import { allRows } from '../filter.js';
import { t, tv } from '../i18n.js';
import { shortTime, utcTime } from '../timeline.js';

export const AUDIT_ROWS_SHOWN = 300;

export class AuditPanel {
  constructor(root, { store }) {
    this.store = store;
    this.el = elements(root, ['audit-body', 'audit-empty']);
  }

  // Applies one frame of store changes; the pane is redrawn only while it is shown.
  update(changes, visible) {
    if (visible && changes.rows.some((r) => r.kind === 'audit')) this.render();
  }

  render() {
    const rows = allRows(this.store).filter((r) => r.kind === 'audit').slice(-AUDIT_ROWS_SHOWN).reverse();
    this.el.auditEmpty.hidden = rows.length > 0;
    this.el.auditBody.replaceChildren(...rows.map((r) => {
      const a = r.raw;
      return h('tr', { class: `res-${a.result}` },
        h('td', { class: 'mono', title: utcTime(a.occurred_at) }, shortTime(a.occurred_at)),
        h('td', {}, r.targetId),
        h('td', {}, tv('cmdw', a.command)),
        h('td', { class: 'mono path' }, pathText((a.target && a.target.child_path) || t('d_none'))),
        h('td', {}, tv('res', a.result), a.detail && a.detail !== a.result ? ` (${a.detail})` : ''),
        h('td', {}, a.identity ? a.identity.principal : ''),
        h('td', {}, a.reason || ''));
    }));
  }
}
