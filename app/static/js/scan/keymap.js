// The review page's keys. Each reviewer chooses a keymap on the profile page (app/services/keymaps.py
// names them): qcloop's, built from the project's vocabulary shortcuts, or MIQA's, where u/i/o/p decide
// and save at once as in MIQA's web client and artifacts move to keys that do not clash. The page binds
// exactly the table built here and its `?` dialog lists it, so what is listed is what works.
const AXIAL = [0, 0, 1], SAGITTAL = [1, 0, 0], CORONAL = [0, 1, 0];
const back = (move) => move.map((v) => -v);

// Keys every keymap binds: [key, command, argument, group, row]. Rows with the same text are listed together.
const COMMON = [
  ["Enter", "submit", null, "Decide", "submit the decision and open the next scan"],
  ["ArrowUp", "move", AXIAL, "Viewer", "axial slice up / down"],
  ["ArrowDown", "move", back(AXIAL), "Viewer", "axial slice up / down"],
  ["ArrowRight", "move", SAGITTAL, "Viewer", "sagittal slice right / left"],
  ["ArrowLeft", "move", back(SAGITTAL), "Viewer", "sagittal slice right / left"],
  ["PageUp", "move", CORONAL, "Viewer", "coronal slice forward / back"],
  ["PageDown", "move", back(CORONAL), "Viewer", "coronal slice forward / back"],
  ["=", "zoom", 1.25, "Viewer", "zoom in / out"],
  ["+", "zoom", 1.25, "Viewer", "zoom in / out"],
  ["-", "zoom", 0.8, "Viewer", "zoom in / out"],
  ["/", "render", null, "Viewer", "3-D render on / off"],
  ["'", "saliency", null, "Viewer", "saliency overlay on / off"],
  [";", "accept", null, "Decide", "accept the model's suggestions"],
  ["]", "next-scan", null, "Move", "next / previous scan"],
  ["[", "previous-scan", null, "Move", "next / previous scan"],
  [".", "next-frame", null, "Move", "next / previous frame"],
  [",", "previous-frame", null, "Move", "next / previous frame"],
  ["?", "help", null, "Move", "this list"],
];

// MIQA's web client: DecisionButtons.vue binds u/i/o/p and saves at once; VtkViewer.vue binds
// q/w, a/s, z/x to the previous / next slice of the axial, sagittal and coronal views.
const MIQA_DECISIONS = {usable: "u", usable_extra: "i", questionable: "o", unusable: "p"};
const MIQA_SLICES = [
  ["q", back(AXIAL), "axial slice down / up (MIQA)"], ["w", AXIAL, "axial slice down / up (MIQA)"],
  ["a", back(SAGITTAL), "sagittal slice left / right (MIQA)"], ["s", SAGITTAL, "sagittal slice left / right (MIQA)"],
  ["z", back(CORONAL), "coronal slice back / forward (MIQA)"], ["x", CORONAL, "coronal slice back / forward (MIQA)"],
];
// Keys for artifacts under MIQA's keymap, in vocabulary order; e, d and c stay free (MIQA's full screen).
const MIQA_ARTIFACT_KEYS = "1234567890bfghjklmnrtvy";

const NAMES = {ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→", PageUp: "PgUp", PageDown: "PgDn"};

function entry(key, command, arg, group, row) {
  return {key, command, arg, group, row};
}

function qcloop(ctx) {
  const table = [];
  for (const option of ctx.decisions) {
    if (!option.shortcut) continue;
    table.push(entry(option.shortcut.toLowerCase(), "decide", option.key, "Decide", `${option.label} (${option.key})`));
  }
  for (const item of ctx.artifacts) {
    if (item.shortcut) table.push(entry(item.shortcut.toLowerCase(), "artifact", item.key, "Artifacts", item.label));
  }
  return table;
}

function miqa(ctx) {
  const table = MIQA_SLICES.map(([key, move, row]) => entry(key, "move", move, "Viewer", row));
  const taken = new Set(table.map((e) => e.key).concat(COMMON.map((c) => c[0])));
  const claim = (key) => { taken.add(key); return key; };
  const nextFree = () => MIQA_ARTIFACT_KEYS.split("").find((key) => !taken.has(key));
  // MIQA's letter goes to the first option of each meaning; another option of that meaning keeps its
  // own shortcut when it is free, else takes the next free key.
  const others = [];
  for (const option of ctx.decisions) {
    const letter = MIQA_DECISIONS[option.meaning];
    if (letter && !taken.has(letter)) {
      const row = `${option.label} (${option.key}), saved at once`;
      table.push(entry(claim(letter), "decide-save", option.key, "Decide", row));
    } else {
      others.push(option);
    }
  }
  for (const option of others) {
    const own = option.shortcut && option.shortcut.toLowerCase();
    const key = own && !taken.has(own) ? own : nextFree();
    if (key) table.push(entry(claim(key), "decide", option.key, "Decide", `${option.label} (${option.key})`));
  }
  for (const item of ctx.artifacts) {
    const key = nextFree();
    if (key) table.push(entry(claim(key), "artifact", item.key, "Artifacts", item.label));
  }
  return table;
}

const KEYMAPS = {qcloop, miqa};

// The table for a keymap and a scan's vocabulary, with lookups from key and from decision or artifact.
export function build(name, ctx) {
  const own = (KEYMAPS[name] || qcloop)(ctx);
  const bindings = own.concat(COMMON.map((c) => entry(...c)));
  const byKey = new Map();
  for (const binding of bindings) if (!byKey.has(binding.key)) byKey.set(binding.key, binding);
  const keyOf = (command, arg) => {
    const found = bindings.find((b) => b.command.startsWith(command) && b.arg === arg);
    return found ? found.key : null;
  };
  return {
    name: KEYMAPS[name] ? name : "qcloop", bindings,
    lookup: (key) => byKey.get(key.length === 1 ? key.toLowerCase() : key) || null,
    decisionKey: (optionKey) => keyOf("decide", optionKey),
    artifactKey: (entryKey) => keyOf("artifact", entryKey),
  };
}

const EXTRA = [
  ["Decide", ["Ctrl+Enter"], "submit while typing the note"],
  ["Mouse", ["click"], "set the point of interest"],
  ["Mouse", ["wheel"], "scroll the slices under the pointer"],
  ["Mouse", ["right-drag", "Ctrl+drag"], "window / level"],
  ["Mouse", ["Shift+drag", "middle-drag"], "pan"],
  ["Move", ["Esc"], "close this list"],
];

// The dialog's list: one row per action, grouped, keys as <kbd>.
export function render(container, keys) {
  const groups = new Map();
  const add = (group, row, names) => {
    if (!groups.has(group)) groups.set(group, new Map());
    const rows = groups.get(group);
    rows.set(row, (rows.get(row) || []).concat(names));
  };
  for (const b of keys.bindings) add(b.group, b.row, [NAMES[b.key] || b.key]);
  for (const [group, names, row] of EXTRA) add(group, row, names);
  container.innerHTML = "";
  for (const group of ["Decide", "Artifacts", "Viewer", "Move", "Mouse"]) {
    if (!groups.has(group)) continue;
    const section = document.createElement("section");
    section.dataset.group = group;
    section.append(Object.assign(document.createElement("h3"), {textContent: group}));
    const list = document.createElement("dl");
    for (const [row, names] of groups.get(group)) {
      const term = document.createElement("dt");
      for (const name of names) term.append(Object.assign(document.createElement("kbd"), {textContent: name}), " ");
      list.append(term, Object.assign(document.createElement("dd"), {textContent: row}));
    }
    section.append(list);
    container.append(section);
  }
}

