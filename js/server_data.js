// Requests to LoRA Lab's routes. The block catalogs are cached per arch for the page (they come
// with the pack). LoRA summaries are cached with the file's identity (the route's ETag, size and
// mtime) and revalidated on every ask: a 304 keeps the copy, a rewritten file brings its new summary,
// a deleted one is a 404 (``err.status``). Failures are not cached, so a retry can succeed. The
// library's listings are asked for anew each time (the worker may have hashed more since).

import { api } from "../../scripts/api.js";
import { libraryRoute } from "./lib/library.js";

const MAX_CACHED = 64;
const infoCache = new Map();
const catalogCache = new Map();

async function getJson(route, res = null) {
  res ??= await api.fetchApi(route);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const reason = body && typeof body === "object" ? body.error ?? body.message : null;
    const err = new Error(reason ? String(reason) : `${res.status} ${res.statusText || "error"}`);
    err.status = res.status;
    throw err;
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

const infoInFlight = new Map();

async function revalidate(name) {
  const route = `/loralab/lora_info?name=${encodeURIComponent(name)}`;
  const known = infoCache.get(name);
  const headers = known?.etag ? { "If-None-Match": known.etag } : {};
  const res = await api.fetchApi(route, { headers, cache: "no-store" });
  if (res.status === 304 && known) return known.body;
  let body;
  try {
    body = await getJson(route, res);
  } catch (e) {
    infoCache.delete(name);
    throw e;
  }
  infoCache.delete(name);
  infoCache.set(name, { etag: res.headers.get("ETag"), body });
  if (infoCache.size > MAX_CACHED) infoCache.delete(infoCache.keys().next().value);
  return body;
}

/** The header summary of a file in the loras folder (GET /loralab/lora_info), checked against the
 * file's current identity on every call (one request in flight per name). */
export function loraInfo(name) {
  if (!infoInFlight.has(name)) {
    infoInFlight.set(name, revalidate(name).finally(() => infoInFlight.delete(name)));
  }
  return infoInFlight.get(name);
}

/** The block-weight editor's catalog of an arch, or with no arch the list of archs (GET /loralab/blocks). */
export function blockCatalog(arch = "") {
  return cached(catalogCache, arch, () => getJson(`/loralab/blocks?arch=${encodeURIComponent(arch)}`));
}

/** The nodes with a training history on the server, or with ``node`` that node's last run
 * ({run, events, saved}) (GET /loralab/train_progress); never cached. */
export function trainProgress(node = null) {
  return getJson(`/loralab/train_progress${node === null ? "" : `?node=${encodeURIComponent(node)}`}`);
}

/** The LoRA library filtered by base model and search words (GET /loralab/library); never cached.
 * ``rescan`` also asks the server to scan the loras folders again. */
export function libraryListing({ arch = "", query = "", rescan = false } = {}) {
  return getJson(libraryRoute({ arch, query, rescan }));
}
