// The one way LoRA Lab widgets create DOM: elements with text set through textContent and a
// short allow-list of inert attributes. There is no path from a string to markup here; the
// document is passed in, so tests run this against a fake DOM in node.

const SAFE_ATTRIBUTES = new Set([
  "type", "min", "max", "step", "value", "role", "tabindex", "aria-label", "aria-expanded",
  "aria-pressed", "data-block", "data-kind", "data-row", "data-value-of", "placeholder",
]);

/** Create ``tag`` with optional className, text (textContent), title, allow-listed attributes,
 * and children (elements or strings, which become text nodes). Throws on any other attribute. */
export function el(doc, tag, opts = {}, children = []) {
  const node = doc.createElement(tag);
  if (opts.className) node.className = opts.className;
  if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
  if (opts.title !== undefined && opts.title !== null) node.title = String(opts.title);
  for (const [name, value] of Object.entries(opts.attrs ?? {})) {
    if (!SAFE_ATTRIBUTES.has(name)) throw new Error(`attribute ${name} is not allowed`);
    node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" ? doc.createTextNode(child) : child);
  }
  return node;
}
