// Supervision tree layout: node positions, edge paths, bounding boxes and viewport
// transforms. Pure functions of the topology (no DOM), tested under node.

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

// Siblings by rank, largest first; those without a rank keep their order after the others.
export function rankSiblings(paths, rank) {
  const ranked = paths.map((path, index) => ({ path, index, value: rank(path) }));
  ranked.sort((a, b) => {
    if (a.value === null || b.value === null) {
      return (a.value === null) - (b.value === null) || a.index - b.index;
    }
    return b.value - a.value || a.index - b.index;
  });
  return ranked.map((r) => r.path);
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
// `rank(path)` (optional) orders siblings: larger first, null (no figure) last, ties and
// nulls in declaration order.
export function layoutTree(topology, g = GEOMETRY, rank = null) {
  const nodesByPath = new Map((topology.nodes || []).map((n) => [n.path, n]));
  const rootPath = topology.root ? topology.root.path : '/root';
  if (topology.root && !nodesByPath.has(rootPath)) nodesByPath.set(rootPath, topology.root);
  const children = childrenMap({ ...topology, nodes: [...nodesByPath.values()] });
  if (rank) for (const [parent, list] of children) children.set(parent, rankSiblings(list, rank));
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

// One decimal: enough for SVG coordinates, short path strings.
export const r = (v) => Math.round(v * 10) / 10;

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

// Dependency edges (source = the dependency, target = its dependent, so the arrowhead reads
// "source is needed by target"): arcs leaving the source's right side and entering the target's right
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

// Box around the nodes at `positions`; dependency arcs bulge to the right of their nodes,
// so a tree with dependencies gets room for them.
export function boundingBox(positions, topology, g = GEOMETRY) {
  let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
  for (const p of positions.values()) {
    x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y);
    x1 = Math.max(x1, p.x + g.nodeW); y1 = Math.max(y1, p.y + g.nodeH);
  }
  if (x0 === Infinity) return { x: 0, y: 0, width: 0, height: 0 };
  const hasDeps = (topology.edges || []).some((e) => e.kind === 'dependency');
  return { x: x0, y: y0, width: x1 - x0 + (hasDeps ? 90 : 0), height: y1 - y0 };
}

// Fitting never shrinks the tree below this scale, so labels stay readable; a larger tree
// is shown from its top left and panned (or zoomed out by hand).
export const MIN_FIT_SCALE = 0.7;

// Scale and translation that fit a box into a viewport with padding, between minK and 1.25x.
// `bottom` is extra space kept free below the box (the legend overlays the canvas there).

export function fitTransform(box, viewW, viewH, pad = 16, bottom = 0, minK = MIN_FIT_SCALE) {
  if (!box.width || !box.height || !viewW || !viewH) return { k: 1, x: 0, y: 0 };
  const usableH = Math.max(1, viewH - bottom);
  const k = Math.max(minK, Math.min(1.25, (viewW - 2 * pad) / box.width, (usableH - 2 * pad) / box.height));
  // centred along each axis where it fits; else from the top left, where the root is
  const along = (size, view, start) => (size * k <= view - 2 * pad ? (view - size * k) / 2 - start * k : pad - start * k);
  return { k, x: along(box.width, viewW, box.x), y: along(box.height, usableH, box.y) };
}

// Zoom by `factor` around viewport point (cx, cy), clamped to [0.05, 4].
export function zoomAt(t, factor, cx, cy) {
  const k = Math.min(4, Math.max(0.05, t.k * factor));
  const f = k / t.k;
  return { k, x: cx - (cx - t.x) * f, y: cy - (cy - t.y) * f };
}

// Transform that centres the node at `p` when it is not fully inside the viewport; null
// when it already is (the view stays where it is).
export function revealTransform(t, p, viewW, viewH, g = GEOMETRY) {
  const sx = p.x * t.k + t.x;
  const sy = p.y * t.k + t.y;
  const w = g.nodeW * t.k;
  const h = g.nodeH * t.k;
  if (sx >= 0 && sy >= 0 && sx + w <= viewW && sy + h <= viewH) return null;
  return { ...t, x: viewW / 2 - (p.x + g.nodeW / 2) * t.k, y: viewH / 2 - (p.y + g.nodeH / 2) * t.k };
}
