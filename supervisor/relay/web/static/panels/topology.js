// Topology panel: the selected target's tree (TopologyView), its title and empty state, the
// toolbar (search, failed only, zoom, fit, relayout) and the lifecycle legend.

import { elements, h } from '../dom.js';
import { t } from '../i18n.js';
import { compactFigures, siblingRank } from '../resources.js';
import { TopologyView } from '../topology-view.js';
import { LIFECYCLE_STATES } from '../vocabulary.js';

export class TopologyPanel {
  // memory: a PositionMemory; onSelect(path) when a node is picked in the tree.
  constructor(root, { store, selection, memory, onSelect }) {
    this.store = store;
    this.selection = selection;
    this.el = elements(root, [
      'topology-svg', 'topology-empty', 'topology-target', 'node-search', 'failed-only',
      'zoom-in', 'zoom-out', 'fit-view', 'relayout', 'legend', 'node-sort',
    ]);
    this.view = new TopologyView(this.el.topologySvg, {
      memory,
      onSelect,
      lifecycleOf: (path) => store.lifecycleOf(selection.targetId, path),
      isFailing: (path) => store.isFailing(selection.targetId, path),
      figuresOf: (path) => compactFigures(store.resourcesOf(selection.targetId, path)),
    });
    this._bind();
  }

  _bind() {
    const { el, view } = this;
    el.nodeSearch.addEventListener('input', (ev) => view.setSearch(ev.target.value));
    el.nodeSearch.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter') return;
      ev.preventDefault();
      const matches = view.setSearch(ev.target.value);
      if (matches.length) view.select(matches[0], { reveal: true });
    });
    el.failedOnly.addEventListener('change', (ev) => view.setFailedOnly(ev.target.checked));
    el.zoomIn.addEventListener('click', () => view.zoom(1.25));
    el.zoomOut.addEventListener('click', () => view.zoom(0.8));
    el.fitView.addEventListener('click', () => view.fit());
    el.relayout.addEventListener('click', () => view.relayout());
    // Siblings by CPU or memory, largest first: ordered when picked (and on Relayout), so
    // that nodes do not move under the pointer as figures change.
    el.nodeSort.addEventListener('change', () => this.sortBy(el.nodeSort.value));
  }

  sortBy(key) {
    const { store, selection } = this;
    this.el.nodeSort.value = key;
    this.view.setRank(siblingRank(key, (path) => store.resourcesOf(selection.targetId, path)));
  }

  // Draws the selected target's tree (or why there is none) with the node selection and search.
  render() {
    const { el, view, selection } = this;
    const tg = this.store.targets.get(selection.targetId);
    const topo = tg && tg.state ? tg.state.topology : null;
    el.topologyEmpty.hidden = Boolean(topo);
    el.topologyEmpty.textContent = tg ? t('no_tree') : t('select_target');
    view.setTopology(selection.targetId, topo || null);
    if (topo && selection.path && view.elements.has(selection.path)) view.select(selection.path, { notify: false });
    this.renderTitle();
    const q = el.nodeSearch.value;
    if (q) view.setSearch(q);
  }

  renderTitle() {
    const tg = this.store.targets.get(this.selection.targetId);
    const el = this.el.topologyTarget;
    el.textContent = tg ? `${tg.displayName} · ${t(`cs_${tg.connectionState || 'registered'}`)}` : '';
    el.parentElement.title = el.textContent; // the title may be cut short in a narrow window
    el.className = tg ? `muted cs-text cs-${tg.connectionState}` : 'muted';
  }

  // Re-colours the given nodes of the drawn tree from their current lifecycle.
  refreshStates(paths) {
    if (this.view.topology) this.view.refreshStates(paths);
  }

  // The legend, whose labels depend on the language.
  relabel() {
    this.el.legend.replaceChildren(...LIFECYCLE_STATES.map((s) => h('li', {}, h('span', { class: `swatch st-${s}` }), t(`lc_${s}`))));
  }
}
