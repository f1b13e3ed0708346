// What every part of the review page shares: the page's elements, the scan's context as the server
// answered it, the reviewer's form, and the timings the bench and tests read (window.qcloop).
export const $ = (id) => document.getElementById(id);
export const page = $("scan-page");
export const csrf = document.querySelector('meta[name="csrf-token"]').content;

export const state = {
  ctx: JSON.parse($("scan-context").textContent),
  frame: 0, decision: null, artifacts: {}, poi: null, geometry: null, loaded: "none", isPreview: false,
  wl: null, preset: null, zoom: null, shownCal: null, heldLock: null, lastActivity: Date.now(), loadToken: 0,
  paintedToken: 0, shownToken: 0, switches: 0, submitting: false, render3d: false, saliency: false, saliencyShown: false, fresh: null,
};
export const timings = {};

// The reviewer's queue (tier 1: unreviewed, tier 2: needing tier 2) first, then simply the next by name.
export function nextTarget() {
  return state.ctx.queue.next || state.ctx.neighbours.next;
}

export function button(text, className, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = className;
  node.textContent = text;
  node.addEventListener("click", onClick);
  return node;
}

export const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
