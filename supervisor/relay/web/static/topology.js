// Supervision tree: pure layout (tested under node) and the SVG view with zoom, pan,
// fit, relayout, search, failed-only dimming and hand-placed positions per target.

export const GEOMETRY = Object.freeze({ nodeW: 168, nodeH: 30, colGap: 40, rowGap: 10, margin: 24 });
const SUPERVISOR_KINDS = new Set(['root_supervisor', 'supervisor']);

// Parent -> ordered child paths, from parent_child edges (by `order`), falling back to the
// path hierarchy for nodes no edge mentions.
export function childrenMap(topology) {
  const nodes = topology.nodes || [];
  const known = new Set(nodes.map((n) => n.path));
  const children = new Map();
  const hasParent = new Set();
  const edges = (topology.edges || []).filter((e) => e.kind === 'parent_child'
    && known.has(e.source_path) && known.has(e.target_path));
  edges.sort((a, b) => (a.order ?? 0) - (b.order ?? 0));
  for (const e of edges) {
    if (hasParent.has(e.target_path)) continue;
    if (!children.has(e.source_path)) children.set(e.source_path, []);
    children.get(e.source_path).push(e.target_path);
    hasParent.add(e.target_path);
  }
  const rootPath = topology.root ? topology.root.path : '/root';
  for (const n of nodes) {
    if (n.path === rootPath || hasParent.has(n.path)) continue;
    const parent = n.path.slice(0, n.path.lastIndexOf('/'));
    const p = known.has(parent) ? parent : rootPath;
    if (p === n.path) continue;
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(n.path);
    hasParent.add(n.path);
  }
  return children;
}

// Rows per leaf column so a block of n leaves is about `aspect` times wider than tall.
export function rowsForLeaves(n, g = GEOMETRY, aspect = 1.6) {
  if (n <= 8) return Math.max(1, n);
  const colW = g.nodeW + g.colGap;
  const rowH = g.nodeH + g.rowGap;
  return Math.max(8, Math.ceil(Math.sqrt((n * colW) / (aspect * rowH))));
}

// Left-to-right tree. A node's leaf children fill a grid of columns to its right; nested
// supervisors follow below the grid, each laid out recursively.
// Returns {positions: Map path->{x,y}, blocks: Map parent->{top, columns:[{x, paths}]},
// width, height, order: paths in drawing order}.
export function layoutTree(topology, g = GEOMETRY) {
  const nodesByPath = new Map((topology.nodes || []).map((n) => [n.path, n]));
  const rootPath = topology.root ? topology.root.path : '/root';
  if (topology.root && !nodesByPath.has(rootPath)) nodesByPath.set(rootPath, topology.root);
  const children = childrenMap({ ...topology, nodes: [...nodesByPath.values()] });
  const positions = new Map();
  const blocks = new Map();
  const order = [];
  const colW = g.nodeW + g.colGap;
  const rowH = g.nodeH + g.rowGap;
  const isSupervisor = (p) => SUPERVISOR_KINDS.has((nodesByPath.get(p) || {}).kind) || children.has(p);

  // Places `path` at (x, y); returns the height its subtree occupies.
  const place = (path, x, y, depth) => {
    positions.set(path, { x, y });
    order.push(path);
    const kids = children.get(path) || [];
    if (!kids.length || depth > 64) return rowH;
    const leaves = kids.filter((k) => !isSupervisor(k));
    const subs = kids.filter((k) => isSupervisor(k));
    const rows = rowsForLeaves(leaves.length, g);
    const columns = [];
    leaves.forEach((leaf, i) => {
      const c = Math.floor(i / rows);
      if (!columns[c]) columns[c] = { x: x + colW * (c + 1), paths: [] };
      columns[c].paths.push(leaf);
      positions.set(leaf, { x: x + colW * (c + 1), y: y + (i % rows) * rowH });
      order.push(leaf);
    });
    let cursor = y + Math.min(rows, leaves.length) * rowH;
    if (!columns.length) columns.push({ x: x + colW, paths: [] });
    for (const sub of subs) {
      columns[0].paths.push(sub);
      cursor += place(sub, x + colW, cursor, depth + 1);
    }
    blocks.set(path, { top: y, columns });
    return Math.max(rowH, cursor - y);
  };

  let height = place(rootPath, g.margin, g.margin, 0);
  // Nodes unreachable from the root (inconsistent input) go in a row below the tree.
  let x = g.margin;
  for (const path of nodesByPath.keys()) {
    if (positions.has(path)) continue;
    positions.set(path, { x, y: g.margin + height });
    order.push(path);
    x += colW;
  }
  let maxX = 0;
  let maxY = 0;
  for (const p of positions.values()) {
    maxX = Math.max(maxX, p.x + g.nodeW);
    maxY = Math.max(maxY, p.y + g.nodeH);
  }
  height = maxY + g.margin;
  return { positions, blocks, children, width: maxX + g.margin, height, order };
}

const r = (v) => Math.round(v * 10) / 10;

