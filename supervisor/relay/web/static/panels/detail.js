// Node detail: facts and runtime state of the selected node and its recent events.

import { elements, h, pathText } from '../dom.js';
import { policyText, t, tv } from '../i18n.js';
import { compactFigures, formatBytes, formatCpu, sparkPath } from '../resources.js';
import { nodeEvents } from '../store.js';
import { shortTime, utcTime } from '../timeline.js';

// A fact of the node: label and value (text, or nodes such as pathText's).
function field(labelKey, value, cls = '') {
  const none = value === null || value === undefined || value === '';
  return [h('dt', {}, t(labelKey)), h('dd', { class: cls }, none ? t('d_none') : value)];
}

// Two facts in one line ("task · critical"); none when neither is known.
function joined(a, b) {
  return [a, b].filter((v) => v !== null && v !== undefined && v !== '').join(' · ');
}

const SPARK_W = 120;
const SPARK_H = 20;

// One sparkline row: label, the line (an inline SVG of numbers only), the latest value.
function spark(labelKey, values, latest, floor) {
  const line = h('span', { class: 'spark' });
  line.innerHTML = `<svg viewBox="0 0 ${SPARK_W} ${SPARK_H}" preserveAspectRatio="none" aria-hidden="true">`
    + `<path d="${sparkPath(values, SPARK_W, SPARK_H, floor)}"/></svg>`;
  return [h('span', { class: 'muted' }, t(labelKey)), line, h('span', { class: 'now mono' }, latest)];
}

// CPU, RSS and restarts per minute over the last 15 minutes (resources.js).
function resourceBlock(store, tg, node) {
  const series = tg.history.series(node.path, store.now().getTime());
  const res = store.resourcesOf(tg.targetId, node.path);
  const rows = [];
  const hasFigures = res || series.cpu.some((v) => v !== null);
  if (hasFigures) {
    rows.push(...spark('d_cpu', series.cpu, res ? formatCpu(res.cpu_percent) : '–', 1));
    rows.push(...spark('d_rss', series.rss, res ? formatBytes(res.rss_bytes) : '–', 0));
  }
  if (node.kind !== 'root_supervisor') {
    const perMinute = series.restarts;
    rows.push(...spark('d_restarts_per_min', perMinute, String(perMinute[perMinute.length - 1]), 1));
  }
  return [
    h('h3', {}, t('d_resources')),
    h('div', { class: 'sparks', 'data-figures': compactFigures(res) }, rows),
    res ? h('p', { class: 'muted mono' }, `${t('d_fds_threads')}: ${res.open_fds} · ${res.threads}`)
      : (hasFigures ? null : h('p', { class: 'muted no-figures' }, t('d_no_figures'))),
  ];
}

// The lifecycle is the title's badge; the facts come in pairs where they belong together, so
// that the node's recent events keep room below them.
export class DetailPanel {
  // onLogs(targetId, path): read the node's logs from its target's history.
  constructor(root, { store, selection, onLogs = () => {} }) {
    this.store = store;
    this.selection = selection;
    this.onLogs = onLogs;
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
        field('d_path', pathText(node.path), 'mono path'),
        field('d_kind', joined(tv('k', node.kind), tv('crit', node.criticality))),
        field('d_tags', (node.tags || []).join(', ')),
        field('d_health', joined(tv('h', rt.health), tv('r', rt.readiness))),
        field('d_restart_count', rt.restart_count),
        field('d_generation', joined(rt.generation, rt.attempt)),
        field('d_last_failure', rt.last_failure, rt.last_failure ? 'bad' : ''),
        field('d_last_policy', policyText(rt.last_policy_decision)),
        rt.shutdown_state && rt.shutdown_state !== 'idle' ? field('d_shutdown', tv('sh', rt.shutdown_state)) : null,
        diag.message ? field('d_diagnostic', diag.message) : null),
      ...resourceBlock(store, tg, node),
      h('h3', {}, t('d_recent_events')),
      events.length
        ? h('ol', { class: 'node-events' }, events.map((e) => h('li', { class: `sev-${e.severity}` },
          h('span', { class: 'mono muted', title: utcTime(e.time) }, shortTime(e.time)), ' ',
          h('span', {}, tv('evt', e.type)), ' ', h('span', { class: 'mono muted' }, `#${e.sequence}`))))
        : h('p', { class: 'empty' }, t('d_no_events')),
      h('h3', {}, t('d_logs')),
      this._logs(tg, node.path),
    );
  }

  // The node's logs from the history: a button, then the newest lines it read.
  _logs(tg, path) {
    const view = tg.childLogs && tg.childLogs.path === path ? tg.childLogs : null;
    const button = h('button', { type: 'button', class: 'small', id: 'node-logs-load' },
      t(view ? 'd_reload_logs' : 'd_load_logs'));
    button.addEventListener('click', () => this.onLogs(tg.targetId, path));
    if (!view) return h('div', { class: 'node-logs' }, button);
    let body;
    if (view.loading) body = h('p', { class: 'muted' }, t('history_loading'));
    else if (view.error) body = h('p', { class: 'bad' }, view.error);
    else if (!view.records.length) body = h('p', { class: 'empty' }, t('d_no_logs'));
    else {
      body = h('ol', { class: 'node-log-lines mono' }, view.records.map((r) => h('li', { class: `sev-${r.severity}` },
        h('span', { class: 'muted', title: utcTime(r.occurred_at) }, shortTime(r.occurred_at)), ' ', r.message)));
    }
    return h('div', { class: 'node-logs' }, button, body);
  }
}
