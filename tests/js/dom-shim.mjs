// A small DOM for running the dashboard's panels under node: the page's own index.html is
// parsed into it, so panel tests find exactly the elements the browser has. It models what
// the panels use (tree edits, attributes, classList, dataset, form controls, events with
// bubbling, simple selectors, <dialog>), not layout: sizes are 0 unless a test sets them.
import { readFileSync } from 'node:fs';
import { STATIC } from './helpers.mjs';

const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr']);
const RAW_TEXT = new Set(['script', 'style']);
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function decode(text) {
  return text.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
    return ENTITIES[e] ?? m;
  });
}

export class ShimEvent {
  constructor(type, { bubbles = false, cancelable = true, ...props } = {}) {
    this.type = type;
    this.bubbles = bubbles;
    this.cancelable = cancelable;
    this.defaultPrevented = false;
    this.target = null;
    this.currentTarget = null;
    Object.assign(this, props);
  }

  preventDefault() {
    if (this.cancelable) this.defaultPrevented = true;
  }
}

export class ShimNode {
  constructor(doc) {
    this.ownerDocument = doc;
    this.parentNode = null;
    this.childNodes = [];
    this._listeners = new Map();
  }

  get firstChild() {
    return this.childNodes[0] ?? null;
  }

  get parentElement() {
    return this.parentNode instanceof ShimElement ? this.parentNode : null;
  }

  get children() {
    return this.childNodes.filter((n) => n instanceof ShimElement);
  }

  get isConnected() {
    let n = this;
    while (n.parentNode) n = n.parentNode;
    return n instanceof ShimDocument;
  }

  get textContent() {
    return this.childNodes.map((n) => n.textContent).join('');
  }

  set textContent(value) {
    this.replaceChildren(...(value === '' || value === null || value === undefined ? [] : [String(value)]));
  }

  _adopt(node) {
    const n = typeof node === 'string' ? this.ownerDocument.createTextNode(node) : node;
    if (n.parentNode) n.parentNode.removeChild(n);
    n.parentNode = this;
    return n;
  }

  appendChild(node) {
    const n = this._adopt(node);
    this.childNodes.push(n);
    this._childrenChanged();
    return n;
  }

  insertBefore(node, before) {
    if (before === null || before === undefined) return this.appendChild(node);
    const n = this._adopt(node);
    const i = this.childNodes.indexOf(before);
    if (i < 0) throw new Error('not a child');
    this.childNodes.splice(i, 0, n);
    this._childrenChanged();
    return n;
  }

  removeChild(node) {
    const i = this.childNodes.indexOf(node);
    if (i < 0) throw new Error('not a child');
    this.childNodes.splice(i, 1);
    node.parentNode = null;
    this._childrenChanged();
    return node;
  }

  remove() {
    if (this.parentNode) this.parentNode.removeChild(this);
  }

  replaceChildren(...nodes) {
    for (const c of this.childNodes) c.parentNode = null;
    this.childNodes = [];
    for (const n of nodes) this.childNodes.push(this._adopt(n));
    this._childrenChanged();
  }

  _childrenChanged() {}

  addEventListener(type, fn, options = {}) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    const once = typeof options === 'object' && options.once;
    const listener = once ? (...args) => { this.removeEventListener(type, listener); fn.apply(this, args); } : fn;
    this._listeners.get(type).push(listener);
  }

  removeEventListener(type, fn) {
    const list = this._listeners.get(type) || [];
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
  }

  dispatchEvent(ev) {
    ev.target = ev.target || this;
    const path = [];
    for (let n = this; n; n = n.parentNode) path.push(n);
    for (const node of ev.bubbles ? path : [this]) {
      ev.currentTarget = node;
      for (const fn of [...(node._listeners.get(ev.type) || [])]) fn.call(node, ev);
      const handler = node[`on${ev.type}`];
      if (typeof handler === 'function') handler.call(node, ev);
    }
    ev.currentTarget = null;
    return !ev.defaultPrevented;
  }

  // Descendant elements in document order.
  *_descendants() {
    for (const c of this.childNodes) {
      if (c instanceof ShimElement) {
        yield c;
        yield* c._descendants();
      }
    }
  }

  querySelectorAll(selector) {
    const sel = parseSelector(selector);
    return [...this._descendants()].filter((el) => matchesSelector(el, sel));
  }

  querySelector(selector) {
    const sel = parseSelector(selector);
    for (const el of this._descendants()) if (matchesSelector(el, sel)) return el;
    return null;
  }
}

