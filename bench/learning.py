"""Learning from reviewer decisions: a retrained network against MIQA's published ones, on known artifacts.

Builds a fresh qcloop instance and drives it only through its ``qcloop`` command, as a user
would: schema, a superuser, then a project made by importing a MIQA CSV. The volumes are
"subjects" made from the real MNI152 brain (each resampled to a coarser grid through a
random small affine, with its own field of view, intensity gamma, scanner gain and Rician
noise); about half carry one known artifact of random severity, made here with numpy FFTs
(independent of training/transforms.py's synthesizers, so the training augmentation is not
tested against itself):

- inhomogeneity: a smooth random multiplicative bias field (log-field std 0.08..0.38);
- ghosting_motion: rigid translations during acquisition, as phase errors of k-space lines
  along a phase-encoding axis (periodic motion gives discrete ghosts, a sudden move smears);
- truncation_artifact: Gibbs ringing, k-space cut to its central 30..68% along one or two axes;
- swap_wraparound: a field of view 82..96% of the brain along a phase axis, the rest folded over.

A reviewer's labels: U for a clean volume, UN for one with an artifact, whose artifact is
listed (MIQA lists only present artifacts; unlisted ones import as absent). Half of the
volumes, stratified by artifact, are imported with their decisions; the other half stays out
of qcloop. ``qcloop train --inline`` then runs from scratch and from MIQA's weights (timed),
and the held-out half is scored with each registered version and with MIQA's published T1
and Mix networks (models/inference.py), giving usable AUC (1 = usable, score = probability
usable) and per-artifact AUC (1 = that artifact, every other volume 0) with 95% bootstrap
intervals (training/metrics.py). Target: the retrained model beats MIQA's published network
on usable AUC, and the defaults finish within 10 minutes on 2 CPU cores. MIQA's networks run
on the native grid (64^3 tiles cover 64 x --spacing mm); --spacing 1 gives ~1 mm volumes.

    python bench/learning.py                                         # 80 volumes, the defaults
    python bench/learning.py --train-args "--epochs 10 --fit tiles"  # other training settings
    python bench/learning.py --volumes 40 --skip-miqa-finetune --keep --workdir /tmp/qcloop-learning
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
TEMPLATE = SHARED / "mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MIQA_T1 = SHARED / "miqa-weights" / "miqaT1-val0.pth"
MIQA_MIX = SHARED / "miqa-weights" / "miqaMix-val0.pth"
ARTIFACTS = ("inhomogeneity", "ghosting_motion", "truncation_artifact", "swap_wraparound")
PROJECT = "learning-bench"
# The MIQA CSV header in the order qcloop's exporter writes it (app/services/transfer/miqa_csv.py).
MIQA_COLUMNS = ["project_name", "experiment_name", "scan_name", "scan_type", "frame_number", "file_location",
                "experiment_notes", "subject_id", "session_id", "scan_link", "last_decision", "last_decision_creator",
                "last_decision_note", "last_decision_created", "identified_artifacts", "location_of_interest"]


@dataclass
class Subject:
    name: str
    artifact: str | None
    severity: float  # 0 (subtle) .. 1 (strong); 0 for clean volumes
    location: str = ""  # relative to the data root
    split: str = ""  # "train" (imported with its decision) or "heldout" (never imported)
    shape: tuple[int, ...] = ()


# --- volumes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    image: np.ndarray  # 0..1, 1 mm voxels
    center: np.ndarray  # voxel index of the brain's bounding-box centre
    extent: np.ndarray  # brain extent per axis, mm
    origin: np.ndarray  # world coordinate of the brain centre


def load_template(path: Path) -> Template:
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    lows, highs = [], []
    for axis in range(3):
        profile = np.flatnonzero(array.max(axis=tuple(a for a in range(3) if a != axis)) > 0.04)
        lows.append(profile[0])
        highs.append(profile[-1])
    center = (np.array(lows) + np.array(highs)) / 2
    return Template(array, center, np.array(highs) - np.array(lows) + 1.0, (img.affine @ [*center, 1])[:3])


def rotation(degrees: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject_volume(template: Template, spacing: float, fov: np.ndarray, rng: np.random.Generator):
    """The template moved by a random small affine (rotation +-8 deg, scale +-8%, shift +-6 mm) onto a
    ``fov`` mm grid of ``spacing`` mm voxels centred on the brain; returns (image 0..1, affine)."""
    from scipy import ndimage

    shape = np.maximum(8, np.round(fov / spacing)).astype(int)
    turn, scale, shift = rotation(rng.uniform(-8, 8, 3)), rng.uniform(0.92, 1.08, 3), rng.uniform(-6, 6, 3)
    # subject mm = turn @ diag(scale) @ template mm + shift, both about the brain centre.
    inverse = np.diag(1 / scale) @ turn.T
    middle = (shape - 1) / 2
    matrix = inverse * spacing
    offset = template.center - inverse @ (spacing * middle + shift)
    image = ndimage.affine_transform(template.image, matrix, offset, output_shape=tuple(shape), order=1,
                                     mode="constant", cval=0.0)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = template.origin - spacing * middle
    return np.clip(image, 0, 1), affine


def _frequencies(shape: tuple[int, ...], spacing: float) -> list[np.ndarray]:
    """Cycles per mm along each axis, shaped to broadcast over a volume (FFT order)."""
    grids = []
    for axis, n in enumerate(shape):
        f = np.fft.fftfreq(n, d=spacing)
        grids.append(f.reshape([-1 if a == axis else 1 for a in range(len(shape))]))
    return grids


def inhomogeneity(image: np.ndarray, severity: float, rng: np.random.Generator, spacing: float) -> np.ndarray:
    """A smooth random bias field (up to 2 cycles per field of view) multiplies the image."""
    coefficients = np.zeros(image.shape, dtype=np.complex64)
    index = np.ix_(*[np.r_[0:3, -2:0] for _ in range(3)])
    block = rng.normal(size=(5, 5, 5)) + 1j * rng.normal(size=(5, 5, 5))
    order = np.r_[0:3, -2:0]
    block /= 1 + order[:, None, None] ** 2 + order[None, :, None] ** 2 + order[None, None, :] ** 2
    block[0, 0, 0] = 0
    coefficients[index] = block
    field = np.fft.ifftn(coefficients).real
    brain = image > 0.1
    field = (field - field[brain].mean()) / field[brain].std()
    return image * np.exp((0.08 + 0.30 * severity) * field).astype(np.float32)


def ghosting_motion(image: np.ndarray, severity: float, rng: np.random.Generator, spacing: float) -> np.ndarray:
    """Rigid translations while k-space lines along a phase axis are acquired (linear order): each
    line's phase is shifted by its displacement. Periodic motion makes discrete ghosts along the
    phase axis; a sudden move part-way through smears and ghosts the edges."""
    phase_axis = int(rng.choice([0, 1]))
    n = image.shape[phase_axis]
    time_of_line = np.argsort(np.fft.fftshift(np.arange(n)))  # line index (FFT order) -> acquisition slot
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    if rng.random() < 0.5:
        amplitude = 0.5 + 2.5 * severity  # mm
        period = rng.uniform(4, 12)
        path = amplitude * np.sin(2 * np.pi * time_of_line / period + rng.uniform(0, 2 * np.pi))
    else:
        amplitude = 1.0 + 5.0 * severity
        start = rng.uniform(0.3, 0.7) * n
        path = np.where(time_of_line >= start, amplitude, 0.0)
    fx = _frequencies(image.shape, spacing)
    shape = [-1 if a == phase_axis else 1 for a in range(3)]
    moved = sum(f * (direction[a] * path).reshape(shape) for a, f in enumerate(fx))
    kspace = np.fft.fftn(image) * np.exp(-2j * np.pi * moved)
    return np.fft.ifftn(kspace).astype(np.complex64)


def truncation_artifact(image: np.ndarray, severity: float, rng: np.random.Generator,
                        spacing: float) -> np.ndarray:
    """Gibbs ringing: k-space cut to its central fraction along one or two axes, no apodization."""
    keep = 0.68 - 0.38 * severity
    axes = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
    kspace = np.fft.fftn(image)
    for axis in axes:
        n = image.shape[axis]
        inside = np.abs(np.fft.fftfreq(n)) <= keep / 2
        kspace *= inside.reshape([-1 if a == axis else 1 for a in range(3)])
    return np.fft.ifftn(kspace).astype(np.complex64)


def fold(image: np.ndarray, axis: int, length: int) -> np.ndarray:
    """Field-of-view fold-over: the central ``length`` samples along ``axis``, with what lies outside
    them added back from the opposite side (aliasing of a too small phase-encoding field of view)."""
    moved = np.moveaxis(image, axis, 0)
    n = moved.shape[0]
    start = (n - length) // 2
    left = (-start) % length
    right = (-(left + n)) % length
    padded = np.pad(moved, [(left, right)] + [(0, 0)] * (moved.ndim - 1))
    folded = padded.reshape(-1, length, *moved.shape[1:]).sum(axis=0)
    return np.moveaxis(folded, 0, axis)


SYNTHESIZERS = {"inhomogeneity": inhomogeneity, "ghosting_motion": ghosting_motion,
                "truncation_artifact": truncation_artifact}


def make_volume(template: Template, subject: Subject, spacing: float, rng: np.random.Generator):
    """One subject's volume as int16 with its affine."""
    fov = template.extent * rng.uniform(1.1, 1.4, 3)
    wrap_axis = None
    if subject.artifact == "swap_wraparound":
        wrap_axis = int(rng.choice([0, 1]))
        # The brain is imaged on a wide grid, then folded into a phase field of view smaller than the brain.
        target = template.extent[wrap_axis] * (0.96 - 0.14 * subject.severity)
    image, affine = subject_volume(template, spacing, fov, rng)
    image = image ** rng.uniform(0.8, 1.25)
    if subject.artifact in SYNTHESIZERS:
        image = SYNTHESIZERS[subject.artifact](image, subject.severity, rng, spacing)
    if wrap_axis is not None:
        length = int(round(target / spacing))
        affine[wrap_axis, 3] += spacing * ((image.shape[wrap_axis] - length) // 2)
        image = fold(image, wrap_axis, length)
    signal = float(np.percentile(np.abs(image), 99))
    sigma = rng.uniform(0.01, 0.035) * signal
    noisy = np.abs(image + rng.normal(0, sigma, image.shape) + 1j * rng.normal(0, sigma, image.shape))
    gain = rng.uniform(500, 3000) / signal
    return np.clip(noisy * gain, 0, 32767).astype(np.int16), affine


def generate(args: argparse.Namespace, data_root: Path) -> list[Subject]:
    """The subjects: half with one artifact (the four in turn), seeded; volumes written as NIfTI."""
    import nibabel as nib

    rng = np.random.default_rng(args.seed)
    with_artifact = args.volumes // 2
    kinds = [ARTIFACTS[i % len(ARTIFACTS)] for i in range(with_artifact)] + [None] * (args.volumes - with_artifact)
    rng.shuffle(kinds)
    subjects = [Subject(f"sub-{i + 1:03d}", kind, float(rng.uniform()) if kind else 0.0)
                for i, kind in enumerate(kinds)]
    for kind in (None, *ARTIFACTS):  # stratified: the first half of each class is imported
        members = [s for s in subjects if s.artifact == kind]
        for index, subject in enumerate(members):
            subject.split = "train" if index < (len(members) + 1) // 2 else "heldout"
    template = load_template(args.template)
    folder = data_root / "learning"
    folder.mkdir(parents=True, exist_ok=True)
    for index, subject in enumerate(subjects):
        array, affine = make_volume(template, subject, args.spacing, np.random.default_rng([args.seed, index]))
        subject.location = f"learning/{subject.name}_T1w.nii.gz"
        subject.shape = array.shape
        nib.save(nib.Nifti1Image(array, affine), str(data_root / subject.location))
    return subjects


# --- qcloop, as a user drives it -------------------------------------------------------------------

def instance_env(work: Path, miqa_weights: Path) -> dict[str, str]:
    env = dict(os.environ)
    instance = work / "instance"
    env.update({
        "QCLOOP_INSTANCE_PATH": str(instance), "QCLOOP_DATA_ROOT": str(instance / "data"),
        "DATABASE_URL": f"sqlite:///{instance / 'qcloop.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{instance / 'mlflow.db'}",
        "QCLOOP_MLFLOW_ARTIFACT_ROOT": str(instance / "mlartifacts"), "QCLOOP_CACHE_DIR": str(instance / "cache"),
        "QCLOOP_QUEUE_URL": f"sqlite:///{instance / 'queue.db'}", "QCLOOP_MIQA_WEIGHTS": str(miqa_weights),
    })
    return env


def qcloop_command() -> str:
    local = ROOT / ".venv" / "bin" / "qcloop"
    return str(local if local.exists() else Path(sys.executable).with_name("qcloop"))


def run_qcloop(env: dict[str, str], log: Path, *arguments: str) -> tuple[str, float]:
    """Run one qcloop command; returns its standard output and seconds. Both outputs go to ``log``;
    exits with their tail when the command fails."""
    command = [qcloop_command(), *arguments]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(command)}\n{result.stdout}\n--- stderr\n{result.stderr}\n"
                     f"(exit {result.returncode}, {seconds:.1f} s)\n\n")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise SystemExit(f"`{shlex.join(['qcloop', *arguments])}` failed (exit {result.returncode}):\n{tail}")
    return result.stdout, seconds


