// What the dashboard calls "failed": a child is *failing* when it is in the failed state, or
// when its last exit was a failure and it has not run for STABLE_RUN_MS since (a child that
// fails every few seconds passes through `failed` to `restarting` between two frames, yet it
// is failing all along). *Recent failures* are the failures of the last FAILURE_WINDOW_MS.
// Times are the browser's milliseconds; pure logic, no DOM.

export const STABLE_RUN_MS = 60 * 1000;
export const FAILURE_WINDOW_MS = 15 * 60 * 1000;
// Failure times kept per target for the recent count; the oldest go first.
export const FAILURE_TIMES_KEPT = 1000;

// One target's failures: per child the last failure and the start of its last run.
export class FailureLedger {
  constructor() {
    this.nodes = new Map(); // path -> {failedAt, runStart, runEnd} (ms or null)
    this.times = []; // failure times, ascending, at most FAILURE_TIMES_KEPT
  }

  _node(path) {
    let n = this.nodes.get(path);
    if (!n) {
      n = { failedAt: null, runStart: null, runEnd: null };
      this.nodes.set(path, n);
    }
    return n;
  }

  // A failure of `path` at `at`; `counted: false` when its time is unknown (a state that
  // shows the child failed): it makes the child failing but adds nothing to the recent count.
  failed(path, at, { counted = true } = {}) {
    const n = this._node(path);
    n.failedAt = Math.max(n.failedAt ?? -Infinity, at);
    if (!counted) return;
    let i = this.times.length;
    while (i > 0 && this.times[i - 1] > at) i -= 1;
    this.times.splice(i, 0, at);
    if (this.times.length > FAILURE_TIMES_KEPT) this.times.shift();
  }

  // `path` started running at `at`.
  running(path, at) {
    const n = this._node(path);
    if (n.runStart === null || at > n.runStart) {
      n.runStart = at;
      n.runEnd = null;
    }
  }

  // `path` stopped running at `at` (any state but running).
  left(path, at) {
    const n = this.nodes.get(path);
    if (n && n.runStart !== null && n.runEnd === null && at >= n.runStart) n.runEnd = at;
  }

  knows(path) {
    const n = this.nodes.get(path);
    return Boolean(n && n.failedAt !== null);
  }

  // True when `path` (whose lifecycle is `lifecycle`) counts as failed at `now`.
  isFailing(path, lifecycle, now) {
    if (lifecycle === 'failed') return true;
    const n = this.nodes.get(path);
    if (!n || n.failedAt === null) return false;
    if (n.runStart === null || n.runStart < n.failedAt) return true;
    const end = lifecycle === 'running' || n.runEnd === null ? now : n.runEnd;
    return end - n.runStart < STABLE_RUN_MS;
  }

  // Failures in the FAILURE_WINDOW_MS before `now`.
  recent(now) {
    const since = now - FAILURE_WINDOW_MS;
    while (this.times.length && this.times[0] <= since) this.times.shift();
    return this.times.length;
  }
}
