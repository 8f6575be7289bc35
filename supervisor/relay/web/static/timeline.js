// Virtualised timeline: a fixed pool of row elements positioned over a tall spacer, so only
// the visible rows exist in the DOM. Follows the newest row until the user scrolls up.

export const ROW_HEIGHT = 26;

// Indices [start, end) of the rows to render for a scroll position, with overscan.
export function visibleRange(scrollTop, viewportHeight, rowHeight, count, overscan = 6) {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const start = Math.max(0, first - overscan);
  const end = Math.min(count, first + Math.ceil(viewportHeight / rowHeight) + overscan + 1);
  return [start, Math.max(start, end)];
}

// At the bottom (within one row): live follow stays on.
export function isAtBottom(scrollTop, clientHeight, scrollHeight, slack = ROW_HEIGHT) {
  return scrollTop + clientHeight >= scrollHeight - slack;
}

const pad = (n, width = 2) => String(n).padStart(width, '0');

// Local time of day with milliseconds from an RFC 3339 timestamp (the wire's UTC); text
// that is no timestamp is shown as it is. utcTime gives the UTC form for a hover title.
export function shortTime(iso) {
  if (!iso || typeof iso !== 'string') return '';
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function utcTime(iso) {
  return typeof iso === 'string' && !Number.isNaN(Date.parse(iso)) ? `${iso} (UTC)` : '';
}

const COLUMNS = ['seq', 'kind', 'sev', 'target', 'summary', 'detail', 'time'];

export class Timeline {
  // host: scrollable element (role grid); labels: {seq(row), kind(k), severity(s),
  // summary(row)} for the translated cells; onFollowChange(following); onOpen(row) when a row
  // is activated. The active row is the grid's aria-activedescendant, with aria-selected.
  constructor(host, {
    labels, onFollowChange = () => {}, onOpen = () => {}, onTop = () => {}, targetName = (id) => id,
  }) {
    this.host = host;
    this.onTop = onTop;
    this.labels = labels;
    this.onFollowChange = onFollowChange;
    this.onOpen = onOpen;
    this.targetName = targetName;
    this.rows = [];
    this.following = true;
    this.active = -1;
    this.pool = [];
    this.spacer = host.ownerDocument.createElement('div');
    this.spacer.className = 'tl-spacer';
    this.layer = host.ownerDocument.createElement('div');
    this.layer.className = 'tl-layer';
    this.spacer.appendChild(this.layer);
    host.appendChild(this.spacer);
    host.addEventListener('scroll', () => this._onScroll(), { passive: true });
    host.addEventListener('keydown', (ev) => this._onKey(ev));
    host.addEventListener('click', (ev) => {
      const el = ev.target.closest('.tl-row');
      if (el) this._activate(Number(el.dataset.index), true);
    });
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  setFollowing(on) {
    if (this.following === on) return;
    this.following = on;
    this.onFollowChange(on);
    if (on) this.render();
  }

  // Re-renders the visible window; call once per animation frame at most.
  render() {
    const n = this.rows.length;
    this.spacer.style.height = `${n * ROW_HEIGHT}px`;
    this.host.setAttribute('aria-rowcount', String(n));
    if (this.following) {
      const bottom = Math.max(0, n * ROW_HEIGHT - this.host.clientHeight);
      if (Math.abs(this.host.scrollTop - bottom) > 1) this.host.scrollTop = bottom;
    }
    const [start, end] = visibleRange(this.host.scrollTop, this.host.clientHeight || 400, ROW_HEIGHT, n);
    const needed = end - start;
    while (this.pool.length < needed) this.pool.push(this._makeRow());
    let activeEl = null;
    for (let i = 0; i < this.pool.length; i += 1) {
      const el = this.pool[i];
      if (i < needed) {
        this._fill(el, start + i);
        if (!el.isConnected) this.layer.appendChild(el);
        if (start + i === this.active) activeEl = el;
      } else if (el.isConnected) {
        el.remove();
      }
    }
    if (activeEl) this.host.setAttribute('aria-activedescendant', activeEl.id);
    else this.host.removeAttribute('aria-activedescendant');
  }

  _makeRow() {
    const doc = this.host.ownerDocument;
    const el = doc.createElement('div');
    el.className = 'tl-row';
    el.id = `${this.host.id || 'timeline'}-row-${this.pool.length}`;
    el.setAttribute('role', 'row');
    el.cells = COLUMNS.map((c) => {
      const cell = doc.createElement('span');
      cell.className = `tl-c tl-${c}`;
      cell.setAttribute('role', 'gridcell');
      el.appendChild(cell);
      return cell;
    });
    return el;
  }

  _fill(el, index) {
    const row = this.rows[index];
    if (el.rowRef === row && el.dataset.index === String(index) && el.activeFlag === (index === this.active)) return;
    el.rowRef = row;
    el.activeFlag = index === this.active;
    el.dataset.index = String(index);
    el.style.transform = `translateY(${index * ROW_HEIGHT}px)`;
    el.setAttribute('aria-rowindex', String(index + 1));
    el.className = `tl-row sev-${row.severity} kind-${row.kind}${index % 2 ? ' odd' : ''}${index === this.active ? ' active' : ''}`;
    el.setAttribute('aria-selected', String(index === this.active));
    const c = el.cells;
    const summary = this.labels.summary(row);
    c[0].textContent = row.sequence === null || row.sequence === undefined ? '' : this.labels.seq(row);
    c[1].textContent = this.labels.kind(row.kind);
    c[2].textContent = this.labels.severity(row.severity);
    c[3].textContent = this.targetName(row.targetId);
    c[4].textContent = summary;
    c[5].textContent = row.detail;
    c[6].textContent = shortTime(row.time);
    c[6].title = utcTime(row.time);
    el.title = summary;
  }

  // Forces every pooled row to refresh (after a language change).
  relabel() {
    for (const el of this.pool) el.rowRef = null;
    this.render();
  }

  _onScroll() {
    // Growing the spacer never fires scroll events, so any scroll position away from the
    // bottom was the user's doing: pause; back at the bottom: follow again.
    this.setFollowing(isAtBottom(this.host.scrollTop, this.host.clientHeight, this.host.scrollHeight));
    this.render();
    // at the top of what is buffered: older rows may be in the targets' histories
    if (this.host.scrollTop <= 0 && this.rows.length && !this.following) this.onTop();
  }

  // Keeps the row at the top of the viewport in place after `added` rows went in above it.
  shiftDown(added) {
    if (added > 0 && !this.following) {
      this.host.scrollTop += added * ROW_HEIGHT;
      this.render();
    }
  }

  _activate(index, open) {
    if (index < 0 || index >= this.rows.length) return;
    this.active = index;
    const top = index * ROW_HEIGHT;
    if (top < this.host.scrollTop) this.host.scrollTop = top;
    else if (top + ROW_HEIGHT > this.host.scrollTop + this.host.clientHeight) {
      this.host.scrollTop = top + ROW_HEIGHT - this.host.clientHeight;
    }
    this.render();
    if (open) this.onOpen(this.rows[index]);
  }

  // Keyboard: arrows / page keys move the active row, Enter opens it, End resumes follow.
  _onKey(ev) {
    const page = Math.max(1, Math.floor(this.host.clientHeight / ROW_HEIGHT) - 1);
    const last = this.rows.length - 1;
    let next = null;
    if (ev.key === 'ArrowDown') next = Math.min(last, this.active + 1);
    else if (ev.key === 'ArrowUp') next = Math.max(0, this.active < 0 ? last : this.active - 1);
    else if (ev.key === 'PageDown') next = Math.min(last, this.active + page);
    else if (ev.key === 'PageUp') next = Math.max(0, this.active - page);
    else if (ev.key === 'Home') next = 0;
    else if (ev.key === 'End') {
      ev.preventDefault();
      this.active = last;
      this.setFollowing(true);
      this.render();
      return;
    } else if (ev.key === 'Enter' && this.active >= 0) {
      ev.preventDefault();
      this.onOpen(this.rows[this.active]);
      return;
    } else return;
    ev.preventDefault();
    if (next < last) this.setFollowing(false);
    this._activate(next, false);
  }
}
