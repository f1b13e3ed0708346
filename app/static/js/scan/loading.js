// Loading a frame. Three server-rendered planes (PNG middle slices) paint at once in plain <img>
// elements; Niivue's work (the 8-bit preview, then the full volume) starts only once they are on
// screen, because parsing and uploading a volume holds the page's one thread (software WebGL most of
// all) and would keep the planes from painting. The planes step aside when Niivue draws; planes that
// cannot be made (a volume still being prepared, an unreadable file) leave the wait to Niivue's messages.
import {cached} from "./fetching.js";
import {$, nextFrame, nextTarget, state, timings} from "./state.js";
import * as viewer from "./viewer.js";

const PLANES_WAIT_MS = 1500; // planes the server is slow to make hold the preview back no longer than this
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The page's marks (performance.now(), since its navigation started) that the bench and tests read:
// firstPaintAt (the frame's first image on screen), volumeAt (Niivue's preview), fullAt (full resolution).
function paintedFirst(token, at = performance.now()) {
  if (state.paintedToken === token) return;
  state.paintedToken = token;
  timings.firstPaintAt = at;
}

// The browser reports when each plane was actually painted (Element Timing: the <img> elements carry
// elementtiming="plane"); where it does not, the time the planes were decoded and a frame passed stands.
const ELEMENT_TIMING = !!(window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes("element"));
const painted = new Map(); // plane URL -> render time
let paintedChanged = () => {};
if (ELEMENT_TIMING) {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.identifier === "plane") painted.set(entry.url, entry.renderTime || entry.loadTime);
    }
    paintedChanged();
  }).observe({type: "element", buffered: true});
}

// When the frame's planes were painted, as the browser reports it (its reports come a task or two after
// the paint: wait for them a little), else now.
async function planesPaintedAt(frame, since) {
  const urls = Object.values(frame.plane_urls).map((url) => new URL(url, location.href).href);
  const reported = () => urls.every((url) => painted.get(url) >= since);
  if (ELEMENT_TIMING && !reported()) {
    await new Promise((resolve) => {
      paintedChanged = () => { if (reported()) resolve(); };
      setTimeout(resolve, 500);
    });
    paintedChanged = () => {};
  }
  return reported() ? Math.max(...urls.map((url) => painted.get(url))) : performance.now();
}

// Put the frame's planes in the <img> elements; true when one of them changed.
function showPlanes(frame) {
  const planes = $("planes");
  let changed = false;
  for (const img of planes.querySelectorAll("img")) {
    const url = frame.plane_urls[img.dataset.axis];
    if (img.getAttribute("src") !== url) {
      img.src = url;
      changed = true;
    }
  }
  planes.hidden = false;
  return changed;
}

// Resolves once the planes are decoded and on screen (a frame later), or could not be.
async function paintPlanes(frame, token, started) {
  const planes = $("planes");
  // the page's HTML brought the first frame's planes: they may have been painted before this script ran
  const since = showPlanes(frame) || token > 1 ? started : 0;
  try {
    await Promise.all([...planes.querySelectorAll("img")].map((img) => img.decode()));
  } catch (error) {
    if (token === state.loadToken) planes.hidden = true;
    return;
  }
  if (token !== state.loadToken || planes.hidden) return;
  await nextFrame();
  await delay(0); // the frame is committed (and its element timings delivered) before the viewer's long tasks
  timings.planesAt = await planesPaintedAt(frame, since);
  paintedFirst(token, timings.planesAt);
}

export async function loadFrame(index, {attached = null, onFrame = null} = {}) {
  const frame = state.ctx.frames[index];
  const token = ++state.loadToken;
  state.frame = index;
  state.geometry = null;
  viewer.restoreView();
  state.saliencyShown = false;
  if (onFrame) onFrame();
  viewer.viewerMessage("");
  viewer.setLoaded("loading");
  $("download").href = frame.download_url;
  const started = performance.now();
  const geometry = cached(frame.geometry_url, "json");
  cached(frame.preview_url, "buffer"); // downloads start now, parsing once the planes are on screen
  cached(frame.volume_url, "buffer");
  // the volume still shown is the previous frame's: windowing it again would only hold the page up
  geometry.promise.then((g) => {
    if (token !== state.loadToken) return;
    state.geometry = g;
    if (state.shownToken === token) viewer.applyView();
  }, () => null);
  await Promise.race([paintPlanes(frame, token, started), delay(PLANES_WAIT_MS)]);
  try {
    if (attached) await attached;
    await viewer.image(frame.preview_url, "preview.nii.gz").promise;
    if (token !== state.loadToken) return;
    await viewer.show(frame.preview_url, true, token);
    if (token !== state.loadToken) return; // another scan or frame was opened meanwhile: it owns the view
    paintedFirst(token);
    timings.volumeAt = performance.now();
    $("planes").hidden = true;
    viewer.setLoaded("preview");
    const geometryNow = await geometry.promise;
    if (token !== state.loadToken) return;
    state.geometry = geometryNow;
    await viewer.image(frame.volume_url, "volume.nii.gz").promise;
    if (token !== state.loadToken) return;
    await viewer.show(frame.volume_url, false, token);
    if (token !== state.loadToken) return;
    timings.fullAt = performance.now();
    viewer.setLoaded("full");
    if (state.poi) viewer.placeCrosshair(state.poi);
    else viewer.nv.onLocationChange();
    if (frame.saliency_url && state.saliency) await viewer.showSaliency();
    setTimeout(prefetchNext, 50);
  } catch (error) {
    if (token !== state.loadToken) return;
    viewer.clear();
    $("planes").hidden = true;
    viewer.setLoaded("error");
    viewer.viewerMessage(`The image of frame ${frame.number} cannot be shown: ${error.message}`);
  }
}

// The next scan's context, planes, geometry and volumes, fetched and parsed while the reviewer looks at
// this one, so the switch is the POST, the planes from memory and the upload.
function prefetchNext() {
  const next = nextTarget();
  if (!next) return;
  cached(next.context, "json").promise.then((ctx) => {
    const frame = ctx.frames[0];
    if (!frame) return;
    for (const url of Object.values(frame.plane_urls)) {
      const img = new Image();
      img.src = url;
      img.decode().catch(() => null); // decoded once into the browser's image cache
    }
    cached(frame.geometry_url, "json");
    viewer.image(frame.preview_url, "preview.nii.gz").promise
      .then(() => viewer.image(frame.volume_url, "volume.nii.gz").promise).catch(() => null);
  }).catch(() => { /* the next scan reports its own errors when opened */ });
}
