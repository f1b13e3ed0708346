// The keyboard: the reviewer's keymap (keymap.js) built for the scan's vocabulary, one keydown handler
// running the command a key is bound to, and the `?` dialog listing exactly the keys in effect.
import {build, render} from "./keymap.js";
import {$, page, state} from "./state.js";

export function rebuildKeys() {
  state.keys = build(page.dataset.keymap, state.ctx);
}

export function typing(target) {
  return target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" || target.tagName === "SELECT");
}

export function toggleHelp() {
  const dialog = $("keys-dialog");
  if (dialog.open) return dialog.close();
  render($("keys-list"), state.keys);
  dialog.showModal();
}

// `commands`: command name -> function(argument), for every command keymap.js binds.
export function bindKeys(commands) {
  window.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.id === "note" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      commands.submit();
      return;
    }
    if (typing(event.target) || event.altKey || event.ctrlKey || event.metaKey) return;
    if ($("keys-dialog").open && event.key !== "?") return; // Esc, Tab and Enter work in the dialog
    const binding = state.keys.lookup(event.key);
    if (!binding) return;
    commands[binding.command](binding.arg);
    event.preventDefault();
    event.stopPropagation();
  }, {capture: true});
  $("keys-open").addEventListener("click", toggleHelp);
  $("keys-close").addEventListener("click", () => $("keys-dialog").close());
}
