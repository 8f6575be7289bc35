// Timeline pane: the filtered rows of every target in a virtualised grid, live follow and
// its paused count, the row count and the detail of an opened row.

import { elements } from '../dom.js';
import { TimelineView } from '../filter.js';
import { t, tv } from '../i18n.js';
import { ROW_HEIGHT, Timeline } from '../timeline.js';

// A row's summary in the current language: event types and command outcomes translated, log
// lines as written.
export function rowSummary(row) {
  if (row.kind === 'event') {
    const text = `${tv('evt', row.type)} ${row.path ?? ''}`.trim();
    return row.notViaRelay ? `${text} · ${t('not_via_relay', { origin: row.raw.payload.origin })}` : text;
  }
  if (row.kind === 'result' || row.kind === 'audit') {
    const command = row.type && row.type !== 'command_result' ? tv('cmdw', row.type) : t('command');
    return `${command} ${row.path || ''} → ${tv('res', row.outcome)}`.replace(/\s+/g, ' ');
  }
  return row.summary;
}

export class TimelinePanel {
  // onOlder(): the timeline was scrolled to its top; onSearch(text): search the histories.
  constructor(root, { store, onOlder = () => {}, onSearch = () => {} }) {
    this.store = store;
    this.onOlder = onOlder;
    this.el = elements(root, ['timeline', 'follow-state', 'follow-resume', 'row-count', 'row-detail', 'row-detail-body', 'row-detail-close',
      'history-search-go', 'history-search', 'history-state']);
    this.view = new TimelineView(store); // the filtered rows
    this.pausedNew = 0; // rows arrived while follow is paused
    this.grid = new Timeline(this.el.timeline, {
      labels: {
        seq: (row) => t(row.kind === 'log' ? 'seq_log' : 'seq_event', { n: row.sequence }),
        kind: (k) => t(`kind_${k}`),
        severity: (s) => t(`sev_${s}`),
        summary: rowSummary,
      },
      targetName: (id) => (store.targets.get(id) || {}).displayName || id,
      onFollowChange: (on) => {
        if (on) this.pausedNew = 0;
        this.renderFollow();
      },
      onOpen: (row) => this._openRow(row),
      onTop: () => this._older(),
    });
    const search = () => {
      const text = this.el.historySearch.value.trim();
      if (!text) return;
      this.el.historyState.textContent = t('history_searching', { text });
      onSearch(text);
    };
    this.el.historySearchGo.addEventListener('click', search);
    this.el.historySearch.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter') return;
      ev.preventDefault(); // not the filter form's submit
      search();
    });
    this.el.followResume.addEventListener('click', () => {
      this.grid.setFollowing(true);
      this.el.timeline.focus();
    });
    this.el.rowDetailClose.addEventListener('click', () => {
      this.el.rowDetail.hidden = true;
      this.el.timeline.focus();
    });
  }

  // Applies one frame of store changes.
  update(changes) {
    const top = changes.older ? this._topRow() : null;
    if (changes.history) this.renderHistoryState();
    if (!this.view.update(changes)) return;
    if (!this.grid.following) this.pausedNew += changes.rows.length;
    this.grid.setRows(this.view.rows);
    if (top) this.grid.shiftDown(this.view.rows.indexOf(top.row) - top.index);
    this.renderRowCount();
  }

  // The row at the top of the viewport and its index, to keep it there when rows go in above.
  _topRow() {
    const index = Math.floor(this.el.timeline.scrollTop / ROW_HEIGHT);
    const row = this.grid.rows[index];
    return row ? { row, index } : null;
  }

  _older() {
    this.onOlder();
    this.renderHistoryState();
  }

  // The line under the search box: reading, done (nothing older is kept), or loaded.
  renderHistoryState() {
    const state = this.store.historyState();
    const key = state === 'loading' ? 'history_loading' : state === 'oldest' ? 'history_oldest' : 'history_loaded';
    if (state === 'more' && !this.el.historyState.textContent) return; // nothing asked yet
    this.el.historyState.textContent = t(key);
  }

  // A view filter from filter.js's makeViewFilter.
  setFilter(filter) {
    this.view.setFilter(filter);
    this.grid.setRows(this.view.rows);
    this.renderRowCount();
  }

  render() {
    this.grid.render();
  }

  // Redraws every text after a language change.
  relabel() {
    this.grid.relabel();
    this.renderRowCount();
    this.renderFollow();
  }

  renderFollow() {
    const { el, grid } = this;
    el.followState.textContent = grid.following ? t('following') : t('paused_follow', { n: this.pausedNew });
    el.followState.className = grid.following ? 'live' : 'paused';
    el.followResume.hidden = grid.following;
  }

  renderRowCount() {
    let total = 0;
    for (const tg of this.store.targets.values()) total += tg.older.length + tg.events.length + tg.logs.length + tg.audit.length + tg.results.length;
    this.el.rowCount.textContent = t('rows', { shown: this.view.rows.length, total });
    if (!this.grid.following) this.renderFollow();
  }

  _openRow(row) {
    this.el.rowDetail.hidden = false;
    this.el.rowDetailBody.textContent = JSON.stringify(row.raw, null, 2);
  }
}
