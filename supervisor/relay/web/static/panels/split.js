// The resizable split between the tree (with node detail) above and the timeline below: a
// separator dragged with the pointer or moved with the arrow keys, Home and End. The share of
// the tree is kept in `prefs` (storage.js) and set as the layout's --split.

import { elements } from '../dom.js';

export const SPLIT = Object.freeze({ min: 20, max: 80, initial: 46, step: 4 }); // % of the height

export function clampSplit(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return SPLIT.initial;
  return Math.round(Math.min(SPLIT.max, Math.max(SPLIT.min, n)));
}

export class SplitPanel {
  // onResize() after each change (the timeline and the tree re-measure).
  constructor(root, { prefs, onResize = () => {} }) {
    this.prefs = prefs;
    this.onResize = onResize;
    this.el = elements(root, ['layout', 'split']);
    this.value = clampSplit(prefs.get('split') ?? SPLIT.initial);
    const { split } = this.el;
    split.addEventListener('keydown', (ev) => this._onKey(ev));
    split.addEventListener('pointerdown', (ev) => this._onPointerDown(ev));
    this.apply(this.value, { save: false });
  }

  // Sets the tree's share (percent of the layout's height).
  apply(value, { save = true } = {}) {
    this.value = clampSplit(value);
    this.el.layout.style.setProperty('--split', `${this.value}%`);
    this.el.split.setAttribute('aria-valuenow', String(this.value));
    if (save) this.prefs.set('split', String(this.value));
    this.onResize();
  }

  _onKey(ev) {
    const moves = { ArrowUp: this.value - SPLIT.step, ArrowDown: this.value + SPLIT.step, Home: SPLIT.min, End: SPLIT.max };
    if (!(ev.key in moves)) return;
    ev.preventDefault();
    this.apply(moves[ev.key]);
  }

  _onPointerDown(ev) {
    if (ev.button !== 0) return;
    ev.preventDefault();
    const { split, layout } = this.el;
    split.setPointerCapture(ev.pointerId);
    const box = layout.getBoundingClientRect();
    const move = (e) => {
      if (box.height > 0) this.apply(((e.clientY - box.top) / box.height) * 100, { save: false });
    };
    const end = (e) => {
      split.removeEventListener('pointermove', move);
      split.removeEventListener('pointerup', end);
      split.removeEventListener('pointercancel', end);
      if (split.hasPointerCapture(e.pointerId)) split.releasePointerCapture(e.pointerId);
      this.apply(this.value);
    };
    split.addEventListener('pointermove', move);
    split.addEventListener('pointerup', end);
    split.addEventListener('pointercancel', end);
  }
}
