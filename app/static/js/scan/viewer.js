// The Niivue viewer: volumes shown, window/level and zoom (carried per scan type), positions between
// Niivue's RAS millimetres and the frame's ORIGINAL voxel grid (through the inverse original affine from
// /api/v1/frames/<id>/geometry), and the saliency overlay.
import {cache, cached, failure, remember, waitForJob} from "./fetching.js";
import {$, nextFrame, state} from "./state.js";
import * as memory from "./view-memory.js";

const NV = window.niivue;
export const nv = new NV.Niivue({
  backColor: [0, 0, 0, 1], crosshairColor: [1, 0.85, 0, 0.9], crosshairWidth: 0.35, crosshairWidthUnit: "percent",
  show3Dcrosshair: true, isColorbar: false,
  dragAndDropEnabled: false, loadingText: "", logLevel: "warn", isOrientationTextVisible: true,
  multiplanarShowRender: NV.SHOW_RENDER.NEVER, multiplanarLayout: NV.MULTIPLANAR_TYPE.GRID,
});
// Niivue's constructor drops mouseEventConfig (opts.mouseEventConfig stays undefined): set it explicitly.
nv.setMouseEventConfig({
  leftButton: {primary: NV.DRAG_MODE.crosshair, withShift: NV.DRAG_MODE.pan, withCtrl: NV.DRAG_MODE.windowing},
  rightButton: NV.DRAG_MODE.windowing, centerButton: NV.DRAG_MODE.pan,
});
export const canvas = $("gl");

export async function attach() {
  await nv.attachToCanvas(canvas);
  nv.setSliceType(nv.sliceTypeMultiplanar);
}

export function viewerMessage(text) {
  $("viewer-message").textContent = text || "";
  $("viewer-message").hidden = !text;
}

export function setLoaded(value) {
  state.loaded = value;
  $("viewer").dataset.loaded = value;
  $("load-state").textContent = {none: "", loading: "loading…", preview: "preview (full resolution loading…)",
                                 full: "full resolution", error: "image unavailable"}[value] || value;
}

// Parsed Niivue images, made ahead of time (prefetch) so showing one is only the GPU upload.
export function image(url, name) {
  return remember(`image:${url}`, () => cached(url, "buffer").promise
    .then((buffer) => NV.NVImage.new(buffer, name, "gray", 1)));
}

export function clear() {
  for (const old of nv.volumes.slice()) nv.removeVolume(old);
}

// Show a volume of frame load `token`, windowed as the carried view asks before it is added: Niivue
// windows a volume in a pass over the whole texture, so a window set afterwards would cost a second pass
// (seconds for 256^3 on software WebGL).
export async function show(url, isPreview, token) {
  const picture = await image(url, isPreview ? "preview.nii.gz" : "volume.nii.gz").promise;
  cache.delete(`image:${url}`); // an image object is shown once; the bytes stay cached
  clear();
  nv.opts.isColorbar = false; // the saliency overlay brings its colour bar back with it
  state.shownCal = null; // what Niivue does while the volume is swapped is not the reviewer's doing
  state.isPreview = isPreview;
  const cal = wantedCal();
  if (cal) [picture.cal_min, picture.cal_max] = cal;
  nv.addVolume(picture);
  state.shownToken = token;
  if (state.zoom !== null) {
    nv.setPan2Dxyzmm([0, 0, 0, state.zoom]);
    state.zoom = null;
  }
  showWindow();
  await nextFrame();
}

// ------------------------------------------------------------------ window/level and zoom

// Window/level in the image's own units; the 8-bit preview maps them through the cached window.
function toDisplay(value) {
  if (!state.isPreview || !state.geometry) return value;
  const [low, high] = state.geometry.window;
  return ((value - low) / (high - low)) * 255;
}

function fromDisplay(value) {
  if (!state.isPreview || !state.geometry) return value;
  const [low, high] = state.geometry.window;
  return low + (value / 255) * (high - low);
}

export function applyWL(window_, level, remember_ = true) {
  const volume = nv.volumes[0];
  if (!volume || !(window_ > 0) || !Number.isFinite(level)) return;
  if (remember_) {
    state.wl = {window: window_, level};
    state.preset = null;
    saveView();
  }
  volume.cal_min = toDisplay(level - window_ / 2);
  volume.cal_max = toDisplay(level + window_ / 2);
  nv.updateGLVolume();
  state.shownCal = [volume.cal_min, volume.cal_max];
  syncWLInputs();
  renderPresets();
}

// The scan type's carried view (view-memory.js): a preset by name, else window/level; zoom once per frame.
export function restoreView() {
  const view = memory.load(state.ctx) || {preset: "auto"};
  state.preset = typeof view.preset === "string" ? view.preset : null;
  state.wl = !state.preset && view.window > 0 && Number.isFinite(view.level)
    ? {window: view.window, level: view.level} : null;
  state.zoom = view.zoom > 0 ? view.zoom : 1;
}

export function saveView() {
  memory.save(state.ctx, {preset: state.preset, window: state.wl ? state.wl.window : null,
                          level: state.wl ? state.wl.level : null, zoom: nv.scene.pan2Dxyzmm[3]});
}

