// Requests to LoRA Lab's routes. The block catalogs are cached per arch for the page (they come
// with the pack). LoRA summaries and coverage verdicts are cached with the files' identity (the
// routes' ETag, size and mtime) and revalidated on every ask: a 304 keeps the copy, a rewritten file
// brings its new answer, a deleted one is a 404 (``err.status``). Failures are not cached, so a retry
// can succeed. The library's listings are asked for anew each time (the worker may have hashed more since).

import { api } from "../../scripts/api.js";
import { libraryRoute } from "./lib/library.js";

const MAX_CACHED = 64;
/** Details answers are hundreds of KB for an SDXL LoRA: few are kept. */
const MAX_DETAILS_CACHED = 8;
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

const detailsCache = new Map();
const inFlight = new Map();
const coverageCache = new Map();

/** GET ``route``, revalidating the copy ``cache`` holds under ``key`` with its ETag (at most ``max``
 * kept): a 304 keeps it; anything else replaces it (an error drops it). */
async function revalidate(cache, max, key, route) {
  const known = cache.get(key);
  const headers = known?.etag ? { "If-None-Match": known.etag } : {};
  const res = await api.fetchApi(route, { headers, cache: "no-store" });
  if (res.status === 304 && known) return known.body;
  let body;
  try {
    body = await getJson(route, res);
  } catch (e) {
    cache.delete(key);
    throw e;
  }
  cache.delete(key);
  cache.set(key, { etag: res.headers.get("ETag"), body });
  if (cache.size > max) cache.delete(cache.keys().next().value);
  return body;
}

/** ``revalidate``, with one request in flight per route. */
function once(cache, max, key, route) {
  if (!inFlight.has(route)) {
    inFlight.set(route, revalidate(cache, max, key, route).finally(() => inFlight.delete(route)));
  }
  return inFlight.get(route);
}

/** What the metadata panel shows of a file in the loras folder (GET /loralab/lora_info, a few KB),
 * checked against the file's current identity on every call (one request in flight per name). */
export function loraInfo(name) {
  return once(infoCache, MAX_CACHED, name, `/loralab/lora_info?name=${encodeURIComponent(name)}`);
}

/** The whole header summary of a file (GET /loralab/lora_info?details=1: module lists, metadata, tag
 * table), for the panel's details fold; revalidated like ``loraInfo``. */
export function loraDetails(name) {
  return once(detailsCache, MAX_DETAILS_CACHED, name, `/loralab/lora_info?name=${encodeURIComponent(name)}&details=1`);
}

/** The coverage doctor's verdict for a query (doctor.coverageQuery: LoRA, model file, its folder,
 * CLIP connected) (GET /loralab/coverage), checked against both files' identities on every call. */
export function coverage(query) {
  return once(coverageCache, MAX_CACHED, query, `/loralab/coverage?${query}`);
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
