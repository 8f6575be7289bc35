// Dashboard session protocol (CONTRACTS.md §3): message builders, validation and the
// reconnecting WebSocket session. Pure except RelayConnection, whose I/O is injected.

import { COMMANDS, DANGEROUS_COMMANDS, DRY_RUN_COMMANDS } from './vocabulary.js';

// Commands that must carry confirmed: true (§4).
export const DANGEROUS = new Set(DANGEROUS_COMMANDS);
// Message types the relay may send; anything else is reported as a diagnostic.
export const SERVER_TYPES = new Set([
  'server_hello', 'target_list', 'state', 'event', 'log', 'state_delta', 'dropped_count',
  'connection_state', 'command_result', 'audit_event', 'error', 'history_page',
]);

export function isDangerous(command) {
  return DANGEROUS.has(command);
}

// Commands that act on the whole tree: no child path.
export const TREE_COMMANDS = new Set(['shutdown_tree', 'reload_config']);

// Commands that take dry_run: true (report what they would do; no confirmation needed).
export function hasDryRun(command) {
  return DRY_RUN_COMMANDS.includes(command);
}

// Same origin as the page, path /supervisor: the page's client certificate covers the socket.
export function websocketUrl(location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/supervisor`;
}

export function clientHello(clientStoreId) {
  if (typeof clientStoreId !== 'string' || !clientStoreId.trim()) {
    throw new Error('client_store_id must be a non-blank string');
  }
  return { type: 'client_hello', client_store_id: clientStoreId, resume_cursor: {} };
}

// A random (version 4) UUID for command and client store ids.
export function uuid(cryptoImpl = globalThis.crypto) {
  if (cryptoImpl.randomUUID) return cryptoImpl.randomUUID();
  const b = cryptoImpl.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export class CommandInputError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// Builds a §3 command message; never includes requested_by (the relay sets it).
export function buildCommand({
  commandId, targetId, command, childPath = null, childManifest = undefined,
  reason, confirmed = false, correlationId = null, dryRun = false,
}) {
  if (!commandId || !String(commandId).trim()) throw new CommandInputError('invalid_message_schema', 'blank command_id');
  if (!targetId) throw new CommandInputError('target_not_bound', 'no target selected');
  if (!COMMANDS.includes(command)) throw new CommandInputError('unsupported_command', `unknown command ${command}`);
  if (typeof reason !== 'string' || !reason.trim()) throw new CommandInputError('empty_reason', 'a reason is required');
  if (dryRun && !hasDryRun(command)) throw new CommandInputError('invalid_message_schema', `${command} has no dry run`);
  if (isDangerous(command) && confirmed !== true && !dryRun) {
    throw new CommandInputError('confirmation_required', `${command} requires confirmation`);
  }
  if (!TREE_COMMANDS.has(command) && command !== 'add_child' && !childPath) {
    throw new CommandInputError('invalid_message_schema', `${command} needs a child path`);
  }
  const target = { child_path: childPath || null };
  if (childManifest !== undefined && childManifest !== null && childManifest !== '') {
    target.child_manifest = childManifest;
  }
  const msg = {
    type: 'command',
    command_id: String(commandId),
    correlation_id: correlationId,
    target_id: targetId,
    command,
    target,
    reason: reason.trim(),
    confirmed: isDangerous(command) && !dryRun ? true : Boolean(confirmed),
  };
  if (dryRun) msg.dry_run = true;
  return msg;
}

// Manifest text for add_child: a JSON object when it parses as one, the raw (YAML) text otherwise.
export function parseManifest(text) {
  const trimmed = (text || '').trim();
  if (!trimmed) return undefined;
  if (trimmed.startsWith('{')) {
    try {
      const value = JSON.parse(trimmed);
      if (value && typeof value === 'object' && !Array.isArray(value)) return value;
    } catch { /* fall through: send as text */ }
  }
  return trimmed;
}

export function emptyFilter() {
  return {
    target_ids: [], child_paths: [], lifecycle_states: [], event_types: [],
    severities: [], sequence_min: null, correlation_id: null,
  };
}

const LIST_KEYS = ['target_ids', 'child_paths', 'lifecycle_states', 'event_types', 'severities'];

// Canonical contract filter: trimmed, de-duplicated, sorted lists; null for empty scalars.
export function normalizeFilter(cond = {}) {
  const out = emptyFilter();
  for (const key of LIST_KEYS) {
    const values = Array.isArray(cond[key]) ? cond[key] : [];
    out[key] = [...new Set(values.map((v) => String(v).trim()).filter(Boolean))].sort();
  }
  const min = cond.sequence_min;
  out.sequence_min = min === null || min === undefined || min === '' || !Number.isFinite(Number(min))
    ? null : Math.max(0, Math.floor(Number(min)));
  const cid = cond.correlation_id == null ? '' : String(cond.correlation_id).trim();
  out.correlation_id = cid || null;
  return out;
}

export function filterMessage(cond) {
  return { type: 'log_event_filter_conditions', ...normalizeFilter(cond) };
}

export function filtersEqual(a, b) {
  return JSON.stringify(normalizeFilter(a)) === JSON.stringify(normalizeFilter(b));
}

// Splits a comma/space separated text field into a list.
export function splitList(text) {
  return String(text || '').split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

// Exponential reconnect delay with jitter: base * 2^attempt, capped, +/- jitter ratio.
export function backoffDelay(attempt, { baseMs = 500, maxMs = 15000, jitter = 0.2 } = {}, random = Math.random) {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  const spread = raw * jitter * (random() * 2 - 1);
  return Math.max(baseMs / 2, Math.min(maxMs, Math.round(raw + spread)));
}

// Parses one frame; returns {msg} or {error} (never throws).
export function parseFrame(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return { error: 'invalid_json' };
  }
  if (!msg || typeof msg !== 'object' || Array.isArray(msg) || typeof msg.type !== 'string') {
    return { error: 'missing_type' };
  }
  if (!SERVER_TYPES.has(msg.type)) return { error: 'unknown_type', msg };
  return { msg };
}

// Short display form of a client identity: the scheme plus the first 12 hex digits.
export function shortIdentity(identity) {
  if (!identity) return '';
  const [scheme, value] = identity.includes(':') ? identity.split(/:(.*)/s) : ['', identity];
  if (scheme === 'mtls_cert_fingerprint') return `sha256:${value.slice(0, 12)}…`;
  return identity.length > 32 ? `${identity.slice(0, 31)}…` : identity;
}

// Reconnecting session: waits for server_hello, answers client_hello, re-sends the
// filter when it differs from the relay's, backs off between attempts.
// Statuses: connecting | handshaking | established | waiting (retry scheduled) | offline.
export class RelayConnection {
  constructor({
    url, clientStoreId, WebSocketImpl, timers = globalThis, random = Math.random,
    onMessage = () => {}, onStatus = () => {}, onSent = () => {}, getFilter = () => null,
    backoff = {},
  }) {
    this.url = url;
    this.clientStoreId = clientStoreId;
    this.WebSocketImpl = WebSocketImpl;
    this.timers = timers;
    this.random = random;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.onSent = onSent;
    this.getFilter = getFilter;
    this.backoff = backoff;
    this.attempt = 0;
    this.ws = null;
    this.retryTimer = null;
    this.status = 'offline';
    this.stopped = true;
    this.retryAt = null;
  }

  start() {
    this.stopped = false;
    this._open();
  }

  stop() {
    this.stopped = true;
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this._setStatus('offline', {});
  }

  get established() {
    return this.status === 'established';
  }

  // Sends a message on an established session; returns false when not connected.
  send(msg) {
    if (!this.ws || this.status !== 'established') return false;
    this.ws.send(JSON.stringify(msg));
    this.onSent(msg);
    return true;
  }

  _setStatus(status, detail) {
    this.status = status;
    this.onStatus(status, { attempt: this.attempt, ...detail });
  }

  _open() {
    this.retryTimer = null;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (err) {
      this._scheduleRetry(String(err && err.message || err));
      return;
    }
    this.ws = ws;
    this._setStatus('connecting', {});
    ws.onopen = () => {
      if (this.ws === ws) this._setStatus('handshaking', {});
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this._handleFrame(ev.data);
    };
    ws.onerror = () => { /* the close event that follows carries the outcome */ };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this._scheduleRetry(ev && ev.code ? `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})` : 'closed');
    };
  }

  _handleFrame(text) {
    const parsed = parseFrame(text);
    if (parsed.error) {
      this.onMessage(null, parsed);
      return;
    }
    const msg = parsed.msg;
    if (msg.type === 'server_hello' && this.status !== 'established') {
      this.ws.send(JSON.stringify(clientHello(this.clientStoreId)));
      this.onSent(clientHello(this.clientStoreId));
      this._setStatus('established', {});
      this.onMessage(msg, parsed);
      const wanted = this.getFilter();
      if (wanted && !filtersEqual(wanted, msg.log_event_filter_conditions || emptyFilter())) {
        this.send(filterMessage(wanted));
      }
      return;
    }
    // A full target list means the session works: later failures start from a short delay.
    if (msg.type === 'target_list') this.attempt = 0;
    this.onMessage(msg, parsed);
  }

  _scheduleRetry(reason) {
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this._setStatus('waiting', { reason, delay });
    this.retryTimer = this.timers.setTimeout(() => this._open(), delay);
  }
}
