// A minimal DOM for node: elements remember what was set on them, and every way to turn a
// string into markup throws. Widgets built against it prove they only ever set text.

const MARKUP_SINKS = ["innerHTML", "outerHTML"];
const DANGEROUS_ATTRIBUTE = /^(on|href$|src$|srcdoc$|style$|formaction$|xlink:href$|action$)/i;

export class FakeNode {
  constructor(doc, tag, text = null) {
    this.ownerDocument = doc;
    this.tagName = tag;
    this.nodeType = tag === "#text" ? 3 : 1;
    this.childNodes = [];
    this.attributes = new Map();
    this.listeners = new Map();
    this.style = {};
    this.className = "";
    this.title = "";
    this.value = "";
    this.disabled = false;
    this._text = text;
    const classes = new Set();
    this.classList = { add: (...c) => c.forEach((x) => classes.add(x)), remove: (...c) => c.forEach((x) => classes.delete(x)), contains: (c) => classes.has(c) };
    for (const sink of MARKUP_SINKS) {
      Object.defineProperty(this, sink, { set() { throw new Error(`${sink} was set`); }, get() { throw new Error(`${sink} was read`); } });
    }
  }

  insertAdjacentHTML() {
    throw new Error("insertAdjacentHTML was called");
  }

  set textContent(v) {
    this.ownerDocument.log.push(["textContent", this.tagName, v]);
    this.childNodes = [];
    this._text = String(v);
  }

  get textContent() {
    return (this._text ?? "") + this.childNodes.map((c) => c.textContent).join("");
  }

  setAttribute(name, value) {
    if (DANGEROUS_ATTRIBUTE.test(name)) throw new Error(`attribute ${name} was set`);
    this.attributes.set(name, String(value));
  }

  removeAttribute(name) {
    this.attributes.delete(name);
  }

  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }

  appendChild(child) {
    if (!(child instanceof FakeNode)) throw new Error("appendChild of a non-node");
    this.childNodes.push(child);
    return child;
  }

  replaceChildren(...children) {
    this.childNodes = [];
    children.forEach((c) => this.appendChild(c));
  }

  addEventListener(type, fn) {
    if (typeof fn !== "function") throw new Error("listener is not a function");
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }

  dispatch(type, event = {}) {
    for (const fn of this.listeners.get(type) ?? []) fn({ stopPropagation() {}, ...event });
  }

  /** Every node below (and including) this one. */
  *walk() {
    yield this;
    for (const c of this.childNodes) yield* c.walk();
  }
}

export class FakeDocument {
  constructor() {
    this.log = [];
  }

  createElement(tag) {
    return new FakeNode(this, tag.toLowerCase());
  }

  createTextNode(text) {
    this.log.push(["createTextNode", "#text", text]);
    return new FakeNode(this, "#text", String(text));
  }
}