// SVG path data for parent->child edges. Auto-placed children hang off a comb (one bus per
// column); a child or parent moved by hand gets its own curve.
export function edgePaths(layout, positions, manual, g = GEOMETRY) {
  const parts = [];
  const mid = (p) => p.y + g.nodeH / 2;
  const curve = (a, b) => {
    const x1 = a.x + g.nodeW;
    const y1 = mid(a);
    const x2 = b.x;
    const y2 = mid(b);
    const dx = Math.max(24, Math.abs(x2 - x1) / 2);
    return `M${r(x1)} ${r(y1)}C${r(x1 + dx)} ${r(y1)} ${r(x2 - dx)} ${r(y2)} ${r(x2)} ${r(y2)}`;
  };
  for (const [parent, block] of layout.blocks) {
    const pp = positions.get(parent);
    if (!pp) continue;
    const comb = [];
    for (const col of block.columns) {
      const kids = [];
      for (const child of col.paths) {
        const cp = positions.get(child);
        if (!cp) continue;
        if (manual.has(parent) || manual.has(child)) parts.push(curve(pp, cp));
        else kids.push(cp);
      }
      comb.push({ x: col.x - g.colGap / 2, kids });
    }
    if (manual.has(parent) || !comb.some((c) => c.kids.length)) continue;
    const py = mid(pp);
    const topY = block.top - g.rowGap / 2;
    const used = comb.filter((c) => c.kids.length);
    const lastBus = used[used.length - 1].x;
    const bus0 = comb[0].x;
    parts.push(`M${r(pp.x + g.nodeW)} ${r(py)}H${r(bus0)}`);
    if (used.length > 1 || used[0] !== comb[0]) parts.push(`M${r(bus0)} ${r(py)}V${r(topY)}H${r(lastBus)}`);
    for (const c of used) {
      const ys = c.kids.map(mid);
      const from = c === comb[0] ? Math.min(py, ...ys) : topY;
      parts.push(`M${r(c.x)} ${r(from)}V${r(Math.max(...ys))}`);
      for (const k of c.kids) parts.push(`M${r(c.x)} ${r(mid(k))}H${r(k.x)}`);
    }
  }
  return parts.join('');
}

// Dependency edges: arcs leaving the source's right side and entering the target's right
// side, so edges between siblings in one column stay readable.
export function dependencyPaths(topology, positions, g = GEOMETRY) {
  const out = [];
  for (const e of topology.edges || []) {
    if (e.kind !== 'dependency') continue;
    const a = positions.get(e.source_path);
    const b = positions.get(e.target_path);
    if (!a || !b) continue;
    const x1 = a.x + g.nodeW;
    const y1 = a.y + g.nodeH / 2;
    const x2 = b.x + g.nodeW;
    const y2 = b.y + g.nodeH / 2;
    const bend = 28 + Math.min(60, Math.abs(y2 - y1) / 4);
    const cx = Math.max(x1, x2) + bend;
    out.push({ id: e.edge_id, d: `M${r(x1)} ${r(y1)}C${r(cx)} ${r(y1)} ${r(cx)} ${r(y2)} ${r(x2 + 2)} ${r(y2)}` });
  }
  return out;
}

// Scale and translation that fit a box into a viewport with padding, never zooming past 1.5x.
// `bottom` is extra space kept free below the box (the legend overlays the canvas there).
export function fitTransform(box, viewW, viewH, pad = 16, bottom = 0) {
  if (!box.width || !box.height || !viewW || !viewH) return { k: 1, x: 0, y: 0 };
  const usableH = Math.max(1, viewH - bottom);
  const k = Math.min(1.25, (viewW - 2 * pad) / box.width, (usableH - 2 * pad) / box.height);
  return { k, x: (viewW - box.width * k) / 2 - box.x * k, y: (usableH - box.height * k) / 2 - box.y * k };
}

// Zoom by `factor` around viewport point (cx, cy), clamped to [0.05, 4].
export function zoomAt(t, factor, cx, cy) {
  const k = Math.min(4, Math.max(0.05, t.k * factor));
  const f = k / t.k;
  return { k, x: cx - (cx - t.x) * f, y: cy - (cy - t.y) * f };
}

// Hand-placed positions, per target, in localStorage (`storage` injected for tests).
export class PositionMemory {
  constructor(storage, prefix = 'supervisor-dashboard.positions.') {
    this.storage = storage;
    this.prefix = prefix;
  }

  load(targetId) {
    try {
      const raw = this.storage.getItem(this.prefix + targetId);
      const obj = raw ? JSON.parse(raw) : {};
      const out = new Map();
      for (const [path, xy] of Object.entries(obj)) {
        if (Array.isArray(xy) && xy.length === 2 && xy.every(Number.isFinite)) out.set(path, { x: xy[0], y: xy[1] });
      }
      return out;
    } catch {
      return new Map();
    }
  }

