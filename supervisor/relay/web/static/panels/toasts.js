// Toasts: short notices (at most four, errors stay longer, none leaves while pointed at) and
// the outcome of each command. The page shows them at the top right, clear of the timeline.

import { elements, h } from '../dom.js';
import { t } from '../i18n.js';

export const MAX_TOASTS = 4;
export const TOAST_MS = { error: 12000, other: 6000 };

export class ToastsPanel {
  // timers: {setTimeout, clearTimeout} (the window, or fake timers in tests).
  constructor(root, { timers }) {
    this.timers = timers;
    this.el = elements(root, ['toasts']);
  }

  show(text, level = 'info') {
    const ms = level === 'error' ? TOAST_MS.error : TOAST_MS.other;
    let timer = null;
    const el = h('div', { class: `toast ${level}`, role: level === 'error' ? 'alert' : null },
      h('span', {}, text),
      h('button', { type: 'button', class: 'toast-close', 'aria-label': t('close'), onclick: () => el.remove() }, '×'));
    // it stays while the pointer is on it (to be read), and leaves `ms` after the pointer does
    const leaveLater = () => {
      this.timers.clearTimeout(timer);
      timer = this.timers.setTimeout(() => el.remove(), ms);
    };
    el.addEventListener('mouseenter', () => this.timers.clearTimeout(timer));
    el.addEventListener('mouseleave', leaveLater);
    const host = this.el.toasts;
    host.appendChild(el);
    while (host.children.length > MAX_TOASTS) host.firstChild.remove();
    leaveLater();
  }

  // One entry of the store's changes.results: a command result, a refusal or another error.
  showResult(r) {
    if (r.kind === 'result') {
      const { result, sent: cmd } = r;
      const command = cmd ? t(`cmd_${cmd.command}`) : result.command_id;
      const path = cmd ? cmd.target.child_path || cmd.target_id : result.target_id;
      if (result.error) {
        this.show(t('toast_refused', { command, code: result.error.code, message: result.error.message }), 'error');
      } else {
        this.show(t('toast_result', { command, path, status: result.status }), result.status === 'completed' || result.status === 'accepted' ? 'ok' : 'error');
      }
    } else if (r.kind === 'refused') {
      this.show(t('toast_refused', { command: t(`cmd_${r.sent.command}`), code: r.error.code, message: r.error.message }), 'error');
    } else {
      this.show(t('toast_error', { code: r.error.code, message: r.error.message }), 'error');
    }
  }
}