def write_miqa_csv(path: Path, subjects: list[Subject], creator: str) -> None:
    start = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(MIQA_COLUMNS)
        for index, s in enumerate(subjects):
            decision, note = ("UN", f"{s.artifact.replace('_', ' ')}") if s.artifact else ("U", "")
            writer.writerow([PROJECT, s.name, "t1_mprage", "T1", 0, s.location, "", s.name, "ses-1", "", decision,
                             creator, note, (start + timedelta(minutes=3 * index)).isoformat(), s.artifact or "", ""])


@dataclass
class TrainRun:
    label: str
    name: str
    version: str
    seconds: float


def train(env: dict[str, str], log: Path, label: str, arguments: list[str]) -> TrainRun:
    """One `qcloop train --inline` run; prints its command, time and report (from "registered ..." on)."""
    command = ["train", "--project", PROJECT, "--inline", *arguments]
    print(f"\n$ qcloop {shlex.join(command)}", flush=True)
    output, seconds = run_qcloop(env, log, *command)
    lines = output.splitlines()
    found = [i for i, line in enumerate(lines) if re.match(r"registered \S+ version \S+", line)]
    if not found:
        raise SystemExit(f"`qcloop {shlex.join(command)}` registered no version:\n" + "\n".join(lines[-40:]))
    for line in lines[found[-1]:]:
        print(f"  {line}")
    print(f"  ({seconds:.0f} s)", flush=True)
    name, version = re.match(r"registered (\S+) version (\S+)", lines[found[-1]]).groups()
    return TrainRun(label, name, version, seconds)


