// The scan review page: wires the viewer, the decision panel, the lock and the keys, submits
// decisions and moves from scan to scan without leaving the page (the viewer stays alive, volumes swap).
import {api, cache, cached} from "./fetching.js";
import {bindKeys, rebuildKeys, toggleHelp, typing} from "./keys.js";
import {loadFrame} from "./loading.js";
import {keepLock, releaseLock, renderLock, takeLock} from "./lock.js";
import * as panel from "./panel.js";
import {$, nextTarget, state, timings} from "./state.js";
import * as viewer from "./viewer.js";

window.qcloop = {nv: viewer.nv, state, timings, cache};

const chooseFrame = (index) => loadFrame(index, {onFrame: () => panel.renderFrames(chooseFrame)});

function render() {
  rebuildKeys();
  panel.renderAll(chooseFrame);
}

async function openFrames() {
  if (state.ctx.frames.length) await chooseFrame(0);
  else { viewer.setLoaded("error"); viewer.viewerMessage("This scan has no frames."); }
}

// A decision is in flight from the key press until the next scan's form is shown (the POST and, without a
// prefetched context, the context's answer), not until its volume has loaded: a reviewer can decide on the
// planes while the volume still streams in.
async function submit() {
  if (state.submitting) return;
  state.submitting = true;
  try {
    if (state.fresh) await state.fresh; // the scan's current context, not the prefetched one
    await post();
  } finally {
    state.submitting = false;
    $("submit").disabled = !state.ctx.can_decide;
  }
}

async function post() {
  const ctx = state.ctx;
  if (!ctx.can_decide) return panel.decisionMessage("Your role in this project cannot record decisions.", "error");
  if (!state.decision) return panel.decisionMessage("Choose a decision first (a button or its key).", "error");
  const option = ctx.decisions.find((o) => o.key === state.decision);
  const note = $("note").value;
  if (option.requires_note && !note.trim()) {
    $("note").focus();
    return panel.decisionMessage(`A note is required for ${option.label}.`, "error");
  }
  const artifacts = {present: [], absent: []};
  for (const [key, value] of Object.entries(state.artifacts)) {
    if (value === "present" || value === "absent") artifacts[value].push(key);
  }
  const body = {scan: ctx.scan.id, project: ctx.project.id, decision: state.decision, note, artifacts,
                location: state.poi && {i: state.poi.i, j: state.poi.j, k: state.poi.k, space: "voxel"}};
  timings.submitted = performance.now();
  $("submit").disabled = true;
  const answer = await api("POST", ctx.urls.decide, body);
  timings.postedAt = performance.now();
  if (!answer.ok) {
    if (answer.status === 409 && answer.data.lock !== undefined) {
      state.ctx.lock = answer.data.lock;
      renderLock();
    }
    return panel.decisionMessage(`Not saved: ${answer.data.detail || `HTTP ${answer.status}`}`, "error");
  }
  const saved = `Saved ${answer.data.decision} on ${ctx.scan.name}.`;
  const next = ctx.queue.next;
  if (next) await switchScan(next, true, saved);
  else await switchScan({context: ctx.urls.context, page: ctx.urls.self}, false, saved, false);
}

// Show `ctx` as the scan under review: a fresh form (artifacts carried from the latest decision).
function open(ctx, message) {
  if (ctx.experiment.id !== state.ctx.experiment.id) releaseLock(false);
  state.ctx = ctx;
  Object.assign(state, {decision: null, artifacts: panel.carriedArtifacts(), poi: null, frame: 0});
  $("note").value = "";
  if (typing(document.activeElement)) document.activeElement.blur(); // shortcuts work on the new scan
  panel.decisionMessage(message || "", "ok");
  render();
}

// The server's answer replaces the prefetched context; a form the reviewer has not touched yet
// follows it (a decision made meanwhile by someone else carries over its artifacts).
function refresh(ctx) {
  const untouched = state.decision === null && JSON.stringify(state.artifacts) === JSON.stringify(panel.carriedArtifacts());
  const framesChanged = ctx.frames.map((f) => f.id).join() !== state.ctx.frames.map((f) => f.id).join();
  state.ctx = ctx;
  if (untouched) state.artifacts = panel.carriedArtifacts();
  render();
  if (framesChanged) openFrames();
}

