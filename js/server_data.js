// Requests to LoRA Lab's routes, cached per key. Failures are not cached, so a retry can succeed.

import { api } from "../../scripts/api.js";

const MAX_CACHED = 64;
const infoCache = new Map();
const catalogCache = new Map();

async function getJson(route) {
  const res = await api.fetchApi(route);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const reason = body && typeof body === "object" ? body.error ?? body.message : null;
    throw new Error(reason ? String(reason) : `${res.status} ${res.statusText || "error"}`);
  }
  return body;
}

function cached(cache, key, load) {
  if (!cache.has(key)) {
    const p = load().catch((e) => {
      cache.delete(key);
      throw e;
    });
    cache.set(key, p);
    if (cache.size > MAX_CACHED) cache.delete(cache.keys().next().value);
  }
  return cache.get(key);
}

/** The header summary of a file in the loras folder (GET /loralab/lora_info). */
export function loraInfo(name) {
  return cached(infoCache, name, () => getJson(`/loralab/lora_info?name=${encodeURIComponent(name)}`));
}

/** The block-weight editor's catalog of an arch, or with no arch the list of archs (GET /loralab/blocks). */
export function blockCatalog(arch = "") {
  return cached(catalogCache, arch, () => getJson(`/loralab/blocks?arch=${encodeURIComponent(arch)}`));
}
