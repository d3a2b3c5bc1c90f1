// A DOM widget whose height follows its content, kept out of the workflow's widget values.

import { fitHeight } from "./node_layout.js";

/** Add ``content`` (an element) to the node as a DOM widget named ``name``. The node's height
 * follows the content's; ``onResize`` is called when the content's size changes. */
export function addContentWidget(node, name, content, { fallbackHeight = 40, maxHeight = 640, minWidth = 360, onResize = null } = {}) {
  const margin = 4;
  const outer = document.createElement("div");
  outer.className = "loralab-widget";
  outer.appendChild(content);
  let height = fallbackHeight;
  const measure = () => {
    const h = content.offsetHeight;
    if (h > 0) height = Math.min(maxHeight, h + 2 * margin + 2);
    return height;
  };
  const widget = node.addDOMWidget(name, "loralab", outer, {
    serialize: false,
    // not an input: the properties panel (frontend 1.37+) lists widgets without this as inputs
    // and renders them there itself, at the panel's width
    hideInPanel: true,
    hideOnZoom: true,
    margin,
    getMinHeight: measure,
    getMaxHeight: measure,
  });
  widget.serialize = false;
  // A renderer that shows the widget elsewhere (frontend 1.49's properties panel) writes its own
  // width onto the widget, and the node then draws the widget at that width until a reload: this
  // widget always spans its node, so it has no width of its own to overwrite.
  Object.defineProperty(widget, "width", { configurable: true, get: () => undefined, set: () => {} });
  let pending = false;
  // the content height the node was last sized for: the frontend calls getMinHeight/getMaxHeight
  // (so measure) on its own while laying out, so ``height`` alone cannot tell that the node
  // still has the size of older content
  let sizedFor = null;
  widget.fit = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const h = measure();
      if (h !== sizedFor) {
        sizedFor = h;
        fitHeight(node, minWidth);
      }
      node.graph?.setDirtyCanvas(true, true);
    });
  };
  const observer = new ResizeObserver(() => {
    widget.fit();
    onResize?.();
  });
  observer.observe(content);
  const onRemove = widget.onRemove;
  widget.onRemove = function () {
    observer.disconnect();
    return onRemove?.call(this);
  };
  return widget;
}

/** Call ``fn(value)`` after the widget's own callback whenever the user changes it. */
export function onWidgetChange(widget, fn, { repick = false } = {}) {
  const previous = widget.callback;
  widget.callback = function (value, ...rest) {
    const r = previous?.apply(this, [value, ...rest]);
    fn(widget.value);
    return r;
  };
  // the frontend's setValue drops a pick of the value the widget already holds (no callback);
  // ``repick`` reports it too (the metadata panel revalidates the file on a re-pick)
  if (repick && typeof widget.setValue === "function") {
    const setValue = widget.setValue;
    widget.setValue = function (value, ...rest) {
      const same = value === this.value;
      const r = setValue.apply(this, [value, ...rest]);
      if (same) fn(widget.value);
      return r;
    };
  }
}
