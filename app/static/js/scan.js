// The scan review page: Niivue viewer, decision panel, history, experiment lock, next-scan prefetch.
// Positions: Niivue reports RAS millimetres; points of interest are stored as voxels (i, j, k) of
// the frame's ORIGINAL grid, through the inverse original affine from /api/v1/frames/<id>/geometry.
(function () {
  "use strict";
  const NV = window.niivue;
  const page = document.getElementById("scan-page");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const lockMinutes = Number(page.dataset.lockMinutes || 5);
  const $ = (id) => document.getElementById(id);
  const CACHE_LIMIT = 16;
  const STATES = ["undefined", "present", "absent"];

  const state = {
    ctx: JSON.parse($("scan-context").textContent),
    frame: 0, decision: null, artifacts: {}, poi: null, geometry: null, loaded: "none",
    wl: null, preset: null, zoom: null, shownCal: null, heldLock: null, lastActivity: Date.now(), loadToken: 0,
    submitting: false, render3d: false, saliency: false, saliencyShown: false,
  };
  const timings = {};
  const cache = new Map(); // url -> {promise, value}
  const nv = new NV.Niivue({
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
  const memory = window.qcloopViewMemory;
  const keymap = window.qcloopKeymap;
  let keys = keymap.build(page.dataset.keymap, state.ctx); // rebuilt with each scan's vocabulary
  window.qcloop = {nv, state, timings, cache};

  // ------------------------------------------------------------------ fetching with a small cache

  async function failure(response) {
    let detail = `HTTP ${response.status}`;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    return error;
  }

  // A big volume's first read is prepared off the request: the server answers 503 with Retry-After
  // until it is ready, and the page asks again (a minute at most) while the preview waits.
  async function fetchReady(url, deadline = Date.now() + 60000) {
    const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (response.status !== 503 || !response.headers.get("Retry-After") || Date.now() > deadline) return response;
    await new Promise((resolve) => setTimeout(resolve, 1000 * Number(response.headers.get("Retry-After"))));
    return fetchReady(url, deadline);
  }

  function cached(url, kind) {
    let entry = cache.get(url);
    if (!entry) {
      entry = {value: null};
      entry.promise = fetchReady(url)
        .then(async (response) => {
          if (!response.ok) throw await failure(response);
          return kind === "json" ? response.json() : response.arrayBuffer();
        })
        .then((value) => { entry.value = value; return value; },
              (error) => { cache.delete(url); throw error; });
      cache.set(url, entry);
      while (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value);
    }
    return entry;
  }

  async function api(method, url, body) {
    const response = await fetch(url, {
      method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* empty */ }
    return {ok: response.ok, status: response.status, data};
  }

  // ------------------------------------------------------------------ viewer

  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

  function viewerMessage(text) {
    $("viewer-message").textContent = text || "";
    $("viewer-message").hidden = !text;
  }

  function setLoaded(value) {
    state.loaded = value;
    $("viewer").dataset.loaded = value;
    $("load-state").textContent = {none: "", loading: "loading…", preview: "preview (full resolution loading…)",
                                   full: "full resolution",
                                   error: "image unavailable"}[value] || value;
  }

  // Parsed Niivue images, made ahead of time (prefetch) so showing one is only the GPU upload.
  function image(url, name, colormap, opacity) {
    const key = `image:${url}`;
    let entry = cache.get(key);
    if (!entry) {
      entry = {value: null};
      entry.promise = cached(url, "buffer").promise
        .then((buffer) => NV.NVImage.new(buffer, name, colormap || "gray", opacity === undefined ? 1 : opacity))
        .then((value) => { entry.value = value; return value; }, (error) => { cache.delete(key); throw error; });
      cache.set(key, entry);
      while (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value);
    }
    return entry;
  }

  async function show(url, isPreview) {
    const picture = await image(url, isPreview ? "preview.nii.gz" : "volume.nii.gz").promise;
    cache.delete(`image:${url}`); // an image object is shown once; the bytes stay cached
    for (const old of nv.volumes.slice()) nv.removeVolume(old);
    nv.opts.isColorbar = false; // the saliency overlay brings its colour bar back with it
    state.shownCal = null; // what Niivue does while the volume is swapped is not the reviewer's doing
    nv.addVolume(picture);
    state.isPreview = isPreview;
    if (state.zoom !== null) {
      nv.setPan2Dxyzmm([0, 0, 0, state.zoom]);
      state.zoom = null;
    }
    applyView();
    await nextFrame();
  }

  // Three server-rendered planes (PNG slices through the middle of the volume) paint as soon as they
  // arrive, before Niivue has a volume; they step aside when Niivue draws. Planes that cannot be made
  // (a volume still being prepared, an unreadable file) leave the wait to Niivue's own messages.
  function showPlanes(frame, token, started) {
    const planes = $("planes");
    const images = [...planes.querySelectorAll("img")];
    for (const img of images) {
      const url = frame.plane_urls[img.dataset.axis];
      if (img.getAttribute("src") !== url) img.src = url;
    }
    planes.hidden = false;
    Promise.all(images.map((img) => img.decode())).then(
      () => { if (token === state.loadToken && !planes.hidden) paintedFirst(token, started); },
      () => { if (token === state.loadToken) planes.hidden = true; });
  }

  function paintedFirst(token, started) {
    if (state.paintedToken === token) return;
    state.paintedToken = token;
    timings.firstPaint = performance.now() - started;
    timings.firstPaintAt = performance.now(); // since the page's navigation started
  }

  async function loadFrame(index) {
    const frame = state.ctx.frames[index];
    const token = ++state.loadToken;
    state.frame = index;
    state.geometry = null;
    restoreView();
    state.saliencyShown = false;
    renderFrames();
    viewerMessage("");
    setLoaded("loading");
    $("download").href = frame.download_url;
    const started = performance.now();
    showPlanes(frame, token, started);
    const geometry = cached(frame.geometry_url, "json");
    cached(frame.volume_url, "buffer"); // the download starts now, its parsing after the preview is shown
    try {
      const preview = image(frame.preview_url, "preview.nii.gz");
      geometry.promise.then((g) => { if (token === state.loadToken) { state.geometry = g; applyView(); } },
                            () => null);
      await preview.promise;
      if (token !== state.loadToken) return;
      await show(frame.preview_url, true);
      paintedFirst(token, started);
      timings.volumeAt = performance.now();
      $("planes").hidden = true;
      setLoaded("preview");
      state.geometry = await geometry.promise;
      await image(frame.volume_url, "volume.nii.gz").promise;
      if (token !== state.loadToken) return;
      await show(frame.volume_url, false);
      timings.full = performance.now() - started;
      timings.fullAt = performance.now();
      setLoaded("full");
      if (state.poi) placeCrosshair(state.poi);
      else nv.onLocationChange();
      if (frame.saliency_url && state.saliency) await showSaliency();
      setTimeout(prefetchNext, 50);
    } catch (error) {
      if (token !== state.loadToken) return;
      for (const old of nv.volumes.slice()) nv.removeVolume(old);
      $("planes").hidden = true;
      setLoaded("error");
      viewerMessage(`The image of frame ${frame.number} cannot be shown: ${error.message}`);
    }
  }

  function prefetchNext() {
    const next = nextTarget();
    if (!next) return;
    cached(next.context, "json").promise.then((ctx) => {
      const frame = ctx.frames[0];
      if (!frame) return;
      for (const url of Object.values(frame.plane_urls)) new Image().src = url; // into the HTTP cache
      cached(frame.geometry_url, "json");
      image(frame.preview_url, "preview.nii.gz").promise
        .then(() => image(frame.volume_url, "volume.nii.gz").promise).catch(() => null);
    }).catch(() => { /* the next page reports its own errors */ });
  }

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

  function applyWL(window_, level, remember = true) {
    const volume = nv.volumes[0];
    if (!volume || !(window_ > 0) || !Number.isFinite(level)) return;
    if (remember) {
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
  function restoreView() {
    const view = memory.load(state.ctx) || {preset: "auto"};
    state.preset = typeof view.preset === "string" ? view.preset : null;
    state.wl = !state.preset && view.window > 0 && Number.isFinite(view.level)
      ? {window: view.window, level: view.level} : null;
    state.zoom = view.zoom > 0 ? view.zoom : 1;
  }

  function saveView() {
    memory.save(state.ctx, {preset: state.preset, window: state.wl ? state.wl.window : null,
                            level: state.wl ? state.wl.level : null, zoom: nv.scene.pan2Dxyzmm[3]});
  }

  // Apply the remembered window once the numbers mean something (the 8-bit preview needs the geometry).
  function applyView() {
    const volume = nv.volumes[0];
    if (!volume) return;
    if (state.geometry && state.preset) preset(state.preset, false);
    else if (state.wl && (state.geometry || !state.isPreview)) applyWL(state.wl.window, state.wl.level, false);
    else {
      state.shownCal = [volume.cal_min, volume.cal_max];
      syncWLInputs();
      renderPresets();
    }
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

  function preset(name, remember = true) {
    const g = state.geometry;
    if (!g) return;
    const [low, high] = g.window, [min, max] = g.range;
    const ranges = {auto: [low, high], full: [min, max], soft: [low, low + (high - low) * 0.6],
                    bright: [low + (high - low) * 0.3, high * 1.2]};
    if (!ranges[name]) return;
    const [a, b] = ranges[name];
    applyWL(b - a, (a + b) / 2, false);
    state.wl = {window: b - a, level: (a + b) / 2};
    state.preset = name;
    if (remember) saveView();
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

  function zoom(factor) {
    const pan = nv.scene.pan2Dxyzmm;
    nv.setPan2Dxyzmm([pan[0], pan[1], pan[2], Math.min(20, Math.max(0.2, pan[3] * factor))]);
    saveView();
  }

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

  function placeCrosshair(poi) {
    if (!state.geometry || !nv.volumes.length) return;
    nv.scene.crosshairPos = nv.mm2frac(toMM(nearestVoxel(poi)));
    nv.drawScene();
    nv.onLocationChange();
  }

  function crosshairVoxel() {
    if (!state.geometry || !nv.volumes.length) return null;
    const mm = nv.frac2mm(nv.scene.crosshairPos);
    return toOriginalVoxel(mm);
  }

  nv.onLocationChange = () => {
    const voxel = crosshairVoxel();
    $("crosshair").textContent = voxel ? `crosshair at voxel ${voxel.join(", ")} (original grid)` : "";
  };

  function setPoi(poi) {
    state.poi = poi;
    $("poi").innerHTML = "";
    if (!poi) {
      $("poi").textContent = "Point of interest: none (click the image)";
      return;
    }
    $("poi").append(`Point of interest: i ${poi.i}, j ${poi.j}, k ${poi.k} `);
    const clear = document.createElement("button");
    clear.type = "button";
    clear.className = "small";
    clear.textContent = "clear";
    clear.addEventListener("click", () => setPoi(null));
    $("poi").append(clear);
  }

  let pointerStart = null;
  const canvas = $("gl");
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
      if (voxel) setPoi({i: voxel[0], j: voxel[1], k: voxel[2]});
    });
  });

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

  async function waitForJob(url, deadline) {
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

  function saliencyOpacity() {
    return Number($("saliency-opacity").value);
  }

  async function showSaliency() {
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

  async function toggleSaliency() {
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

  function renderSaliencyOutputs() {
    const select = $("saliency-output");
    const chosen = select.value;
    select.innerHTML = "";
    for (const output of state.ctx.saliency_outputs || []) select.add(new Option(output.label, output.key));
    if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
  }

  function toggleRender() {
    state.render3d = !state.render3d;
    nv.opts.multiplanarShowRender = state.render3d ? NV.SHOW_RENDER.ALWAYS : NV.SHOW_RENDER.NEVER;
    $("toggle-render").classList.toggle("active", state.render3d);
    nv.drawScene();
  }

  // ------------------------------------------------------------------ panel

  function button(text, className, onClick) {
    const node = document.createElement("button");
    node.type = "button";
    node.className = className;
    node.textContent = text;
    node.addEventListener("click", onClick);
    return node;
  }

  function renderFrames() {
    const box = $("frames");
    box.innerHTML = "";
    if (state.ctx.frames.length < 2) return;
    state.ctx.frames.forEach((frame, index) => {
      const node = button(`frame ${frame.number}`, index === state.frame ? "small active" : "small",
                          () => loadFrame(index));
      node.dataset.frame = index;
      box.append(node);
    });
  }

  function renderDecisions() {
    const box = $("decision-buttons");
    box.innerHTML = "";
    for (const option of state.ctx.decisions) {
      const key = keys.decisionKey(option.key);
      const node = button(`${option.label}${key ? ` (${key})` : ""}`, "decision",
                          () => chooseDecision(option.key));
      node.dataset.key = option.key;
      node.classList.toggle("active", state.decision === option.key);
      box.append(node);
    }
    const option = state.ctx.decisions.find((o) => o.key === state.decision);
    $("note-required").textContent = option && option.requires_note ? "(required for this decision)" : "";
  }

  function chooseDecision(key) {
    state.decision = state.decision === key ? null : key;
    renderDecisions();
  }

  function suggested(key) {
    const s = state.ctx.suggestion;
    return s && s.artifacts[key] ? s.artifacts[key] : null;
  }

  function renderArtifacts() {
    const box = $("artifact-tags");
    box.innerHTML = "";
    for (const entry of state.ctx.artifacts) {
      const current = state.artifacts[entry.key] || "undefined";
      const hint = suggested(entry.key);
      const key = keys.artifactKey(entry.key);
      const node = button(`${entry.label}${key ? ` (${key})` : ""}`, `tag ${current}`,
                          () => cycleArtifact(entry.key));
      node.dataset.key = entry.key;
      node.dataset.state = current;
      node.setAttribute("aria-pressed", current === "present" ? "true" : current === "absent" ? "mixed" : "false");
      node.title = {undefined: "not judged", present: "present", absent: "absent"}[current];
      if (hint && current === "undefined") {
        node.classList.add(`suggested-${hint.state}`);
        const label = document.createElement("span");
        label.className = "score";
        label.textContent = ` model: ${hint.state} ${hint.score.toFixed(2)}`;
        node.append(label);
      } else if (state.ctx.suggestion && !hint && current === "undefined") {
        // the champion has no output for this entry (never trained on it): no number to show
        const label = document.createElement("span");
        label.className = "score none";
        label.textContent = " model: no model yet";
        node.append(label);
      }
      const carried = state.ctx.carried;
      if (carried && current !== "undefined" && carried.artifacts[entry.key] === current) {
        node.classList.add("carried");
        node.dataset.carried = "true";
        node.title = `${current}, carried over from ${carried.creator}${carried.creator_role ? ` (${carried.creator_role})` : ""}`;
        node.append(Object.assign(document.createElement("span"), {className: "score carried", textContent: " carried over"}));
      }
      box.append(node);
    }
  }

  // A later reviewer's form starts from the latest decision's judged artifacts (as in MIQA).
  function carriedArtifacts() {
    return Object.assign({}, state.ctx.carried ? state.ctx.carried.artifacts : {});
  }

  function cycleArtifact(key) {
    const current = state.artifacts[key] || "undefined";
    state.artifacts[key] = STATES[(STATES.indexOf(current) + 1) % STATES.length];
    renderArtifacts();
  }

  function acceptSuggestions() {
    const s = state.ctx.suggestion;
    if (!s) return;
    for (const [key, hint] of Object.entries(s.artifacts)) {
      if (!state.artifacts[key] || state.artifacts[key] === "undefined") state.artifacts[key] = hint.state;
    }
    renderArtifacts();
  }

  function renderSuggestion() {
    const s = state.ctx.suggestion;
    const box = $("suggestion");
    box.innerHTML = "";
    $("accept-suggestions").hidden = !s;
    $("toggle-saliency").hidden = !(state.ctx.frames[state.frame] || {}).saliency_url;
    renderSaliencyOutputs();
    if (!s) return;
    const title = document.createElement("div");
    title.className = "model";
    title.textContent = `Suggestions by ${s.model} v${s.version}`;
    box.append(title);
    if (s.usable !== null) {
      const usable = document.createElement("div");
      usable.textContent = `usable: ${(s.usable * 100).toFixed(0)}% confidence`;
      box.append(usable);
    }
    const note = document.createElement("div");
    note.className = "muted";
    note.textContent = "Pre-marked tags are the model's, not yours, until you accept or click them.";
    box.append(note);
  }

  function decisionMessage(text, kind) {
    const box = $("decision-message");
    box.textContent = text || "";
    box.className = `decision-message ${kind || ""}`;
    box.hidden = !text;
  }

  function renderHistory() {
    const list = $("history");
    list.innerHTML = "";
    if (!state.ctx.history.length) {
      const empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = "No decisions yet.";
      list.append(empty);
    }
    for (const d of state.ctx.history) {
      const item = document.createElement("li");
      item.dataset.decision = d.id;
      const when = new Date(d.created).toLocaleString();
      const head = document.createElement("div");
      head.innerHTML = "<strong></strong> <span class='muted'></span>";
      head.querySelector("strong").textContent = `${d.decision_label} (${d.decision})`;
      head.querySelector("span").textContent = `${d.creator.username}${d.creator_role ? `, ${d.creator_role}` : ""}, ${when}`;
      item.append(head);
      const parts = [];
      if (d.artifacts.present.length) parts.push(`present: ${d.artifacts.present.join(", ")}`);
      if (d.artifacts.absent.length) parts.push(`absent: ${d.artifacts.absent.join(", ")}`);
      if (parts.length) item.append(Object.assign(document.createElement("div"), {textContent: parts.join("; ")}));
      if (d.location) {
        const where = d.location.space === "world" ? "MIQA position" : "point";
        const at = button(`${where} i ${d.location.i}, j ${d.location.j}, k ${d.location.k}`, "small link",
                          () => placeCrosshair(d.location));
        item.append(at);
      }
      if (d.note) item.append(Object.assign(document.createElement("blockquote"), {textContent: d.note}));
      list.append(item);
    }
  }

  function renderLock() {
    const banner = $("lock-banner");
    const lock = state.ctx.lock;
    const mine = lock && lock.owner && lock.owner.username === state.ctx.user;
    banner.className = "lock-banner";
    if (lock && !mine) {
      banner.classList.add("other");
      const until = new Date(lock.expires).toLocaleTimeString();
      banner.textContent = `Experiment ${state.ctx.experiment.name} is locked by ${lock.owner ? lock.owner.username : "another reviewer"} until ${until}: you can look, but decisions are refused until the lock is released or expires.`;
    } else if (lock && mine) {
      banner.textContent = `You are reviewing experiment ${state.ctx.experiment.name} (lock until ${new Date(lock.expires).toLocaleTimeString()}, renewed while you work).`;
    } else {
      banner.textContent = "";
    }
    banner.hidden = !banner.textContent;
  }

  function renderAll() {
    const ctx = state.ctx;
    document.title = `${ctx.scan.name} · qcloop review`;
    $("scan-name").textContent = ctx.scan.name;
    $("experiment-name").textContent = ctx.experiment.name;
    $("project-link").textContent = ctx.project.name;
    $("project-link").href = ctx.project.url;
    $("scan-state").textContent = ctx.state_label;
    $("scan-state").className = `state ${ctx.state}`;
    $("prev-scan").disabled = !ctx.neighbours.previous;
    $("next-scan").disabled = !nextTarget();
    $("email-box").hidden = !ctx.urls.email;
    $("submit").disabled = !ctx.can_decide;
    $("panel").classList.toggle("read-only", !ctx.can_decide);
    keys = keymap.build(page.dataset.keymap, ctx);
    renderDecisions();
    renderArtifacts();
    renderSuggestion();
    renderHistory();
    renderLock();
    renderQueue();
    setPoi(state.poi);
    if (ctx.blocked) decisionMessage(ctx.blocked, "warning");
    else if (!ctx.can_decide) decisionMessage("Your role in this project can look at scans but not decide.", "warning");
  }

  // ------------------------------------------------------------------ lock

  async function takeLock() {
    if (!state.ctx.can_decide) return;
    const experiment = state.ctx.experiment.id;
    const answer = await api("POST", state.ctx.urls.lock);
    if (state.ctx.experiment.id !== experiment) return;
    if (answer.ok) {
      state.heldLock = {experiment, url: state.ctx.urls.lock};
      state.ctx.lock = {owner: answer.data.lock_owner, expires: answer.data.lock_expires};
    } else if (answer.status === 409) {
      state.heldLock = null;
      state.ctx.lock = answer.data.lock || state.ctx.lock;
    }
    renderLock();
  }

  function releaseLock(keepalive) {
    if (!state.heldLock) return;
    fetch(state.heldLock.url, {method: "DELETE", credentials: "same-origin", keepalive: !!keepalive,
                               headers: {Accept: "application/json", "X-CSRFToken": csrf}});
    state.heldLock = null;
  }

  setInterval(() => {
    const idle = Date.now() - state.lastActivity;
    if (state.ctx.can_decide && idle < lockMinutes * 60 * 1000) takeLock();
  }, 60 * 1000);
  for (const type of ["keydown", "pointerdown", "wheel"]) {
    window.addEventListener(type, () => { state.lastActivity = Date.now(); }, {passive: true, capture: true});
  }
  window.addEventListener("pagehide", () => releaseLock(true));

  // ------------------------------------------------------------------ submit and navigation

  // The reviewer's queue (tier 1: unreviewed, tier 2: needing tier 2) first, then simply the next by name.
  function nextTarget() {
    return state.ctx.queue.next || state.ctx.neighbours.next;
  }

  function renderQueue() {
    const q = state.ctx.queue;
    const box = $("queue-status");
    box.className = `queue-status${q.empty ? " empty" : ""}`;
    const order = q.fallback ? ` (${q.fallback})` : q.strategy_used !== "name" ? ` (${q.strategy_used} order)` : "";
    box.textContent = q.empty ? `${q.message} ` : `Queue: ${q.remaining} ${q.queue_label} open to you${order}.`;
    if (q.empty && q.other && q.other.remaining && q.other_url) {
      box.append(Object.assign(document.createElement("a"), {id: "queue-other", href: q.other_url,
                                                             textContent: `Open the ${q.other.queue_label} scans`}));
    }
    $("next-scan").title = q.next ? `next scan ${q.queue_label} (])` : "next scan by name (])";
  }

  async function submit() {
    const ctx = state.ctx;
    if (state.submitting) return;
    if (!ctx.can_decide) return decisionMessage("Your role in this project cannot record decisions.", "error");
    if (!state.decision) return decisionMessage("Choose a decision first (a button or its key).", "error");
    const option = ctx.decisions.find((o) => o.key === state.decision);
    const note = $("note").value;
    if (option.requires_note && !note.trim()) {
      $("note").focus();
      return decisionMessage(`A note is required for ${option.label}.`, "error");
    }
    const artifacts = {present: [], absent: []};
    for (const [key, value] of Object.entries(state.artifacts)) {
      if (value === "present" || value === "absent") artifacts[value].push(key);
    }
    const body = {scan: ctx.scan.id, project: ctx.project.id, decision: state.decision, note, artifacts,
                  location: state.poi && {i: state.poi.i, j: state.poi.j, k: state.poi.k, space: "voxel"}};
    state.submitting = true;
    const started = performance.now();
    timings.submitted = started;
    $("submit").disabled = true;
    try {
      const answer = await api("POST", ctx.urls.decide, body);
      if (!answer.ok) {
        if (answer.status === 409 && answer.data.lock !== undefined) {
          state.ctx.lock = answer.data.lock;
          renderLock();
        }
        decisionMessage(`Not saved: ${answer.data.detail || `HTTP ${answer.status}`}`, "error");
        return;
      }
      const next = ctx.queue.next;
      if (next) {
        await switchScan(next, true, `Saved ${answer.data.decision} on ${ctx.scan.name}.`);
        timings.submitToNext = performance.now() - started;
      } else {
        await switchScan({context: ctx.urls.context, page: ctx.urls.self}, false,
                         `Saved ${answer.data.decision} on ${ctx.scan.name}.`);
      }
    } finally {
      state.submitting = false;
      $("submit").disabled = !state.ctx.can_decide;
    }
  }

  async function switchScan(target, push, message) {
    const started = performance.now();
    cache.delete(target.context); // always fresh: history, state and lock change
    let ctx;
    try {
      ctx = await cached(target.context, "json").promise;
    } catch (error) {
      decisionMessage(`Cannot open the scan: ${error.message}`, "error");
      return;
    }
    const previousExperiment = state.ctx.experiment.id;
    if (ctx.experiment.id !== previousExperiment) releaseLock(false);
    state.ctx = ctx;
    Object.assign(state, {decision: null, artifacts: carriedArtifacts(), poi: null, frame: 0});
    $("note").value = "";
    if (typing(document.activeElement)) document.activeElement.blur(); // shortcuts work on the new scan
    decisionMessage(message || "", "ok");
    if (push) history.pushState({context: target.context}, "", target.page);
    renderAll();
    if (ctx.can_decide) takeLock();
    if (ctx.frames.length) await loadFrame(0);
    else { setLoaded("error"); viewerMessage("This scan has no frames."); }
    timings.switch = performance.now() - started;
  }

  window.addEventListener("popstate", (event) => {
    if (event.state && event.state.context) switchScan({context: event.state.context, page: location.href}, false);
  });

  // ------------------------------------------------------------------ keyboard

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
  }

  window.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.id === "note" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
      return;
    }
    if (typing(event.target) || event.altKey || event.ctrlKey || event.metaKey) return;
    if ($("keys-dialog").open && event.key !== "?") return; // Esc, Tab and Enter work in the dialog
    const binding = keys.lookup(event.key);
    if (!binding) return;
    commands[binding.command](binding.arg);
    event.preventDefault();
    event.stopPropagation();
  }, {capture: true});

  // What a key does, by the command name keymap.js binds it to.
  const commands = {
    submit: () => submit(),
    move: (delta) => { if (nv.volumes.length) nv.moveCrosshairInVox(...delta); },
    zoom: (factor) => zoom(factor),
    render: () => toggleRender(),
    saliency: () => toggleSaliency(),
    accept: () => acceptSuggestions(),
    "next-scan": () => { const next = nextTarget(); if (next) switchScan(next, true); },
    "previous-scan": () => { const previous = state.ctx.neighbours.previous; if (previous) switchScan(previous, true); },
    "next-frame": () => { if (state.ctx.frames.length) loadFrame((state.frame + 1) % state.ctx.frames.length); },
    "previous-frame": () => {
      if (state.ctx.frames.length) loadFrame((state.frame - 1 + state.ctx.frames.length) % state.ctx.frames.length);
    },
    help: () => toggleHelp(),
    decide: (key) => chooseDecision(key),
    "decide-save": (key) => { state.decision = key; renderDecisions(); submit(); }, // MIQA: the key saves
    artifact: (key) => cycleArtifact(key),
  };

  function toggleHelp() {
    const dialog = $("keys-dialog");
    if (dialog.open) return dialog.close();
    keymap.render($("keys-list"), keys);
    dialog.showModal();
  }

  // ------------------------------------------------------------------ e-mail a colleague

  $("email-open").addEventListener("click", async () => {
    $("email-form").hidden = !$("email-form").hidden;
    if ($("email-form").hidden) return;
    try {
      const draft = await cached(state.ctx.urls.email, "json").promise;
      const list = $("email-members");
      list.innerHTML = "";
      for (const member of draft.members || draft.recipients || []) {
        const option = document.createElement("option");
        option.value = member.username || member;
        list.append(option);
      }
    } catch (error) { /* the form still works with typed usernames */ }
  });
  $("email-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const to = $("email-to").value.split(",").map((s) => s.trim()).filter(Boolean);
    const answer = await api("POST", state.ctx.urls.email, {to, message: $("email-message").value});
    $("email-result").textContent = answer.ok ? `sent to ${(answer.data.sent_to || to).join(", ")}`
      : `not sent: ${answer.data.detail || answer.status}`;
  });

  // ------------------------------------------------------------------ wiring

  $("submit").addEventListener("click", submit);
  $("accept-suggestions").addEventListener("click", acceptSuggestions);
  $("toggle-render").addEventListener("click", toggleRender);
  $("toggle-saliency").addEventListener("click", toggleSaliency);
  $("saliency-output").addEventListener("change", () => {
    state.saliencyShown = false;
    if (state.saliency) showSaliency();
  });
  $("saliency-opacity").addEventListener("input", () => {
    if (nv.volumes.length > 1 && state.saliency) nv.setOpacity(1, saliencyOpacity());
  });
  $("keys-open").addEventListener("click", toggleHelp);
  $("keys-close").addEventListener("click", () => $("keys-dialog").close());
  $("zoom-in").addEventListener("click", () => zoom(1.25));
  $("zoom-out").addEventListener("click", () => zoom(0.8));
  $("zoom-reset").addEventListener("click", () => { nv.setPan2Dxyzmm([0, 0, 0, 1]); saveView(); });
  $("prev-scan").addEventListener("click", () => state.ctx.neighbours.previous && switchScan(state.ctx.neighbours.previous, true));
  $("next-scan").addEventListener("click", () => nextTarget() && switchScan(nextTarget(), true));
  $("presets").addEventListener("click", (event) => { if (event.target.dataset.preset) preset(event.target.dataset.preset); });
  for (const id of ["window", "level"]) {
    $(id).addEventListener("change", () => applyWL(Number($("window").value), Number($("level").value)));
  }

  async function start() {
    history.replaceState({context: state.ctx.urls.context}, "", location.href);
    state.artifacts = carriedArtifacts();
    renderAll();
    takeLock();
    for (const frame of state.ctx.frames.slice(0, 1)) {  // downloads start while WebGL is set up
      cached(frame.geometry_url, "json");
      cached(frame.preview_url, "buffer");
    }
    await nv.attachToCanvas(canvas);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    if (state.ctx.frames.length) await loadFrame(0);
    else { setLoaded("error"); viewerMessage("This scan has no frames."); }
  }

  window.qcloop.ready = start();
})();
