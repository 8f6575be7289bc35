// Tiny DOM helpers: elements are built with textContent only, never from HTML strings of
// remote data.

// h('div', {class: 'x', onclick: fn}, 'text', child, [more children])
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendAll(el, child);
    else el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const camel = (id) => id.replace(/-([a-z])/g, (_, c) => c.toUpperCase());

// The elements a panel works with, by id under `root` (a document or an element), named in
// camelCase ('cmd-path' -> cmdPath). A missing id throws: the page and the panel disagree.
export function elements(root, ids) {
  const find = root.getElementById ? (id) => root.getElementById(id) : (id) => root.querySelector(`#${id}`);
  const out = {};
  for (const id of ids) {
    const el = find(id);
    if (!el) throw new Error(`the page has no #${id}`);
    out[camel(id)] = el;
  }
  return out;
}

// Sets an element's text or an attribute only when it differs, so that a frame which changes
// nothing touches nothing (no lost focus or selection, no needless layout).
export function setText(el, text) {
  const value = String(text ?? '');
  if (el.textContent !== value) el.textContent = value;
}

export function setAttr(el, name, value) {
  const v = String(value);
  if (el.getAttribute(name) !== v) el.setAttribute(name, v);
}

const offered = new WeakMap(); // <select> -> key of the options it shows
const waiting = new WeakMap(); // <select> -> the latest offer waiting for the operator to leave

// Gives a <select> the options build() makes, when `key` differs from the offer it shows;
// the chosen value stays if it is still offered. While the operator is in the control, the
// change waits until focus leaves it, so a live stream never rebuilds it under their hands.
// onChanged() runs after each replacement. Returns true when the options were replaced now.
export function offerOptions(select, key, build, onChanged = () => {}) {
  if (offered.get(select) === key) {
    waiting.delete(select);
    return false;
  }
  if (select.ownerDocument.activeElement === select) {
    if (!waiting.has(select)) {
      select.addEventListener('blur', () => {
        const next = waiting.get(select);
        waiting.delete(select);
        if (next) offerOptions(select, ...next);
      }, { once: true });
    }
    waiting.set(select, [key, build, onChanged]);
    return false;
  }
  const previous = select.value;
  select.replaceChildren(...build());
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  offered.set(select, key);
  onChanged();
  return true;
}

// A path with a line-break opportunity after each "/", so that a long path wraps between its
// parts, never inside a name.
export function pathText(path) {
  const parts = String(path ?? '').split(/(?<=\/)/);
  const out = [];
  parts.forEach((part, i) => {
    if (i) out.push(document.createElement('wbr'));
    out.push(part);
  });
  return out;
}
