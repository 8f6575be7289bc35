// The supervision tree's SVG view: draws a layout from topology-layout.js and handles zoom,
// pan, fit, relayout, search, failed-only dimming and hand-placed positions per target.

import {
  GEOMETRY, boundingBox, dependencyPaths, edgePaths, fitTransform, layoutTree, r, revealTransform, zoomAt,
} from './topology-layout.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const KIND_MARK = {
  root_supervisor: 'R', supervisor: 'S', child_task: 'T', child_process: 'P', child_service: 'V',
};

const FIGURE_KINDS = new Set(['child_process', 'root_supervisor']);

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// SVG markup of the whole tree (edges, dependency arcs, one <g class="node" role="treeitem">
// per node in layout order) and each node's lower-case name for search. Remote text is escaped.
export function treeMarkup(topology, layout, positions, manual) {
  const nodes = new Map((topology.nodes || []).map((n) => [n.path, n]));
  if (topology.root) nodes.set(topology.root.path, topology.root);
  const names = new Map([...nodes.values()].map((n) => [n.path, String(n.name || '').toLowerCase()]));
  const html = [];
  html.push(`<path class="edges" d="${edgePaths(layout, positions, manual)}"/>`);
  for (const dep of dependencyPaths(topology, positions)) {
    html.push(`<path class="dep" marker-end="url(#dep-arrow)" d="${dep.d}"/>`);
  }
  layout.order.forEach((path, i) => {
    const node = nodes.get(path);
    const p = positions.get(path);
    if (!node || !p) return;
    // OS processes (and the target itself, on the root) have figures, written small just above
    // the node's right edge (in the gap between rows), so that names keep their room
    const figures = FIGURE_KINDS.has(node.kind);
    const name = truncate(node.name || node.child_id || path, 20);
    html.push(`<g class="node" id="tree-node-${i}" role="treeitem" aria-selected="false" data-path="${esc(path)}" transform="translate(${p.x},${p.y})">`
      + `<title>${esc(path)}</title>`
      + `<rect width="${GEOMETRY.nodeW}" height="${GEOMETRY.nodeH}" rx="7"/>`
      + `<text class="kind" x="10" y="19">${KIND_MARK[node.kind] || '?'}</text>`
      + `<text class="name" x="26" y="19">${esc(name)}</text>`
      + (figures ? `<text class="figures" x="${GEOMETRY.nodeW - 6}" y="-2" text-anchor="end"></text>` : '')
      + '</g>');
  });
  return { html: html.join(''), names };
}

// The SVG view. Callbacks: onSelect(path); lifecycleOf(path) gives a node's colour;
// isFailing(path) whether it counts as failed (failures.js) for "failed only";
// memory (a PositionMemory) keeps hand-placed positions.
export class TopologyView {
  constructor(svg, { memory, onSelect, lifecycleOf, isFailing, figuresOf = () => '' }) {
    this.svg = svg;
    this.figuresOf = figuresOf;
    this.rank = null; // orders siblings (topology-layout.js rankSiblings); null: as declared
    this.memory = memory;
    this.onSelect = onSelect;
    this.lifecycleOf = lifecycleOf;
    this.isFailing = isFailing;
    this.targetId = null;
    this.topology = null;
    this.layout = null;
    this.positions = new Map();
    this.manual = new Map();
    this.elements = new Map();
    this.names = new Map();
    this.selected = null;
    this.search = '';
    this.failedOnly = false;
    this.t = { k: 1, x: 0, y: 0 };
    this._fitted = false; // fitted once for this target
    this._moved = false; // zoomed or panned by hand since the last fit
    this.root = svg.ownerDocument.createElementNS(SVG_NS, 'g');
    this.root.setAttribute('class', 'viewport');
    svg.appendChild(this.root);
    this._bindPointer();
    this._bindKeys();
  }