  save(targetId, map) {
    const obj = {};
    for (const [path, p] of map) obj[path] = [Math.round(p.x), Math.round(p.y)];
    try {
      if (map.size) this.storage.setItem(this.prefix + targetId, JSON.stringify(obj));
      else this.storage.removeItem(this.prefix + targetId);
    } catch { /* storage full or disabled: positions stay for this page only */ }
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const KIND_MARK = {
  root_supervisor: 'R', supervisor: 'S', child_task: 'T', child_process: 'P', child_service: 'V',
};

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// The SVG view. Callbacks: onSelect(path). Uses lifecycleOf(path) for colours.
export class TopologyView {
  constructor(svg, { memory, onSelect, lifecycleOf, label }) {
    this.svg = svg;
    this.memory = memory;
    this.onSelect = onSelect;
    this.lifecycleOf = lifecycleOf;
    this.label = label;
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
    this.root = document.createElementNS(SVG_NS, 'g');
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
      this.elements.clear();
      this.layout = null;
      return;
    }
    this.layout = layoutTree(topology);
    this._mergePositions();
    this._draw();
    if (targetChanged || !this._fitted) this.fit();
  }

  _mergePositions() {
    this.positions = new Map(this.layout.positions);
    for (const [path, p] of this.manual) if (this.positions.has(path)) this.positions.set(path, p);
  }

  _draw() {
    const nodes = new Map((this.topology.nodes || []).map((n) => [n.path, n]));
    if (this.topology.root) nodes.set(this.topology.root.path, this.topology.root);
    this.names = new Map([...nodes.values()].map((n) => [n.path, String(n.name || '').toLowerCase()]));
    const html = [];
    html.push(`<path class="edges" d="${edgePaths(this.layout, this.positions, this.manual)}"/>`);
    for (const dep of dependencyPaths(this.topology, this.positions)) {
      html.push(`<path class="dep" marker-end="url(#dep-arrow)" d="${dep.d}"/>`);
    }
    for (const path of this.layout.order) {
      const node = nodes.get(path);
      const p = this.positions.get(path);
      if (!node || !p) continue;
      const name = truncate(node.name || node.child_id || path, 20);
      html.push(`<g class="node" data-path="${esc(path)}" transform="translate(${p.x},${p.y})">`
        + `<title>${esc(path)}</title>`
        + `<rect width="${GEOMETRY.nodeW}" height="${GEOMETRY.nodeH}" rx="7"/>`
        + `<text class="kind" x="10" y="19">${KIND_MARK[node.kind] || '?'}</text>`
        + `<text class="name" x="26" y="19">${esc(name)}</text></g>`);
    }
    this.root.innerHTML = html.join('');
    this.edgeEl = this.root.querySelector('path.edges');
    this.elements.clear();
    for (const el of this.root.querySelectorAll('g.node')) this.elements.set(el.getAttribute('data-path'), el);
    this.refreshStates();
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
      else if (this.failedOnly && state !== 'failed') cls += ' dim';
      el.setAttribute('class', cls);
    }
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
    if (reveal && path) this.reveal(path);
    if (notify) this.onSelect(path);
  }

  // Pans so the node is inside the viewport.
  reveal(path) {
    const p = this.positions.get(path);
    if (!p) return;
    const { width, height } = this.svg.getBoundingClientRect();
    const sx = p.x * this.t.k + this.t.x;
    const sy = p.y * this.t.k + this.t.y;
    const w = GEOMETRY.nodeW * this.t.k;
    const h = GEOMETRY.nodeH * this.t.k;
    if (sx < 0 || sy < 0 || sx + w > width || sy + h > height) {
      this.t = { ...this.t, x: width / 2 - (p.x + GEOMETRY.nodeW / 2) * this.t.k, y: height / 2 - (p.y + GEOMETRY.nodeH / 2) * this.t.k };
      this._applyTransform();
    }
  }

  bounds() {
    let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
    for (const p of this.positions.values()) {
      x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y);
      x1 = Math.max(x1, p.x + GEOMETRY.nodeW); y1 = Math.max(y1, p.y + GEOMETRY.nodeH);
    }
    if (x0 === Infinity) return { x: 0, y: 0, width: 0, height: 0 };
    // Dependency arcs bulge to the right of their nodes.
    const hasDeps = (this.topology.edges || []).some((e) => e.kind === 'dependency');
    return { x: x0, y: y0, width: x1 - x0 + (hasDeps ? 90 : 0), height: y1 - y0 };
  }

  fit() {
    const { width, height } = this.svg.getBoundingClientRect();
    if (!width || !height) return;
    this._fitted = true;
    const legend = this.svg.parentElement.querySelector('.legend');
    const reserve = legend ? legend.getBoundingClientRect().height + 8 : 0;
    this.t = fitTransform(this.bounds(), width, height, 16, reserve);
    this._applyTransform();
  }

  zoom(factor) {
    const { width, height } = this.svg.getBoundingClientRect();
    this.t = zoomAt(this.t, factor, width / 2, height / 2);
    this._applyTransform();
  }

  // Forgets hand-placed positions of this target and lays the tree out again.
  relayout() {
    this.manual = new Map();
    if (this.targetId) this.memory.save(this.targetId, this.manual);
    if (!this.topology) return;
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
