// Resource figures of nodes over the last 15 minutes (CPU, RSS, restarts per minute), the
// sparklines drawn from them and the compact figure shown on tree nodes. Pure (no DOM),
// tested under node. Bounded: per node at most HISTORY.maxPoints samples and
// HISTORY.maxRestarts restart times; older ones and those out of the window are forgotten.

export const HISTORY = Object.freeze({
  windowMs: 15 * 60 * 1000,
  buckets: 60, // CPU and RSS: one value per 15 s
  restartBuckets: 15, // restarts: one count per minute
  maxPoints: 512,
  maxRestarts: 600,
});

// Drops the oldest entries beyond `max`, and those before `oldest`; with `carry`, the last
// entry before `oldest` stays (a step function's value at the window's start).
function trimTo(list, max, oldest, carry = false) {
  const edge = carry ? 1 : 0;
  while (list.length > max || (list.length > edge && list[edge].at < oldest)) list.shift();
}

// Samples and restarts per node path, kept on the browser's clock (ms).
export class ResourceHistory {
  constructor(limits = HISTORY) {
    this.limits = limits;
    this.nodes = new Map(); // path -> {points: [{at, cpu, rss}], restarts: [{at}]}
  }

  _node(path) {
    let node = this.nodes.get(path);
    if (!node) {
      node = { points: [], restarts: [] };
      this.nodes.set(path, node);
    }
    return node;
  }

  // A sample of `resources` (the wire object) taken at `at`; null marks the figures gone.
  record(path, resources, at) {
    const node = this._node(path);
    const last = node.points[node.points.length - 1];
    if (last && at < last.at) return; // an older sample (a replayed state) adds nothing
    const point = resources
      ? { at, cpu: Number(resources.cpu_percent) || 0, rss: Number(resources.rss_bytes) || 0 }
      : { at, cpu: null, rss: null };
    if (last && last.at === at && last.cpu === point.cpu && last.rss === point.rss) return;
    node.points.push(point);
    trimTo(node.points, this.limits.maxPoints, at - this.limits.windowMs, true);
  }

  // `count` restarts seen at `at`.
  restart(path, at, count = 1) {
    const node = this._node(path);
    for (let i = 0; i < count; i += 1) node.restarts.push({ at });
    trimTo(node.restarts, this.limits.maxRestarts, at - this.limits.windowMs);
  }

  forget(path) {
    this.nodes.delete(path);
  }

  // The window ending at `now`: {cpu: [..], rss: [..]} with one value per bucket (the last
  // sample at or before the bucket's end, null before the first one or while gone) and
  // {restarts: [..]} with the restarts per minute.
  series(path, now) {
    const { windowMs, buckets, restartBuckets } = this.limits;
    const node = this.nodes.get(path) || { points: [], restarts: [] };
    const start = now - windowMs;
    const step = windowMs / buckets;
    const cpu = new Array(buckets).fill(null);
    const rss = new Array(buckets).fill(null);
    let i = 0;
    let current = null;
    for (const p of node.points) if (p.at <= start) current = p;
    for (let b = 0; b < buckets; b += 1) {
      const end = start + step * (b + 1);
      while (i < node.points.length && node.points[i].at <= end) {
        if (node.points[i].at > start) current = node.points[i];
        i += 1;
      }
      cpu[b] = current ? current.cpu : null;
      rss[b] = current ? current.rss : null;
    }
    const restarts = new Array(restartBuckets).fill(0);
    const minute = windowMs / restartBuckets;
    for (const r of node.restarts) {
      if (r.at <= start || r.at > now) continue;
      restarts[Math.min(restartBuckets - 1, Math.floor((r.at - start) / minute))] += 1;
    }
    return { cpu, rss, restarts };
  }
}

const r1 = (v) => Math.round(v * 10) / 10;

// SVG path data of `values` in a w×h box (0 at the bottom, the largest value or `floor` at the
// top); a null value breaks the line. Empty when there is nothing to draw.
export function sparkPath(values, w, h, floor = 0) {
  const max = Math.max(floor, ...values.filter((v) => v !== null));
  const dx = values.length > 1 ? w / (values.length - 1) : 0;
  let d = '';
  let drawing = false;
  values.forEach((v, i) => {
    if (v === null) {
      drawing = false;
      return;
    }
    const x = r1(i * dx);
    const y = r1(max > 0 ? h - (v / max) * h : h);
    d += `${drawing ? 'L' : 'M'}${x},${y}`;
    drawing = true;
  });
  return d;
}

// Bytes as a short binary size: 900B, 40.0M, 1.5G.
export function formatBytes(n) {
  let value = Number(n) || 0;
  if (value < 1024) return `${Math.round(value)}B`;
  for (const unit of ['K', 'M', 'G']) {
    value /= 1024;
    if (value < 1024 || unit === 'G') return `${value.toFixed(1)}${unit}`;
  }
  return '';
}

// CPU as shown: 12.5%, 0%.
export function formatCpu(v) {
  const n = Number(v) || 0;
  return `${n >= 10 ? Math.round(n) : r1(n)}%`;
}

// The compact "12% · 40.0M" of a node, or '' without figures.
export function compactFigures(resources) {
  if (!resources) return '';
  return `${formatCpu(resources.cpu_percent)} · ${formatBytes(resources.rss_bytes)}`;
}

// Sibling orders the tree offers: declaration (as the target lists them), or by a figure,
// largest first, nodes without figures last in declaration order.
export const SORT_KEYS = Object.freeze(['declaration', 'cpu', 'rss']);

export function siblingRank(sortKey, resourcesOf) {
  if (sortKey !== 'cpu' && sortKey !== 'rss') return null;
  const field = sortKey === 'cpu' ? 'cpu_percent' : 'rss_bytes';
  return (path) => {
    const res = resourcesOf(path);
    return res ? Number(res[field]) || 0 : null;
  };
}
