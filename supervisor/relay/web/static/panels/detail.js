// Node detail: facts and runtime state of the selected node and its recent events.

import { elements, h } from '../dom.js';
import { t, tv } from '../i18n.js';
import { nodeEvents } from '../store.js';
import { shortTime } from '../timeline.js';

function field(labelKey, value, cls = '') {
  const shown = value === null || value === undefined || value === '' ? t('d_none') : String(value);
  return [h('dt', {}, t(labelKey)), h('dd', { class: cls }, shown)];
}

export class DetailPanel {
  constructor(root, { store, selection }) {
    this.store = store;
    this.selection = selection;
    this.el = elements(root, ['node-detail']);
  }

  render() {
    const { store, selection } = this;
    const host = this.el.nodeDetail;
    const tg = store.targets.get(selection.targetId);
    const node = tg && selection.path ? tg.nodes.get(selection.path) : null;
    if (!node) {
      host.replaceChildren(h('p', { class: 'empty' }, t('select_node')));
      return;
    }
    const rt = tg.runtime.get(node.path) || {};
    const lifecycle = rt.lifecycle_state || node.state_summary || 'unknown';
    const diag = node.diagnostics || {};
    const events = nodeEvents(store, tg.targetId, node.path);
    host.replaceChildren(
      h('div', { class: 'detail-title' },
        h('span', { class: `swatch st-${lifecycle}` }),
        h('strong', {}, node.name || node.child_id || node.path),
        h('span', { class: `badge lc st-${lifecycle}` }, tv('lc', lifecycle))),
      h('dl', { class: 'facts' },
        field('d_path', node.path, 'mono'),
        field('d_kind', tv('k', node.kind)),
        field('d_criticality', tv('crit', node.criticality)),
        field('d_tags', (node.tags || []).join(', ')),
        field('d_lifecycle', tv('lc', lifecycle)),
        field('d_health', tv('h', rt.health)),
        field('d_readiness', tv('r', rt.readiness)),
        field('d_generation', rt.generation),
        field('d_attempt', rt.attempt),
        field('d_restart_count', rt.restart_count),
        field('d_last_failure', rt.last_failure, rt.last_failure ? 'bad' : ''),
        field('d_last_policy', rt.last_policy_decision),
        field('d_shutdown', tv('sh', rt.shutdown_state)),
        diag.message ? field('d_diagnostic', diag.message) : null),
      h('h3', {}, t('d_recent_events')),
      events.length
        ? h('ol', { class: 'node-events' }, events.map((e) => h('li', { class: `sev-${e.severity}` },
          h('span', { class: 'mono' }, `#${e.sequence}`), ' ', h('span', {}, e.type), ' ',
          h('span', { class: 'muted' }, shortTime(e.time)))))
        : h('p', { class: 'empty' }, t('d_no_events')),
    );
  }
}
