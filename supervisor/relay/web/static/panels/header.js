// Header: the relay session's status, our identity and the totals (targets, events, failed
// nodes).

import { elements } from '../dom.js';
import { t } from '../i18n.js';
import { shortIdentity } from '../protocol.js';

export class HeaderPanel {
  constructor(root, { store }) {
    this.store = store;
    this.el = elements(root, [
      'relay-status', 'relay-status-text', 'identity', 'identity-principal', 'identity-fingerprint',
      'count-targets', 'count-events', 'count-failed',
    ]);
    this.status = 'offline';
    this.detail = {};
  }

  // A RelayConnection status and its detail ({attempt, delay, reason} while waiting).
  setRelayStatus(status, detail) {
    this.status = status;
    this.detail = detail;
    this.render();
  }

  render() {
    const { el, store } = this;
    el.relayStatus.className = `status st-${this.status}`;
    const d = this.detail;
    el.relayStatusText.textContent = this.status === 'waiting'
      ? t('relay_waiting', { s: Math.max(1, Math.round((d.delay || 0) / 1000)), n: d.attempt || 1 })
      : t(`relay_${this.status}`);
    const s = store.session;
    // The principal is learned from our own audit records or command results (server_hello
    // carries only the fingerprint unless the relay adds a `principal` field).
    el.identityPrincipal.textContent = s.principal || '';
    el.identityPrincipal.hidden = !s.principal;
    el.identityFingerprint.textContent = shortIdentity(s.clientIdentity);
    el.identity.title = s.clientIdentity || '';
    el.countTargets.textContent = String(store.listedTargets().length);
    el.countEvents.textContent = String(store.eventTotal);
    const failed = store.failedTotal();
    el.countFailed.textContent = String(failed);
    el.countFailed.parentElement.classList.toggle('alert', failed > 0);
  }
}