# --- scoring and the table -------------------------------------------------------------------------

def score(model, paths: list[Path], threads: int) -> tuple[dict[str, np.ndarray], float]:
    """Each output's probabilities over ``paths`` (files read and preprocessed as the model says), and seconds."""
    import torch

    started = time.perf_counter()
    torch.set_num_threads(threads)
    rows = [model.score(str(path)) for path in paths]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}, time.perf_counter() - started


def auc_cell(y: np.ndarray, values: np.ndarray | None) -> str:
    from sklearn.metrics import roc_auc_score

    from training.metrics import auc_interval

    if values is None:
        return "no output"
    if len(np.unique(y)) < 2:
        return "undefined"
    interval = auc_interval(y, values)
    shown = f"{roc_auc_score(y, values):.2f}"
    return f"{shown} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{shown} [undefined]"


def print_table(rows: list[tuple[str, dict[str, np.ndarray], str, float]], heldout: list[Subject]) -> None:
    usable = np.array([s.artifact is None for s in heldout], dtype=float)
    headers = ["model", f"usable ({int(usable.sum())}/{len(heldout)})",
               *(f"{kind} ({sum(s.artifact == kind for s in heldout)})" for kind in ARTIFACTS), "train s", "score s"]
    table = []
    for label, scores, trained, scored in rows:
        cells = [label, auc_cell(usable, scores.get("usable"))]
        for kind in ARTIFACTS:
            cells.append(auc_cell(np.array([s.artifact == kind for s in heldout], dtype=float), scores.get(kind)))
        table.append([*cells, trained, f"{scored:.0f}"])
    widths = [max(len(str(r[i])) for r in [headers, *table]) for i in range(len(headers))]
    for line in [headers, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=80, help="volumes to generate (half imported, half held out)")
    parser.add_argument("--spacing", type=float, default=1.75, help="voxel size of the generated volumes, mm")
    parser.add_argument("--seed", type=int, default=0, help="seed of the volumes, artifacts and split")
    parser.add_argument("--workdir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--train-args", default="", help="extra arguments of both `qcloop train` runs")
    parser.add_argument("--skip-miqa-finetune", action="store_true", help="leave out the run --from miqa")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for scoring")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help="the 1 mm brain the subjects are made from")
    parser.add_argument("--miqa-t1", type=Path, default=MIQA_T1, help="MIQA's published T1 weights")
    parser.add_argument("--miqa-mix", type=Path, default=MIQA_MIX, help="MIQA's published Mix weights")
    args = parser.parse_args()
    if args.volumes < 24:
        raise SystemExit("--volumes must be at least 24 (training needs 5 usable and 5 unusable imported scans)")
    for path in (args.template, args.miqa_t1, args.miqa_mix):
        if not path.exists():
            raise SystemExit(f"missing {path}")
    extra = shlex.split(args.train_args)
    temporary = None
    if args.workdir is None:
        temporary = tempfile.mkdtemp(prefix="qcloop-learning-")
        args.workdir = Path(temporary)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = args.workdir.resolve()
    try:
        run(args, work, extra)
    finally:
        if temporary is not None and not args.keep:
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")


