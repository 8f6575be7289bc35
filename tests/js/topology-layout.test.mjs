import test from 'node:test';
import assert from 'node:assert/strict';
import {
  GEOMETRY, MIN_FIT_SCALE, boundingBox, childrenMap, dependencyPaths, edgePaths, fitTransform, layoutTree, r, revealTransform,
  rowsForLeaves, zoomAt,
} from '../../supervisor/relay/web/static/topology-layout.js';
import { fixture, syntheticTopology } from './helpers.mjs';

function overlaps(positions) {
  const list = [...positions.entries()];
  const bad = [];
  for (let i = 0; i < list.length; i += 1) {
    for (let j = i + 1; j < list.length; j += 1) {
      const [pa, a] = list[i];
      const [pb, b] = list[j];
      if (Math.abs(a.x - b.x) < GEOMETRY.nodeW && Math.abs(a.y - b.y) < GEOMETRY.nodeH) bad.push([pa, pb]);
    }
  }
  return bad;
}

test('children follow parent_child edge order', () => {
  const topo = syntheticTopology(3);
  topo.edges.reverse();
  const children = childrenMap(topo);
  assert.deepEqual(children.get('/root'), ['/root/w0', '/root/w1', '/root/w2', '/root/sub']);
  assert.deepEqual(children.get('/root/sub'), ['/root/sub/a', '/root/sub/b']);
});

test('without edges the path hierarchy decides the parent', () => {
  const topo = syntheticTopology(2);
  topo.edges = [];
  const children = childrenMap(topo);
  assert.deepEqual(children.get('/root/sub'), ['/root/sub/a', '/root/sub/b']);
  assert.ok(children.get('/root').includes('/root/sub'));
});

test('the contract example lays out with the child right of the root', () => {
  const layout = layoutTree(fixture('session.state').state.topology);
  const root = layout.positions.get('/root');
  const child = layout.positions.get('/root/invoice_writer');
  assert.ok(child.x > root.x);
  assert.equal(child.y, root.y);
});

test('200 children are laid out in a grid without overlaps', () => {
  const topo = syntheticTopology(200);
  const layout = layoutTree(topo);
  assert.equal(layout.positions.size, topo.nodes.length);
  assert.deepEqual(overlaps(layout.positions), []);
  const rows = rowsForLeaves(200);
  const columns = layout.blocks.get('/root').columns;
  assert.equal(columns.length, Math.ceil(200 / rows));
  // Roughly as wide as tall-and-a-half, not one endless column.
  assert.ok(layout.width > layout.height * 0.8 && layout.width < layout.height * 4, `${layout.width}x${layout.height}`);
  // The nested supervisor sits below the leaf grid, its children to its right.
  const sub = layout.positions.get('/root/sub');
  const a = layout.positions.get('/root/sub/a');
  assert.ok(sub.y >= rows * (GEOMETRY.nodeH + GEOMETRY.rowGap));
  assert.ok(a.x > sub.x && a.y === sub.y);
  assert.equal(layout.order[0], '/root');
});

test('nested trees of depth 10 do not overlap', () => {
  const nodes = [{ path: '/root', kind: 'root_supervisor', name: 'root' }];
  let parent = '/root';
  for (let d = 0; d < 10; d += 1) {
    for (let i = 0; i < 3; i += 1) nodes.push({ path: `${parent}/l${i}`, kind: 'child_task', name: `l${i}` });
    nodes.push({ path: `${parent}/s`, kind: 'supervisor', name: 's' });
    parent = `${parent}/s`;
  }
  const layout = layoutTree({ root: nodes[0], nodes, edges: [] });
  assert.equal(layout.positions.size, nodes.length);
  assert.deepEqual(overlaps(layout.positions), []);
});

