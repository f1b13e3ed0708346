// Requests of the review page: a small cache of answers (prefetched scans), the wait for volumes the
// server still prepares (503 + Retry-After), and JSON calls with the CSRF token.
import {csrf} from "./state.js";

const CACHE_LIMIT = 16;
export const cache = new Map(); // url (or "image:" + url) -> {promise, value}

export async function failure(response) {
  let detail = `HTTP ${response.status}`;
  try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
  const error = new Error(detail);
  error.status = response.status;
  return error;
}

// A big volume's first read is prepared off the request: the server answers 503 with Retry-After
// until it is ready, and the page asks again (a minute at most) while the planes and preview wait.
async function fetchReady(url, deadline = Date.now() + 60000) {
  const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (response.status !== 503 || !response.headers.get("Retry-After") || Date.now() > deadline) return response;
  await new Promise((resolve) => setTimeout(resolve, 1000 * Number(response.headers.get("Retry-After"))));
  return fetchReady(url, deadline);
}

// One cache entry per key, made once by `make()`; the oldest entries go beyond the limit.
export function remember(key, make) {
  let entry = cache.get(key);
  if (!entry) {
    entry = {value: null};
    entry.promise = make().then((value) => { entry.value = value; return value; },
                                (error) => { cache.delete(key); throw error; });
    cache.set(key, entry);
    while (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value);
  }
  return entry;
}

export function cached(url, kind) {
  return remember(url, () => fetchReady(url).then(async (response) => {
    if (!response.ok) throw await failure(response);
    return kind === "json" ? response.json() : response.arrayBuffer();
  }));
}

export async function api(method, url, body) {
  const response = await fetch(url, {
    method, credentials: "same-origin",
    headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { /* empty */ }
  return {ok: response.ok, status: response.status, data};
}

// A job's end (saliency maps are made by the worker): its failure reason becomes the error.
export async function waitForJob(url, deadline) {
  for (;;) {
    const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (!response.ok) throw await failure(response);
    const job = await response.json();
    if (job.state === "succeeded") return;
    if (job.state === "failed" || job.state === "cancelled") throw new Error(job.error || `the job was ${job.state}`);
    if (Date.now() > deadline) throw new Error("it is taking too long; try again later");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
