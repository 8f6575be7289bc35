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
