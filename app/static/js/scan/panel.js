// The decision panel: the scan's header, decision buttons, tri-state artifact tags (with the model's
// suggestions and what was carried over from the latest decision), note, point of interest, history
// and the queue's status. It renders `state.ctx` and the reviewer's form; main.js submits it.
import {$, button, nextTarget, state} from "./state.js";
import {renderLock} from "./lock.js";
import * as viewer from "./viewer.js";

const STATES = ["undefined", "present", "absent"];

export function renderFrames(onChoose) {
  const box = $("frames");
  box.innerHTML = "";
  if (state.ctx.frames.length < 2) return;
  state.ctx.frames.forEach((frame, index) => {
    const node = button(`frame ${frame.number}`, index === state.frame ? "small active" : "small",
                        () => onChoose(index));
    node.dataset.frame = index;
    box.append(node);
  });
}

export function renderDecisions() {
  const box = $("decision-buttons");
  box.innerHTML = "";
  for (const option of state.ctx.decisions) {
    const key = state.keys.decisionKey(option.key);
    const node = button(`${option.label}${key ? ` (${key})` : ""}`, "decision", () => chooseDecision(option.key));
    node.dataset.key = option.key;
    node.classList.toggle("active", state.decision === option.key);
    box.append(node);
  }
  const option = state.ctx.decisions.find((o) => o.key === state.decision);
  $("note-required").textContent = option && option.requires_note ? "(required for this decision)" : "";
}

export function chooseDecision(key) {
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
    const key = state.keys.artifactKey(entry.key);
    const node = button(`${entry.label}${key ? ` (${key})` : ""}`, `tag ${current}`, () => cycleArtifact(entry.key));
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
export function carriedArtifacts() {
  return Object.assign({}, state.ctx.carried ? state.ctx.carried.artifacts : {});
}

export function cycleArtifact(key) {
  const current = state.artifacts[key] || "undefined";
  state.artifacts[key] = STATES[(STATES.indexOf(current) + 1) % STATES.length];
  renderArtifacts();
}

export function acceptSuggestions() {
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
  viewer.renderSaliencyOutputs();
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

export function decisionMessage(text, kind) {
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
      item.append(button(`${where} i ${d.location.i}, j ${d.location.j}, k ${d.location.k}`, "small link",
                         () => viewer.placeCrosshair(d.location)));
    }
    if (d.note) item.append(Object.assign(document.createElement("blockquote"), {textContent: d.note}));
    list.append(item);
  }
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

export function setPoi(poi) {
  state.poi = poi;
  $("poi").innerHTML = "";
  if (!poi) {
    $("poi").textContent = "Point of interest: none (click the image)";
    return;
  }
  $("poi").append(`Point of interest: i ${poi.i}, j ${poi.j}, k ${poi.k} `);
  $("poi").append(button("clear", "small", () => setPoi(null)));
}

export function renderAll(onChooseFrame) {
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
  renderFrames(onChooseFrame);
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
