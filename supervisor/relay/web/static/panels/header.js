// Header: the relay session's status, our identity and the totals (targets, events, failing
// children and recent failures, as failures.js defines them).

import { elements, setAttr, setText } from '../dom.js';
import { FAILURE_WINDOW_MS, STABLE_RUN_MS } from '../failures.js';
import { t } from '../i18n.js';
import { shortIdentity } from '../protocol.js';

export class HeaderPanel {
  constructor(root, { store }) {
    this.store = store;
    this.el = elements(root, [
      'relay-status', 'relay-status-text', 'identity', 'identity-principal', 'identity-fingerprint',
      'count-targets', 'count-events', 'count-failed', 'count-failures', 'failed-counter',
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
    setAttr(el.relayStatus, 'class', `status st-${this.status}`);
    const d = this.detail;
    setText(el.relayStatusText, this.status === 'waiting'
      ? t('relay_waiting', { s: Math.max(1, Math.round((d.delay || 0) / 1000)), n: d.attempt || 1 })
      : t(`relay_${this.status}`));
    const s = store.session;
    // The principal comes with server_hello (§5); from a relay that does not send it, it is
    // learned from our own audit records or command results.
    setText(el.identityPrincipal, s.principal || '');
    el.identityPrincipal.hidden = !s.principal;
    setText(el.identityFingerprint, shortIdentity(s.clientIdentity));
    setAttr(el.identity, 'title', s.clientIdentity || '');
    setText(el.countTargets, store.listedTargets().length);
    setText(el.countEvents, store.eventTotal);
    const { failing, recent } = store.failureTotals();
    const minutes = FAILURE_WINDOW_MS / 60000;
    setText(el.countFailed, failing);
    setText(el.countFailures, t('recent_failures', { n: recent, minutes }));
    setAttr(el.failedCounter, 'title', t('failed_help', { seconds: STABLE_RUN_MS / 1000, minutes }));
    el.failedCounter.classList.toggle('alert', failing > 0);
    el.failedCounter.classList.toggle('recent', recent > 0);
  }
}