export class ShimText extends ShimNode {
  constructor(doc, data) {
    super(doc);
    this.data = String(data);
  }

  get textContent() {
    return this.data;
  }

  set textContent(value) {
    this.data = String(value);
  }
}

const camelToData = (prop) => `data-${prop.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

export class ShimElement extends ShimNode {
  constructor(doc, tag) {
    super(doc);
    this.localName = tag.toLowerCase();
    this.tagName = this.localName.toUpperCase();
    this.attributes = new Map();
    this.style = { setProperty(name, value) { this[name] = String(value); }, getPropertyValue(name) { return this[name] ?? ''; } };
    this.scrollTop = 0;
    this.rect = { width: 0, height: 0 }; // what getBoundingClientRect reports
    this.clientHeight = 0;
    const el = this;
    this.dataset = new Proxy({}, {
      get: (_, prop) => (typeof prop === 'string' ? el.getAttribute(camelToData(prop)) ?? undefined : undefined),
      set: (_, prop, value) => {
        el.setAttribute(camelToData(prop), value);
        return true;
      },
    });
    this.classList = {
      contains: (c) => el._classes().includes(c),
      add: (...cs) => { el.className = [...new Set([...el._classes(), ...cs])].join(' '); },
      remove: (...cs) => { el.className = el._classes().filter((x) => !cs.includes(x)).join(' '); },
      toggle: (c, force) => {
        const on = force === undefined ? !el.classList.contains(c) : Boolean(force);
        if (on) el.classList.add(c);
        else el.classList.remove(c);
        return on;
      },
    };
  }

  _classes() {
    return (this.getAttribute('class') || '').split(/\s+/).filter(Boolean);
  }

  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }

  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }

  removeAttribute(name) {
    this.attributes.delete(name);
  }

  hasAttribute(name) {
    return this.attributes.has(name);
  }

  toggleAttribute(name, force) {
    const on = force === undefined ? !this.hasAttribute(name) : Boolean(force);
    if (on) this.setAttribute(name, '');
    else this.removeAttribute(name);
    return on;
  }

  get id() { return this.getAttribute('id') || ''; }

  set id(v) { this.setAttribute('id', v); }

  get className() { return this.getAttribute('class') || ''; }

  set className(v) { this.setAttribute('class', v); }

  get title() { return this.getAttribute('title') || ''; }

  set title(v) { this.setAttribute('title', v); }

  get hidden() { return this.hasAttribute('hidden'); }

  set hidden(v) { this.toggleAttribute('hidden', Boolean(v)); }

  get disabled() { return this.hasAttribute('disabled'); }

  set disabled(v) { this.toggleAttribute('disabled', Boolean(v)); }

  get open() { return this.hasAttribute('open'); }

  get type() { return this.getAttribute('type') || (this.localName === 'button' ? 'submit' : 'text'); }

  get tabIndex() {
    const v = this.getAttribute('tabindex');
    if (v !== null) return Number(v);
    return ['a', 'button', 'input', 'select', 'textarea'].includes(this.localName) ? 0 : -1;
  }

  set tabIndex(v) { this.setAttribute('tabindex', v); }

  // Form controls: the current value and checkedness live apart from the attributes (which
  // hold the defaults form.reset() goes back to), as in a browser.
  get value() {
    if (this.localName === 'select') {
      const o = this.options.find((x) => x.selected);
      return o ? o.value : '';
    }
    if (this.localName === 'option') return this.getAttribute('value') ?? this.textContent;
    if (this.localName === 'textarea') return this._value ?? this.textContent;
    if (this._value !== undefined) return this._value;
    return this.getAttribute('value') ?? (this.type === 'checkbox' ? 'on' : '');
  }

  set value(v) {
    if (this.localName === 'select') {
      let found = false;
      for (const o of this.options) {
        o._selected = !found && o.value === String(v);
        if (o._selected) found = true;
      }
    } else if (this.localName === 'option') {
      this.setAttribute('value', v);
    } else {
      this._value = String(v);
    }
  }

  get checked() { return this._checked ?? this.hasAttribute('checked'); }

  set checked(v) { this._checked = Boolean(v); }

  get selected() { return this._selected ?? this.hasAttribute('selected'); }

  set selected(v) { this._selected = Boolean(v); }

  get options() { return [...this._descendants()].filter((e) => e.localName === 'option'); }

  // A single <select> with options and none selected selects its first one.
  _childrenChanged() {
    if (this.localName !== 'select') return;
    const options = this.options;
    if (options.length && !options.some((o) => o.selected)) options[0]._selected = true;
  }

  reset() {
    for (const el of this._descendants()) {
      el._value = undefined;
      el._checked = undefined;
      if (el.localName === 'option') el._selected = undefined;
    }
    for (const el of this._descendants()) el._childrenChanged();
    this.dispatchEvent(new ShimEvent('reset', { bubbles: true }));
  }

  set innerHTML(html) {
    this.replaceChildren(...parseHtml(this.ownerDocument, html));
  }

  // Focus moves: the element that had it gets a (non-bubbling) blur event.
  focus() {
    const doc = this.ownerDocument;
    const previous = doc.activeElement;
    if (previous === this) return;
    doc.activeElement = this;
    if (previous && previous !== doc.body) previous.dispatchEvent(new ShimEvent('blur'));
  }

  blur() {
    const doc = this.ownerDocument;
    if (doc.activeElement !== this) return;
    doc.activeElement = doc.body;
    this.dispatchEvent(new ShimEvent('blur'));
  }

  getBoundingClientRect() {
    return { x: 0, y: 0, left: 0, top: 0, ...this.rect, right: this.rect.width, bottom: this.rect.height };
  }

  get scrollHeight() {
    return Math.max(this.clientHeight, ...this.children.map((c) => Number.parseFloat(c.style.height) || 0));
  }

  setPointerCapture() {}

  hasPointerCapture() { return false; }

  releasePointerCapture() {}

  closest(selector) {
    const sel = parseSelector(selector);
    for (let n = this; n instanceof ShimElement; n = n.parentNode) if (matchesSelector(n, sel)) return n;
    return null;
  }

  // A user's click: a checkbox toggles (input and change follow), a submit button submits
  // its form, a button in a <form method="dialog"> closes the dialog with its value.
  click() {
    if (this.disabled) return;
    const isCheckbox = this.localName === 'input' && this.type === 'checkbox';
    if (isCheckbox) this.checked = !this.checked;
    const go = this.dispatchEvent(new ShimEvent('click', { bubbles: true }));
    if (isCheckbox) {
      this.dispatchEvent(new ShimEvent('input', { bubbles: true }));
      this.dispatchEvent(new ShimEvent('change', { bubbles: true }));
    }
    const form = this.closest('form');
    if (!go || this.localName !== 'button' || this.type !== 'submit' || !form) return;
    if (form.getAttribute('method') === 'dialog') {
      const dialog = form.closest('dialog');
      if (dialog) dialog.close(this.value);
      return;
    }
    form.dispatchEvent(new ShimEvent('submit', { bubbles: true }));
  }

  showModal() {
    this.setAttribute('open', '');
  }

  close(returnValue) {
    if (!this.open) return;
    if (returnValue !== undefined) this.returnValue = returnValue;
    this.removeAttribute('open');
    this.dispatchEvent(new ShimEvent('close'));
  }
}

export class ShimDocument extends ShimNode {
  constructor() {
    super(null);
    this.ownerDocument = this;
    this.title = '';
    this.documentElement = null;
    this.activeElement = null;
  }

  createElement(tag) {
    return new ShimElement(this, tag);
  }

  createElementNS(_ns, tag) {
    return new ShimElement(this, tag);
  }

  createTextNode(text) {
    return new ShimText(this, text);
  }

  get body() {
    return this.documentElement ? this.documentElement.querySelector('body') : null;
  }

  getElementById(id) {
    for (const el of this._descendants()) if (el.getAttribute('id') === id) return el;
    return null;
  }
}

// ---------- HTML ----------

const ATTR = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;

// Parses markup into nodes of `doc` (enough for index.html and the topology's SVG).
export function parseHtml(doc, html) {
  const top = doc.createElement('#fragment');
  const stack = [top];
  let i = 0;
  const text = (s) => {
    if (s) stack[stack.length - 1].appendChild(doc.createTextNode(decode(s)));
  };
  while (i < html.length) {
    const lt = html.indexOf('<', i);
    if (lt < 0) {
      text(html.slice(i));
      break;
    }
    text(html.slice(i, lt));
    if (html.startsWith('<!--', lt)) {
      i = html.indexOf('-->', lt) + 3;
      continue;
    }
    const gt = html.indexOf('>', lt);
    const inner = html.slice(lt + 1, gt);
    i = gt + 1;
    if (inner[0] === '!') continue; // doctype
    if (inner[0] === '/') {
      const name = inner.slice(1).trim().toLowerCase();
      const at = stack.map((e) => e.localName).lastIndexOf(name);
      if (at > 0) stack.length = at;
      continue;
    }
    const selfClosing = inner.endsWith('/');
    const body = selfClosing ? inner.slice(0, -1) : inner;
    const name = /^[^\s/>]+/.exec(body)[0];
    const el = doc.createElement(name);
    for (const m of body.slice(name.length).matchAll(ATTR)) el.setAttribute(m[1], decode(m[2] ?? m[3] ?? m[4] ?? ''));
    stack[stack.length - 1].appendChild(el);
    if (RAW_TEXT.has(el.localName)) {
      const end = html.indexOf(`</${el.localName}`, i);
      if (end > i) el.appendChild(doc.createTextNode(html.slice(i, end)));
      i = html.indexOf('>', end) + 1;
    } else if (!selfClosing && !VOID.has(el.localName)) {
      stack.push(el);
    }
  }
  for (const el of top._descendants()) el._childrenChanged();
  const nodes = [...top.childNodes];
  top.replaceChildren();
  return nodes;
}

// ---------- selectors: compound parts (tag, #id, .class, [attr], [attr="v"], :checked)
// joined by descendant combinators ----------

const PART = /([a-z][\w-]*|\*)|#([\w-]+)|\.([\w-]+)|\[([\w-]+)(?:="([^"]*)")?\]|:(checked)/giy;

function parseSelector(selector) {
  return selector.trim().split(/\s+/).map((compound) => {
    const parts = [];
    PART.lastIndex = 0;
    while (PART.lastIndex < compound.length) {
      const m = PART.exec(compound);
      if (!m) throw new Error(`unsupported selector ${selector}`);
      parts.push(m);
    }
    return (el) => parts.every((m) => {
      if (m[1]) return m[1] === '*' || el.localName === m[1].toLowerCase();
      if (m[2]) return el.getAttribute('id') === m[2];
      if (m[3]) return el._classes().includes(m[3]);
      if (m[4]) return m[5] === undefined ? el.hasAttribute(m[4]) : el.getAttribute(m[4]) === m[5];
      return el.checked;
    });
  });
}

// The last compound matches `el`, the others match its ancestors in order.
function matchesSelector(el, compounds) {
  if (!compounds[compounds.length - 1](el)) return false;
  let k = compounds.length - 2;
  for (let n = el.parentNode; k >= 0 && n instanceof ShimElement; n = n.parentNode) {
    if (compounds[k](n)) k -= 1;
  }
  return k < 0;
}

// ---------- the page ----------

// A fresh document from the dashboard's index.html, installed as the global `document`
// (and `Node`) that dom.js's h() builds with.
export function loadPage() {
  const doc = new ShimDocument();
  const html = readFileSync(new URL('index.html', STATIC), 'utf8');
  for (const n of parseHtml(doc, html)) doc.appendChild(n);
  doc.documentElement = doc.querySelector('html');
  doc.activeElement = doc.body;
  globalThis.document = doc;
  globalThis.Node = ShimNode;
  return doc;
}

// Event helpers for tests.
export function fire(el, type, props = {}) {
  return el.dispatchEvent(new ShimEvent(type, { bubbles: true, ...props }));
}

// Types into a text field: the value changes, then an input event bubbles.
export function type(el, text) {
  el.value = text;
  fire(el, 'input');
}

export function key(el, name) {
  return fire(el, 'keydown', { key: name });
}

// Picks an option of a <select> the way a user does: change and input events follow.
export function choose(select, value) {
  select.value = value;
  fire(select, 'input');
  fire(select, 'change');
}
