// A DOM widget whose height follows its content, kept out of the workflow's widget values.

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
    hideOnZoom: true,
    margin,
    getMinHeight: measure,
    getMaxHeight: measure,
  });
  widget.serialize = false;
  let pending = false;
  let fitted = false;
  widget.fit = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const before = height;
      measure();
      if (height !== before || !fitted) {
        fitted = true;
        node.setSize([Math.max(node.size[0], minWidth), node.computeSize()[1]]);
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
export function onWidgetChange(widget, fn) {
  const previous = widget.callback;
  widget.callback = function (value, ...rest) {
    const r = previous?.apply(this, [value, ...rest]);
    fn(widget.value);
    return r;
  };
}
