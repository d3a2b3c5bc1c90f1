// Widget order and workflow values: LoRA Lab places some of its widgets (the loss chart, the
// advanced-inputs toggle) among a node's inputs, and none of them stores a value.

/** A node's serialised ``widgets_values`` without the holes some frontends leave at widgets that
 * store no value. Frontends up to 1.49 write the value of ``widgets[i]`` at index i but read the
 * values back in the order of the widgets that store one, so a widget of LoRA Lab's placed before
 * an input's widget would shift every value after it. ``stores[i]`` says whether ``widgets[i]``
 * stores a value. Returns ``values`` itself when it has no such hole (newer frontends write the
 * values packed). */
export function compactValues(values, stores) {
  if (!Array.isArray(values)) return values;
  const holes = stores.some((stored, i) => !stored && i < values.length && !(i in values));
  if (!holes) return values;
  return stores.flatMap((stored, i) => (stored && i < values.length ? [values[i]] : []));
}