def run(args: argparse.Namespace, work: Path, extra: list[str]) -> None:
    from models.inference import load_version, miqa_published

    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")  # MONAI's reader, on every import

    started = time.perf_counter()
    env = instance_env(work, args.miqa_t1)
    log = work / "qcloop.log"
    data_root = Path(env["QCLOOP_DATA_ROOT"])
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"settings: {args.volumes} volumes, {args.spacing} mm voxels, seed {args.seed}, train args "
          f"{shlex.join(extra) or '(defaults)'}, scoring with {args.threads} torch threads, "
          f"{os.cpu_count()} CPUs visible; work folder {work}; qcloop's output in {log}")

    run_qcloop(env, log, "db", "upgrade")
    password = secrets.token_urlsafe(12)
    run_qcloop(env, log, "users", "create", "bench", "--email", "bench@example.org", "--password", password,
               "--superuser")

    t0 = time.perf_counter()
    subjects = generate(args, data_root)
    generation = time.perf_counter() - t0
    train_set = [s for s in subjects if s.split == "train"]
    heldout = [s for s in subjects if s.split == "heldout"]
    counts = {kind or "clean": sum(s.artifact == kind for s in heldout) for kind in (None, *ARTIFACTS)}
    shapes = ", ".join("x".join(map(str, s.shape)) for s in subjects[:3])
    print(f"generated {len(subjects)} volumes in {generation:.0f} s (shapes vary, e.g. {shapes}); "
          f"{len(train_set)} imported, {len(heldout)} held out: {counts}")
    severities = {kind: [round(s.severity, 2) for s in heldout if s.artifact == kind] for kind in ARTIFACTS}
    print(f"held-out severities (0 subtle .. 1 strong): {severities}", flush=True)

    csv_path = work / "decisions.csv"
    write_miqa_csv(csv_path, train_set, "bench@example.org")
    output, seconds = run_qcloop(env, log, "import", str(csv_path))
    summary = [line.strip() for line in output.splitlines()
               if re.match(r"\S+ file, |  (projects|decisions) added", line)]
    print(f"$ qcloop import {csv_path.name} ({seconds:.0f} s): {'; '.join(summary)}", flush=True)

    runs = [train(env, log, "scratch", extra)]
    if not args.skip_miqa_finetune:
        runs.append(train(env, log, "miqa-finetuned", ["--from", "miqa", *extra]))

    paths = [data_root / s.location for s in heldout]
    uri = env["MLFLOW_TRACKING_URI"]
    rows = []
    for item in runs:
        scores, seconds = score(load_version(uri, item.name, item.version), paths, args.threads)
        rows.append((f"{item.label} v{item.version}", scores, f"{item.seconds:.0f}", seconds))
    for label, weights in (("MIQA T1 published", args.miqa_t1), ("MIQA Mix published", args.miqa_mix)):
        scores, seconds = score(miqa_published(weights), paths, args.threads)
        rows.append((label, scores, "-", seconds))

    print(f"\nheld-out AUC on {len(heldout)} volumes never imported, 95% bootstrap interval "
          f"(usable: 1 = clean; artifact: 1 = that artifact, every other volume 0); times in seconds")
    print_table(rows, heldout)
    best_miqa = max(roc_auc(heldout, rows[i][1]) for i in range(len(runs), len(rows)))
    best_ours = max(roc_auc(heldout, rows[i][1]) for i in range(len(runs)))
    total = time.perf_counter() - started
    print(f"\nusable AUC: best retrained {best_ours:.3f} vs best MIQA published {best_miqa:.3f} "
          f"({'beats' if best_ours > best_miqa else 'does NOT beat'} MIQA; target: beats)")
    print(f"total wall time {total:.0f} s ({total / 60:.1f} min; target <= 10 min on 2 CPU cores)")


def roc_auc(heldout: list[Subject], scores: dict[str, np.ndarray]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([s.artifact is None for s in heldout], scores["usable"]))


if __name__ == "__main__":
    main()
