// What the dashboard remembers in the browser profile: preferences, the selected target,
// the client store id and hand-placed node positions. The Storage object is injected.

export const PREFIX = 'supervisor-dashboard.';

// A Storage-like object kept in memory, for a profile whose storage is disabled.
export function memoryStorage() {
  const mem = new Map();
  return { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
}

// The window's localStorage when it works, else storage for this page only.
export function openStorage(win) {
  try {
    win.localStorage.setItem(`${PREFIX}probe`, '1');
    win.localStorage.removeItem(`${PREFIX}probe`);
    return win.localStorage;
  } catch {
    return memoryStorage();
  }
}

// Preferences and ids under one prefix.
export class Preferences {
  constructor(storage, prefix = PREFIX) {
    this.storage = storage;
    this.prefix = prefix;
  }

  get(name) {
    return this.storage.getItem(this.prefix + name);
  }

  set(name, value) {
    this.storage.setItem(this.prefix + name, value);
  }

  // One id per browser profile, so the relay can recognise a returning dashboard.
  clientStoreId(newId) {
    let id = this.get('client_store_id');
    if (!id) {
      id = newId();
      this.set('client_store_id', id);
    }
    return id;
  }
}

// Hand-placed node positions, per target.
export class PositionMemory {
  constructor(storage, prefix = `${PREFIX}positions.`) {
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