// The remembered window in display units, once the numbers mean something (the 8-bit preview needs the
// geometry); null: the volume's own.
function wantedCal() {
  const range = state.preset ? presetRange(state.preset) : null;
  const wl = range ? {window: range[1] - range[0], level: (range[0] + range[1]) / 2} : state.wl;
  if (!wl || state.preset && !range || (!state.geometry && state.isPreview)) return null;
  return [toDisplay(wl.level - wl.window / 2), toDisplay(wl.level + wl.window / 2)];
}

// Apply the remembered window to the volume shown (its geometry came after it).
export function applyView() {
  const volume = nv.volumes[0];
  if (!volume) return;
  const cal = wantedCal();
  if (cal && (cal[0] !== volume.cal_min || cal[1] !== volume.cal_max)) {
    [volume.cal_min, volume.cal_max] = cal;
    nv.updateGLVolume();
  }
  showWindow();
}

// The fields and preset buttons follow the window shown.
function showWindow() {
  const volume = nv.volumes[0];
  if (!volume) return;
  if (state.preset && presetRange(state.preset)) {
    const [a, b] = presetRange(state.preset);
    state.wl = {window: b - a, level: (a + b) / 2};
  }
  state.shownCal = [volume.cal_min, volume.cal_max];
  syncWLInputs();
  renderPresets();
}

function renderPresets() {
  for (const node of $("presets").querySelectorAll("button[data-preset]")) {
    const active = node.dataset.preset === state.preset;
    node.classList.toggle("active", active);
    node.setAttribute("aria-pressed", active ? "true" : "false");
  }
}

function syncWLInputs() {
  const volume = nv.volumes[0];
  if (!volume) return;
  const low = fromDisplay(volume.cal_min), high = fromDisplay(volume.cal_max);
  $("window").value = +(high - low).toPrecision(5);
  $("level").value = +((high + low) / 2).toPrecision(5);
}

// A preset's [low, high] in the image's units (from the frame's geometry); null before the geometry.
function presetRange(name) {
  const g = state.geometry;
  if (!g) return null;
  const [low, high] = g.window, [min, max] = g.range;
  const ranges = {auto: [low, high], full: [min, max], soft: [low, low + (high - low) * 0.6],
                  bright: [low + (high - low) * 0.3, high * 1.2]};
  return ranges[name] || null;
}

export function preset(name, remember_ = true) {
  const range = presetRange(name);
  if (!range) return;
  const [a, b] = range;
  applyWL(b - a, (a + b) / 2, false);
  state.wl = {window: b - a, level: (a + b) / 2};
  state.preset = name;
  if (remember_) saveView();
  renderPresets();
}

// A drag that changed the window (Niivue moved cal_min/cal_max) is the reviewer's choice: remember it.
nv.onIntensityChange = () => {
  const volume = nv.volumes[0];
  if (!volume || !state.shownCal) return;
  if (volume.cal_min === state.shownCal[0] && volume.cal_max === state.shownCal[1]) return;
  const low = fromDisplay(volume.cal_min), high = fromDisplay(volume.cal_max);
  state.shownCal = [volume.cal_min, volume.cal_max];
  state.wl = {window: high - low, level: (high + low) / 2};
  state.preset = null;
  saveView();
  syncWLInputs();
  renderPresets();
};

export function zoom(factor) {
  const pan = nv.scene.pan2Dxyzmm;
  nv.setPan2Dxyzmm([pan[0], pan[1], pan[2], Math.min(20, Math.max(0.2, pan[3] * factor))]);
  saveView();
}

export function resetZoom() {
  nv.setPan2Dxyzmm([0, 0, 0, 1]);
  saveView();
}

export function move(delta) {
  if (nv.volumes.length) nv.moveCrosshairInVox(...delta);
}

export function toggleRender() {
  state.render3d = !state.render3d;
  nv.opts.multiplanarShowRender = state.render3d ? NV.SHOW_RENDER.ALWAYS : NV.SHOW_RENDER.NEVER;
  $("toggle-render").classList.toggle("active", state.render3d);
  nv.drawScene();
}

// ------------------------------------------------------------------ positions

function toOriginalVoxel(mm) {
  const m = state.geometry.inverse_original_affine;
  return [0, 1, 2].map((r) => Math.round(m[r][0] * mm[0] + m[r][1] * mm[1] + m[r][2] * mm[2] + m[r][3]));
}

function toMM(voxel) {
  const a = state.geometry.original_affine;
  return [0, 1, 2].map((r) => a[r][0] * voxel[0] + a[r][1] * voxel[1] + a[r][2] * voxel[2] + a[r][3]);
}

// A point as the nearest voxel of the original grid: MIQA's viewer positions (space "world", LPS
// millimetres as ITK reads the file) go through the frame's affine; qcloop's own are voxels already.
function nearestVoxel(poi) {
  if (poi.space === "world") return toOriginalVoxel([-poi.i, -poi.j, poi.k]);
  return [poi.i, poi.j, poi.k].map(Math.round);
}