test('edges: comb for auto-placed children, curves for moved ones, dashed dependencies', () => {
  const topo = syntheticTopology(20);
  const layout = layoutTree(topo);
  const auto = edgePaths(layout, layout.positions, new Map());
  assert.match(auto, /^M/);
  assert.equal(auto.includes('C'), false, 'comb edges are straight segments');
  const positions = new Map(layout.positions);
  positions.set('/root/w3', { x: 900, y: 700 });
  const moved = edgePaths(layout, positions, new Map([['/root/w3', positions.get('/root/w3')]]));
  assert.equal((moved.match(/C/g) || []).length, 1);
  assert.match(moved, /900 715/, 'the curve ends at the moved node');
  const deps = dependencyPaths(topo, layout.positions);
  assert.equal(deps.length, 1);
  assert.equal(deps[0].id, 'dependency:/root/w1->/root/w0');
  // the arrow (marker-end) points at the dependent: it reads "w1 is needed by w0"
  const w0 = layout.positions.get('/root/w0');
  assert.ok(deps[0].d.endsWith(`${r(w0.x + GEOMETRY.nodeW + 2)} ${r(w0.y + GEOMETRY.nodeH / 2)}`), deps[0].d);
});

test('fit scales a box into the viewport and centres it', () => {
  const t = fitTransform({ x: 0, y: 0, width: 1000, height: 500 }, 500, 500, 0, 0, 0.5);
  assert.equal(t.k, 0.5);
  assert.equal(t.x, 0);
  assert.equal(t.y, 125);
  assert.equal(fitTransform({ x: 0, y: 0, width: 10, height: 10 }, 500, 500).k, 1.25, 'small trees are not blown up');
});

test('fit keeps labels readable: a tree too large for the view is shown from its top left', () => {
  const box = { x: 20, y: 10, width: 2000, height: 300 };
  const t = fitTransform(box, 500, 400, 16);
  assert.equal(t.k, MIN_FIT_SCALE, 'not shrunk to a quarter');
  assert.equal(t.x, 16 - box.x * t.k, 'too wide: from the left edge');
  assert.equal(t.y, (400 - box.height * t.k) / 2 - box.y * t.k, 'fits in height: centred');
});

test('zooming keeps the point under the cursor fixed and is clamped', () => {
  const t0 = { k: 1, x: 10, y: 20 };
  const t1 = zoomAt(t0, 2, 100, 100);
  const before = [(100 - t0.x) / t0.k, (100 - t0.y) / t0.k];
  const after = [(100 - t1.x) / t1.k, (100 - t1.y) / t1.k];
  assert.deepEqual(after, before);
  assert.equal(zoomAt({ k: 3, x: 0, y: 0 }, 10, 0, 0).k, 4);
  assert.equal(zoomAt({ k: 0.1, x: 0, y: 0 }, 0.01, 0, 0).k, 0.05);
});

test('the bounding box covers every node and leaves room for dependency arcs', () => {
  const topo = syntheticTopology(4);
  const { positions } = layoutTree(topo);
  const box = boundingBox(positions, topo);
  const xs = [...positions.values()].map((p) => p.x);
  const ys = [...positions.values()].map((p) => p.y);
  assert.equal(box.x, Math.min(...xs));
  assert.equal(box.y, Math.min(...ys));
  assert.equal(box.height, Math.max(...ys) + GEOMETRY.nodeH - box.y);
  const plain = boundingBox(positions, { ...topo, edges: topo.edges.filter((e) => e.kind !== 'dependency') });
  assert.equal(box.width, plain.width + 90);
  assert.equal(plain.width, Math.max(...xs) + GEOMETRY.nodeW - box.x);
  assert.deepEqual(boundingBox(new Map(), topo), { x: 0, y: 0, width: 0, height: 0 });
});

test('revealing a node off screen centres it; one in view stays put', () => {
  const t = { k: 2, x: 0, y: 0 };
  assert.equal(revealTransform(t, { x: 10, y: 10 }, 800, 600), null);
  const moved = revealTransform(t, { x: 1000, y: 500 }, 800, 600);
  assert.equal(moved.k, 2);
  assert.equal(moved.x + (1000 + GEOMETRY.nodeW / 2) * 2, 400, 'node centre at the viewport centre');
  assert.equal(moved.y + (500 + GEOMETRY.nodeH / 2) * 2, 300);
  assert.notEqual(revealTransform({ k: 1, x: 50, y: 0 }, { x: -60, y: 0 }, 800, 600), null, 'partly left of the view');
  assert.equal(revealTransform({ k: 1, x: 50, y: 0 }, { x: -50, y: 0 }, 800, 600), null, 'touching the left edge');
});
