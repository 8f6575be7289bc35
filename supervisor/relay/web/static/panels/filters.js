// Timeline filter form: re-filters the local rows at once and sends the contract conditions
// to the relay once typing settles (and only when they changed). The common filters sit in
// one row; "More filters" shows the rest and counts those of them in use.

import { elements, h, offerOptions } from '../dom.js';
import { ROW_KINDS, makeViewFilter } from '../filter.js';
import { language, t } from '../i18n.js';
import { filterMessage, filtersEqual, normalizeFilter, splitList } from '../protocol.js';
import { EVENT_TYPES, LIFECYCLE_STATES, SEVERITIES } from '../vocabulary.js';

// Quiet time after the last keystroke before the relay is told.
export const FILTER_SEND_DELAY_MS = 250;

const checkedValues = (host) => [...host.querySelectorAll('input')].filter((i) => i.checked).map((i) => i.value);

export class FiltersPanel {
  // onChange(viewFilter) at every edit; send(msg) -> bool sends to the relay;
  // timers: {setTimeout, clearTimeout}.
  constructor(root, { store, onChange, send, timers }) {
    this.store = store;
    this.onChange = onChange;
    this.send = send;
    this.timers = timers;
    this.el = elements(root, [
      'filters', 'f-target', 'f-path', 'f-lifecycle', 'f-type', 'f-severities', 'f-seq', 'f-corr', 'f-kinds',
      'f-text', 'f-clear', 'event-types', 'f-more', 'f-more-count', 'filters-more',
    ]);
    this.lastSent = null; // conditions the relay has, when known
    this.sendTimer = null;
    const { el } = this;
    el.filters.addEventListener('input', () => this._onInput());
    el.filters.addEventListener('submit', (ev) => ev.preventDefault());
    el.fClear.addEventListener('click', () => {
      el.filters.reset();
      for (const i of el.fKinds.querySelectorAll('input')) i.checked = true;
      this._onInput();
    });
    el.fMore.addEventListener('click', () => this.showMore(el.filtersMore.hidden));
  }

  showMore(on) {
    this.el.filtersMore.hidden = !on;
    this.el.fMore.setAttribute('aria-expanded', String(on));
  }

  // How many of the filters behind "More filters" are in use, shown on the button.
  _countMore() {
    const { el } = this;
    const kindsOff = [...el.fKinds.querySelectorAll('input')].some((i) => !i.checked);
    const n = [el.fTarget.value, el.fLifecycle.value, el.fSeq.value, el.fCorr.value.trim(), kindsOff].filter(Boolean).length;
    el.fMoreCount.hidden = n === 0;
    el.fMoreCount.textContent = String(n);
  }

  // The form's contract conditions (log_event_filter_conditions).
  conditions() {
    const { el } = this;
    const target = el.fTarget.value;
    const lifecycle = el.fLifecycle.value;
    return normalizeFilter({
      target_ids: target ? [target] : [],
      child_paths: splitList(el.fPath.value),
      lifecycle_states: lifecycle ? [lifecycle] : [],
      event_types: splitList(el.fType.value),
      severities: checkedValues(el.fSeverities),
      sequence_min: el.fSeq.value === '' ? null : Number(el.fSeq.value),
      correlation_id: el.fCorr.value,
    });
  }

  _onInput() {
    this._countMore();
    const conditions = this.conditions();
    this.onChange(makeViewFilter({ conditions, kinds: checkedValues(this.el.fKinds), text: this.el.fText.value }));
    this.timers.clearTimeout(this.sendTimer);
    this.sendTimer = this.timers.setTimeout(() => this._send(conditions), FILTER_SEND_DELAY_MS);
  }

  _send(conditions) {
    if (this.lastSent && filtersEqual(this.lastSent, conditions)) return;
    if (this.send(filterMessage(conditions))) this.lastSent = conditions;
  }

  // A new session starts with the relay's own filter (from server_hello, or unknown).
  sessionStarted(serverHello = null) {
    this.lastSent = serverHello ? normalizeFilter(serverHello.log_event_filter_conditions || {}) : null;
  }

  // The target choice follows the store's targets (see offerOptions: not while in use).
  refreshTargets() {
    const targets = [...this.store.targets.values()];
    const key = [language(), ...targets.map((tg) => `${tg.targetId}=${tg.displayName}`)].join('|');
    offerOptions(this.el.fTarget, key, () => [h('option', { value: '' }, t('all')),
      ...targets.map((tg) => h('option', { value: tg.targetId }, tg.displayName))]);
  }

  // Controls whose labels depend on the language; choices made are kept.
  relabel() {
    const { el } = this;
    const lcValue = el.fLifecycle.value;
    el.fLifecycle.replaceChildren(h('option', { value: '' }, t('all')), ...LIFECYCLE_STATES.map((s) => h('option', { value: s }, t(`lc_${s}`))));
    el.fLifecycle.value = lcValue;
    const sevChecked = new Set(checkedValues(el.fSeverities));
    el.fSeverities.replaceChildren(...SEVERITIES.map((s) => h('label', { class: `chip sev-${s}` },
      h('input', { type: 'checkbox', value: s, checked: sevChecked.has(s) }), h('span', {}, t(`sev_${s}`)))));
    const kindInputs = el.fKinds.querySelectorAll('input');
    const kindChecked = kindInputs.length ? new Set(checkedValues(el.fKinds)) : new Set(ROW_KINDS);
    el.fKinds.replaceChildren(...ROW_KINDS.map((k) => h('label', { class: 'chip' },
      h('input', { type: 'checkbox', value: k, checked: kindChecked.has(k) }), h('span', {}, t(`kind_${k}`)))));
    el.eventTypes.replaceChildren(...EVENT_TYPES.map((e) => h('option', { value: e })));
    this.refreshTargets();
  }
}