export function placeCrosshair(poi) {
  if (!state.geometry || !nv.volumes.length) return;
  nv.scene.crosshairPos = nv.mm2frac(toMM(nearestVoxel(poi)));
  nv.drawScene();
  nv.onLocationChange();
}

export function crosshairVoxel() {
  if (!state.geometry || !nv.volumes.length) return null;
  return toOriginalVoxel(nv.frac2mm(nv.scene.crosshairPos));
}

nv.onLocationChange = () => {
  const voxel = crosshairVoxel();
  $("crosshair").textContent = voxel ? `crosshair at voxel ${voxel.join(", ")} (original grid)` : "";
};

// A click (not a drag) on the image picks the crosshair's voxel: `onPick(voxel)`.
export function pickPoints(onPick) {
  let pointerStart = null;
  canvas.addEventListener("pointerdown", (event) => {
    pointerStart = event.button === 0 && !event.shiftKey && !event.ctrlKey ? [event.clientX, event.clientY] : null;
  });
  // Niivue's windowing drag changes cal_min/cal_max without calling onIntensityChange: follow it, so the
  // window/level fields and the remembered setting match what the reviewer sees.
  canvas.addEventListener("pointermove", (event) => { if (event.buttons) requestAnimationFrame(nv.onIntensityChange); });
  canvas.addEventListener("pointerup", () => requestAnimationFrame(nv.onIntensityChange));
  canvas.addEventListener("pointerup", (event) => {
    if (!pointerStart || Math.hypot(event.clientX - pointerStart[0], event.clientY - pointerStart[1]) > 4) return;
    pointerStart = null;
    requestAnimationFrame(() => {
      const voxel = crosshairVoxel();
      if (voxel) onPick(voxel);
    });
  });
}

// ------------------------------------------------------------------ saliency overlay

// A saliency map is made by a worker job on its first request (202 with the job): wait for the
// job, then ask again; a failed job's reason is the message.
async function saliencyBuffer(url, deadline = Date.now() + 300000) {
  const response = await fetch(url, {credentials: "same-origin"});
  if (response.status === 202) {
    const started = await response.json();
    viewerMessage("Computing the saliency map…");
    await waitForJob(started.url, deadline);
    return saliencyBuffer(url, deadline);
  }
  if (!response.ok) throw await failure(response);
  return response.arrayBuffer();
}

const saliencyOpacity = () => Number($("saliency-opacity").value);

export async function showSaliency() {
  const frame = state.ctx.frames[state.frame];
  if (!frame.saliency_url || state.loaded !== "full") return;
  const output = $("saliency-output").value || "usable";
  const token = state.loadToken;
  try {
    const buffer = await saliencyBuffer(`${frame.saliency_url}?output=${encodeURIComponent(output)}`);
    if (token !== state.loadToken || !state.saliency) return;
    for (const old of nv.volumes.slice(1)) nv.removeVolume(old);
    const overlay = await NV.NVImage.new(buffer, `frame-${frame.id}-saliency-${output}.nii.gz`, "warm",
                                         saliencyOpacity());
    overlay.cal_min = 0;
    overlay.cal_max = 1;
    nv.volumes[0].colorbarVisible = false;
    nv.addVolume(overlay);
    nv.opts.isColorbar = true;
    nv.drawScene();
    state.saliencyShown = true;
    viewerMessage("");
  } catch (error) {
    viewerMessage(`The saliency map cannot be shown: ${error.message}`);
  }
}

export async function toggleSaliency() {
  state.saliency = !state.saliency;
  $("toggle-saliency").classList.toggle("active", state.saliency);
  $("toggle-saliency").setAttribute("aria-pressed", String(state.saliency));
  $("saliency-controls").hidden = !state.saliency;
  if (state.saliency && !state.saliencyShown) {
    await showSaliency();
  } else if (nv.volumes.length > 1) {
    nv.setOpacity(1, state.saliency ? saliencyOpacity() : 0);
    nv.opts.isColorbar = state.saliency;
    nv.drawScene();
  }
}

export function saliencyControls() {
  $("toggle-saliency").addEventListener("click", toggleSaliency);
  $("saliency-output").addEventListener("change", () => {
    state.saliencyShown = false;
    if (state.saliency) showSaliency();
  });
  $("saliency-opacity").addEventListener("input", () => {
    if (nv.volumes.length > 1 && state.saliency) nv.setOpacity(1, saliencyOpacity());
  });
}

export function renderSaliencyOutputs() {
  const select = $("saliency-output");
  const chosen = select.value;
  select.innerHTML = "";
  for (const output of state.ctx.saliency_outputs || []) select.add(new Option(output.label, output.key));
  if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
}

// Toolbar controls that only speak to the viewer.
export function viewerControls() {
  $("toggle-render").addEventListener("click", toggleRender);
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-reset").addEventListener("click", resetZoom);
  $("presets").addEventListener("click", (event) => { if (event.target.dataset.preset) preset(event.target.dataset.preset); });
  for (const id of ["window", "level"]) {
    $(id).addEventListener("change", () => applyWL(Number($("window").value), Number($("level").value)));
  }
  saliencyControls();
}
