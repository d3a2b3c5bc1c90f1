// Where a node's MODEL comes from, read from the graph before anything runs: the model input is
// followed upstream (through LoRA nodes and other nodes that pass a MODEL on, and reroutes) to the
// loader that names the file, Load Checkpoint's ``ckpt_name`` or Load Diffusion Model's
// ``unet_name``. Pure logic over LiteGraph-shaped objects (node.inputs[i].link, graph.links,
// graph.getNodeById, node.widgets): the frontend's graph and the tests' fakes alike.

/** widget of a loader -> the model folder its file is listed in (the coverage route's ``kind``) */
export const MODEL_WIDGETS = { ckpt_name: "checkpoints", unet_name: "diffusion_models" };
/** how many nodes a walk follows before it gives up (a graph with a cycle or a very long chain) */
const MAX_STEPS = 64;

function linkOf(graph, id) {
  if (id === null || id === undefined || !graph) return null;
  const links = graph.links;
  return links?.get?.(id) ?? links?.[id] ?? graph.getLink?.(id) ?? null;
}

function inputNamed(node, name) {
  return (node?.inputs ?? []).find((i) => i?.name === name) ?? null;
}

/** The node and output slot an input of ``node`` is linked from, or null. */
export function upstream(node, input) {
  const link = linkOf(node?.graph, input?.link);
  if (!link) return null;
  const from = node.graph.getNodeById?.(link.origin_id);
  return from ? { node: from, slot: link.origin_slot } : null;
}

/** Whether ``node``'s input ``name`` has a link. */
export function isConnected(node, name) {
  const input = inputNamed(node, name);
  return input?.link !== null && input?.link !== undefined;
}

/** The model file the MODEL input of ``node`` comes from: {name, kind} ("checkpoints" or
 * "diffusion_models"), or null where the graph does not say (nothing connected, a loader of
 * another kind, a file name fed by a link, a subgraph). */
export function modelSource(node) {
  let current = upstream(node, inputNamed(node, "model"));
  const seen = new Set();
  for (let step = 0; current && step < MAX_STEPS; step++) {
    const n = current.node;
    if (seen.has(n) || n.subgraph) return null;
    seen.add(n);
    for (const [widget, kind] of Object.entries(MODEL_WIDGETS)) {
      const w = (n.widgets ?? []).find((x) => x?.name === widget);
      if (!w) continue;
      if (isConnected(n, widget) || typeof w.value !== "string" || !w.value) return null;
      return { name: w.value, kind };
    }
    const through = inputNamed(n, "model") ?? ((n.type === "Reroute" && n.inputs?.length === 1) ? n.inputs[0] : null);
    if (!through) return null;
    current = upstream(n, through);
  }
  return null;
}