// Move to another scan. A context prefetched while the reviewer looked at this scan is shown at once
// (its planes are in memory) while the server is asked again; decisions wait for that answer.
async function switchScan(target, push, message, usePrefetched = true) {
  const prefetched = usePrefetched && cache.get(target.context);
  const early = !!(prefetched && prefetched.value);
  cache.delete(target.context);
  const answer = cached(target.context, "json").promise;
  let ctx = early ? prefetched.value : null;
  if (!early) {
    try {
      ctx = await answer;
    } catch (error) {
      panel.decisionMessage(`Cannot open the scan: ${error.message}`, "error");
      return;
    }
  }
  timings.contextAt = performance.now();
  const switching = ++state.switches;
  open(ctx, message);
  if (push) history.pushState({context: target.context}, "", target.page);
  if (!early) {
    state.fresh = null;
    takeLock();
  } else {
    state.fresh = answer.then((fresh) => {
      if (switching === state.switches) { refresh(fresh); takeLock(); }
    }, (error) => panel.decisionMessage(`Cannot open the scan: ${error.message}`, "error"))
      .finally(() => { if (switching === state.switches) state.fresh = null; });
  }
  openFrames(); // the volume streams in while the reviewer may already decide
}

window.addEventListener("popstate", (event) => {
  if (event.state && event.state.context) switchScan({context: event.state.context, page: location.href}, false);
});

// What a key does, by the command name keymap.js binds it to.
const commands = {
  submit: () => submit(),
  move: (delta) => viewer.move(delta),
  zoom: (factor) => viewer.zoom(factor),
  render: () => viewer.toggleRender(),
  saliency: () => viewer.toggleSaliency(),
  accept: () => panel.acceptSuggestions(),
  "next-scan": () => { const next = nextTarget(); if (next) switchScan(next, true); },
  "previous-scan": () => { const previous = state.ctx.neighbours.previous; if (previous) switchScan(previous, true); },
  "next-frame": () => { if (state.ctx.frames.length) chooseFrame((state.frame + 1) % state.ctx.frames.length); },
  "previous-frame": () => {
    if (state.ctx.frames.length) chooseFrame((state.frame - 1 + state.ctx.frames.length) % state.ctx.frames.length);
  },
  help: () => toggleHelp(),
  decide: (key) => panel.chooseDecision(key),
  "decide-save": (key) => { state.decision = key; panel.renderDecisions(); submit(); }, // MIQA: the key saves
  artifact: (key) => panel.cycleArtifact(key),
};

// ------------------------------------------------------------------ e-mail a colleague

function emailForm() {
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
}

// ------------------------------------------------------------------ wiring

async function start() {
  history.replaceState({context: state.ctx.urls.context}, "", location.href);
  state.artifacts = panel.carriedArtifacts();
  render();
  takeLock();
  keepLock();
  bindKeys(commands);
  viewer.viewerControls();
  viewer.pickPoints((voxel) => panel.setPoi({i: voxel[0], j: voxel[1], k: voxel[2]}));
  emailForm();
  $("submit").addEventListener("click", submit);
  $("accept-suggestions").addEventListener("click", panel.acceptSuggestions);
  $("prev-scan").addEventListener("click", () => state.ctx.neighbours.previous && switchScan(state.ctx.neighbours.previous, true));
  $("next-scan").addEventListener("click", () => nextTarget() && switchScan(nextTarget(), true));
  // WebGL is set up while the planes (already in the page's HTML) are measured and the downloads start
  const attached = viewer.attach();
  if (state.ctx.frames.length) await loadFrame(0, {attached, onFrame: () => panel.renderFrames(chooseFrame)});
  else { await attached; viewer.setLoaded("error"); viewer.viewerMessage("This scan has no frames."); }
}

window.qcloop.ready = start();
