// Window/level and zoom carried from scan to scan of one scan type, per browser (localStorage), per
// project: a reviewer going through a hundred FLAIRs sets the window once. A preset is kept by name, so
// the next scan gets that preset computed on its own intensities; typed or dragged values are kept as
// numbers. Without storage (private mode, quota) nothing is carried and the page works as before.
const key = (ctx) => `qcloop.view.${ctx.project.id}.${ctx.scan.scan_type || ""}`;

export function load(ctx) {
  try {
    const view = JSON.parse(window.localStorage.getItem(key(ctx)) || "null");
    return view && typeof view === "object" ? view : null;
  } catch (error) {
    return null;
  }
}

export function save(ctx, view) {
  try {
    window.localStorage.setItem(key(ctx), JSON.stringify(view));
  } catch (error) { /* storage disabled or full: this scan type's view is not carried */ }
}