  // Replaces the drawn tree; keeps the view transform unless the target changed.
  setTopology(targetId, topology) {
    const targetChanged = targetId !== this.targetId;
    this.targetId = targetId;
    this.topology = topology;
    if (targetChanged) this.manual = targetId ? this.memory.load(targetId) : new Map();
    if (!topology) {
      this.root.replaceChildren();
      this.svg.removeAttribute('aria-activedescendant');
      this.elements.clear();
      this.layout = null;
      return;
    }
    this.layout = layoutTree(topology, GEOMETRY, this.rank);
    this._mergePositions();
    this._draw();
    if (targetChanged || !this._fitted) this.fit();
  }

  _mergePositions() {
    this.positions = new Map(this.layout.positions);
    for (const [path, p] of this.manual) if (this.positions.has(path)) this.positions.set(path, p);
  }

  _draw() {
    const { html, names } = treeMarkup(this.topology, this.layout, this.positions, this.manual);
    this.names = names;
    this.root.innerHTML = html;
    this.elements.clear();
    for (const el of this.root.querySelectorAll('g.node')) this.elements.set(el.getAttribute('data-path'), el);
    this.refreshStates();
    this._exposeSelection(null, this.selected);
  }

  // The selected node is the tree's aria-activedescendant, with aria-selected.
  _exposeSelection(previous, path) {
    const before = previous && this.elements.get(previous);
    if (before) before.setAttribute('aria-selected', 'false');
    const el = path && this.elements.get(path);
    if (el) {
      el.setAttribute('aria-selected', 'true');
      this.svg.setAttribute('aria-activedescendant', el.id);
    } else {
      this.svg.removeAttribute('aria-activedescendant');
    }
  }

  // Re-colours nodes (all, or the given paths) from current lifecycle states.
  refreshStates(paths = null) {
    const list = paths ? [...paths] : [...this.elements.keys()];
    const q = this.search;
    for (const path of list) {
      const el = this.elements.get(path);
      if (!el) continue;
      const state = this.lifecycleOf(path) || 'unknown';
      let cls = `node st-${state}`;
      if (path === this.selected) cls += ' selected';
      if (q) cls += this._matches(path) ? ' match' : ' dim';
      else if (this.failedOnly && !this.isFailing(path)) cls += ' dim';
      el.setAttribute('class', cls);
      const figures = el.querySelector('text.figures');
      if (figures) {
        const text = this.figuresOf(path) || '';
        if (figures.textContent !== text) figures.textContent = text;
      }
    }
  }

  // Orders siblings by `rank(path)` (largest first) or, with null, as declared; lays out again.
  setRank(rank) {
    this.rank = rank;
    if (!this.topology) return;
    this.layout = layoutTree(this.topology, GEOMETRY, rank);
    this._mergePositions();
    this._draw();
  }

  _matches(path) {
    const name = this.names.get(path) || '';
    return path.toLowerCase().includes(this.search) || name.includes(this.search);
  }

  setSearch(text) {
    this.search = String(text || '').trim().toLowerCase();
    this.refreshStates();
    return this.search ? [...this.elements.keys()].filter((p) => this._matches(p)) : [];
  }

  setFailedOnly(on) {
    this.failedOnly = on;
    this.refreshStates();
  }

  select(path, { notify = true, reveal = false } = {}) {
    const previous = this.selected;
    this.selected = path;
    this.refreshStates([previous, path].filter(Boolean));
    this._exposeSelection(previous, path);
    if (reveal && path) this.reveal(path);
    if (notify) this.onSelect(path);
  }

  // Pans so the node is inside the viewport.
  reveal(path) {
    const p = this.positions.get(path);
    if (!p) return;
    const { width, height } = this.svg.getBoundingClientRect();
    const t = revealTransform(this.t, p, width, height);
    if (!t) return;
    this.t = t;
    this._applyTransform();
  }

  bounds() {
    return boundingBox(this.positions, this.topology);
  }

  fit() {
    const { width, height } = this.svg.getBoundingClientRect();
    if (!width || !height) return;
    this._fitted = true;
    this._moved = false;
    const legend = this.svg.parentElement.querySelector('.legend');
    const reserve = legend ? legend.getBoundingClientRect().height + 8 : 0;
    this.t = fitTransform(this.bounds(), width, height, 16, reserve);
    this._applyTransform();
  }

