// The experiment lock: taken when a reviewer who may decide opens a scan, renewed while they work,
// released when they leave the experiment or the page; the banner says who holds it and until when.
import {api} from "./fetching.js";
import {$, csrf, page, state} from "./state.js";

const lockMinutes = Number(page.dataset.lockMinutes || 5);

export function renderLock() {
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

export async function takeLock() {
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

export function releaseLock(keepalive) {
  if (!state.heldLock) return;
  fetch(state.heldLock.url, {method: "DELETE", credentials: "same-origin", keepalive: !!keepalive,
                             headers: {Accept: "application/json", "X-CSRFToken": csrf}});
  state.heldLock = null;
}

// Renew every minute while the reviewer is active; an idle reviewer lets the lock expire for others.
export function keepLock() {
  setInterval(() => {
    const idle = Date.now() - state.lastActivity;
    if (state.ctx.can_decide && idle < lockMinutes * 60 * 1000) takeLock();
  }, 60 * 1000);
  for (const type of ["keydown", "pointerdown", "wheel"]) {
    window.addEventListener(type, () => { state.lastActivity = Date.now(); }, {passive: true, capture: true});
  }
  window.addEventListener("pagehide", () => releaseLock(true));
}
