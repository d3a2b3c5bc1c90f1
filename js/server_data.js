// Requests to LoRA Lab's routes. The block catalogs are cached per arch for the page (they come
// with the pack). LoRA summaries (the panel's part and, asked separately, the details) are cached
// with the file's identity (the route's ETag, size and mtime) and revalidated on every ask: a 304
// keeps the copy, a rewritten file brings its new summary, a deleted one is a 404 (``err.status``).
// Failures are not cached, so a retry can succeed.

import { api } from "../../scripts/api.js";

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

async function revalidate(cache, max, name, route) {
  const known = cache.get(name);
  const headers = known?.etag ? { "If-None-Match": known.etag } : {};
  const res = await api.fetchApi(route, { headers, cache: "no-store" });
  if (res.status === 304 && known) return known.body;
  let body;
  try {
    body = await getJson(route, res);
  } catch (e) {
    cache.delete(name);
    throw e;
  }
  cache.delete(name);
  cache.set(name, { etag: res.headers.get("ETag"), body });
  if (cache.size > max) cache.delete(cache.keys().next().value);
  return body;
}

function fetchInfo(cache, max, name, query) {
  const route = `/loralab/lora_info?name=${encodeURIComponent(name)}${query}`;
  if (!inFlight.has(route)) {
    inFlight.set(route, revalidate(cache, max, name, route).finally(() => inFlight.delete(route)));
  }
  return inFlight.get(route);
}

/** What the metadata panel shows of a file in the loras folder (GET /loralab/lora_info, a few KB),
 * checked against the file's current identity on every call (one request in flight per name). */
export function loraInfo(name) {
  return fetchInfo(infoCache, MAX_CACHED, name, "");
}

/** The whole header summary of a file (GET /loralab/lora_info?details=1: module lists, metadata, tag
 * table), for the panel's details fold; revalidated like ``loraInfo``. */
export function loraDetails(name) {
  return fetchInfo(detailsCache, MAX_DETAILS_CACHED, name, "&details=1");
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