  // After the canvas changed size: fits again unless the operator has zoomed or panned.
  refit() {
    if (!this._moved) this.fit();
  }

  zoom(factor) {
    this._moved = true;
    const { width, height } = this.svg.getBoundingClientRect();
    this.t = zoomAt(this.t, factor, width / 2, height / 2);
    this._applyTransform();
  }

  // Forgets hand-placed positions of this target and lays the tree out again.
  relayout() {
    this.manual = new Map();
    if (this.targetId) this.memory.save(this.targetId, this.manual);
    if (!this.topology) return;
    this.layout = layoutTree(this.topology, GEOMETRY, this.rank);
    this._mergePositions();
    this._draw();
    this.fit();
  }

  _applyTransform() {
    const { k, x, y } = this.t;
    this.root.setAttribute('transform', `translate(${r(x)},${r(y)}) scale(${Math.round(k * 1000) / 1000})`);
  }

  _bindPointer() {
    let drag = null;
    this.svg.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      this._moved = true;
      const box = this.svg.getBoundingClientRect();
      this.t = zoomAt(this.t, ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX - box.left, ev.clientY - box.top);
      this._applyTransform();
    }, { passive: false });
    this.svg.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      const nodeEl = ev.target.closest && ev.target.closest('g.node');
      const path = nodeEl ? nodeEl.getAttribute('data-path') : null;
      drag = { path, x: ev.clientX, y: ev.clientY, t: { ...this.t }, start: path ? { ...this.positions.get(path) } : null, moved: false };
      this.svg.setPointerCapture(ev.pointerId);
    });
    this.svg.addEventListener('pointermove', (ev) => {
      if (!drag) return;
      const dx = ev.clientX - drag.x;
      const dy = ev.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      drag.moved = true;
      if (drag.path) {
        // Whole pixels: what is saved equals what is drawn.
        const p = { x: Math.round(drag.start.x + dx / this.t.k), y: Math.round(drag.start.y + dy / this.t.k) };
        this.positions.set(drag.path, p);
        this.manual.set(drag.path, p);
        this.elements.get(drag.path).setAttribute('transform', `translate(${r(p.x)},${r(p.y)})`);
      } else {
        this._moved = true;
        this.t = { ...drag.t, x: drag.t.x + dx, y: drag.t.y + dy };
        this._applyTransform();
      }
    });
    const end = (ev) => {
      if (!drag) return;
      const d = drag;
      drag = null;
      if (this.svg.hasPointerCapture(ev.pointerId)) this.svg.releasePointerCapture(ev.pointerId);
      if (d.moved && d.path) {
        this.memory.save(this.targetId, this.manual);
        this._draw();
      } else if (!d.moved && d.path) {
        this.select(d.path);
      }
    };
    this.svg.addEventListener('pointerup', end);
    this.svg.addEventListener('pointercancel', end);
  }

  // Keyboard: arrows walk the nodes in layout order, +/- zoom, 0 fits.
  _bindKeys() {
    this.svg.addEventListener('keydown', (ev) => {
      if (!this.layout) return;
      const order = this.layout.order.filter((p) => this.elements.has(p));
      const i = order.indexOf(this.selected);
      let next = null;
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowRight') next = order[Math.min(order.length - 1, i + 1)];
      else if (ev.key === 'ArrowUp' || ev.key === 'ArrowLeft') next = order[Math.max(0, i - 1)];
      else if (ev.key === 'Home') next = order[0];
      else if (ev.key === 'End') next = order[order.length - 1];
      else if (ev.key === '+' || ev.key === '=') this.zoom(1.2);
      else if (ev.key === '-') this.zoom(1 / 1.2);
      else if (ev.key === '0') this.fit();
      else return;
      ev.preventDefault();
      if (next) this.select(next, { reveal: true });
    });
  }
}
