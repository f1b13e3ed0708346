"""The training set from reviewer decisions, built from plain records (no database here).

Each scan's label is its *settled* decision: with ``label_rule="tier2_then_newest"`` the
newest decision by a tier-2 reviewer (or admin) wins over any tier-1 decision, otherwise
the newest decision wins (``label_rule="newest"``). The decision's meaning gives the
usable target (usable and usable_extra -> 1, unusable -> 0); a questionable decision is
either left out of the usable output (``questionable="exclude"``) or counts as not usable
with a sample weight (``questionable=0.3``). Each artifact output reads the decision's
state for its entry: present -> 1, absent -> 0, undefined -> masked out of the loss.
Frames of one scan share the scan's label. Subjects, not frames, are split into
train/validation/test, stratified by their usable label, with a seeded generator.
"""
from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

USABLE_MEANINGS = {"usable": 1.0, "usable_extra": 1.0, "unusable": 0.0}
LABEL_RULES = ("tier2_then_newest", "newest")
TIER2_ROLES = ("tier2", "admin")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """The decisions cannot make a usable training set (too few labels, one class, ...)."""


@dataclass(frozen=True)
class DecisionRecord:
    """One reviewer decision: what it means, who made it (role snapshot), when, artifact states."""

    meaning: str
    creator_role: str | None
    created_at: datetime
    artifacts: dict[int, str] = field(default_factory=dict)  # entry id -> present|absent|undefined
    decision_id: int | None = None


@dataclass(frozen=True)
class FrameRecord:
    frame_id: int
    path: str
    checksum: str


@dataclass(frozen=True)
class ScanRecord:
    scan_id: int
    subject: str
    frames: tuple[FrameRecord, ...]
    decisions: tuple[DecisionRecord, ...]


@dataclass(frozen=True)
class Output:
    """One network output: the usable target or one artifact entry (by stable id and key)."""

    kind: str  # "usable" | "artifact"
    key: str
    entry_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "entry_id": self.entry_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Output:
        return cls(data["kind"], data["key"], data.get("entry_id"))


USABLE = Output("usable", "usable")


@dataclass(frozen=True)
class LabelSettings:
    label_rule: str = "tier2_then_newest"
    questionable: str | float = "exclude"

    @classmethod
    def from_project(cls, settings: dict[str, Any]) -> LabelSettings:
        """Read and check the project's 'label_rule' and 'questionable' settings."""
        rule = settings.get("label_rule") or "tier2_then_newest"
        if rule not in LABEL_RULES:
            raise DatasetError(f"project setting label_rule must be one of {', '.join(LABEL_RULES)}, not {rule!r}")
        questionable = settings.get("questionable", "exclude")
        if questionable != "exclude":
            try:
                questionable = float(questionable)
            except (TypeError, ValueError):
                questionable = -1.0
            if not 0 < questionable <= 1:
                raise DatasetError("project setting questionable must be 'exclude' or a weight in (0, 1]")
        return cls(rule, questionable)


@dataclass
class Item:
    """One training example: a frame with its scan's targets, mask and usable weight."""

    frame_id: int
    scan_id: int
    subject: str
    path: str
    checksum: str
    targets: list[float]
    mask: list[float]
    weight: float
    split: str = ""

    def sample(self) -> dict[str, Any]:
        """The dict the transforms and the data loader see."""
        return {"image": self.path, "checksum": self.checksum, "targets": self.targets, "mask": self.mask,
                "weight": self.weight, "frame_id": self.frame_id}


@dataclass
class Dataset:
    outputs: list[Output]
    items: list[Item]
    seed: int

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def counts(self, split: str | None = None) -> dict[str, dict[str, int]]:
        """Per output key: how many examples are present (1) and absent (0)."""
        items = self.items if split is None else self.split(split)
        return label_counts(items, self.outputs)

    def pos_weight(self) -> list[float]:
        """Class weights for the loss: negatives / positives per output on the training split."""
        counts = self.counts("train")
        return [min(10.0, max(0.1, counts[o.key]["absent"] / max(1, counts[o.key]["present"]))) for o in self.outputs]

    def manifest_csv(self) -> str:
        """CSV of every frame: ids, file, checksum, split, weight and one column per output (empty = masked)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["frame_id", "scan_id", "subject", "path", "checksum", "split", "weight",
                         *[o.key for o in self.outputs]])
        for item in sorted(self.items, key=lambda i: i.frame_id):
            labels = [("" if not m else int(t)) for t, m in zip(item.targets, item.mask)]
            writer.writerow([item.frame_id, item.scan_id, item.subject, item.path, item.checksum, item.split,
                             item.weight, *labels])
        return buffer.getvalue()

    def write_manifest(self, path: Path) -> Path:
        path.write_text(self.manifest_csv())
        return path

    def digest(self) -> str:
        """A hash of what was trained on: file checksums, labels and split (not file locations)."""
        digest = hashlib.sha256("|".join(o.key for o in self.outputs).encode())
        for item in sorted(self.items, key=lambda i: i.frame_id):
            digest.update(f"{item.checksum}:{item.targets}:{item.mask}:{item.weight}:{item.split}\n".encode())
        return digest.hexdigest()[:16]


def settle(decisions: Iterable[DecisionRecord], rule: str = "tier2_then_newest") -> DecisionRecord | None:
    """The decision that labels a scan: newest tier-2 over tier-1 (or simply the newest)."""
    ordered = sorted(decisions, key=lambda d: (d.created_at, d.decision_id or 0))
    if not ordered:
        return None
    if rule == "tier2_then_newest":
        senior = [d for d in ordered if d.creator_role in TIER2_ROLES]
        if senior:
            return senior[-1]
    return ordered[-1]


def targets_for(decision: DecisionRecord, outputs: Sequence[Output],
                settings: LabelSettings) -> tuple[list[float], list[float], float]:
    """Targets, mask (1 = judged) and usable weight of one settled decision."""
    targets, mask, weight = [], [], 1.0
    for output in outputs:
        if output.kind == "usable":
            if decision.meaning in USABLE_MEANINGS:
                targets.append(USABLE_MEANINGS[decision.meaning])
                mask.append(1.0)
            elif decision.meaning == "questionable" and settings.questionable != "exclude":
                targets.append(0.0)
                mask.append(1.0)
                weight = float(settings.questionable)
            else:
                targets.append(0.0)
                mask.append(0.0)
        else:
            state = decision.artifacts.get(output.entry_id, "undefined")
            targets.append(1.0 if state == "present" else 0.0)
            mask.append(0.0 if state not in ("present", "absent") else 1.0)
    return targets, mask, weight


def label_items(scans: Iterable[ScanRecord], outputs: Sequence[Output], settings: LabelSettings) -> list[Item]:
    """One item per frame of every scan that has a settled decision with at least one judged output."""
    items = []
    for scan in scans:
        decision = settle(scan.decisions, settings.label_rule)
        if decision is None:
            continue
        targets, mask, weight = targets_for(decision, outputs, settings)
        if not any(mask):
            continue
        for frame in scan.frames:
            items.append(Item(frame.frame_id, scan.scan_id, scan.subject, frame.path, frame.checksum,
                              list(targets), list(mask), weight))
    return items


def label_counts(items: Iterable[Item], outputs: Sequence[Output]) -> dict[str, dict[str, int]]:
    counts = {o.key: {"present": 0, "absent": 0} for o in outputs}
    for item in items:
        for output, target, judged in zip(outputs, item.targets, item.mask):
            if judged:
                counts[output.key]["present" if target >= 0.5 else "absent"] += 1
    return counts


def split_subjects(items: list[Item], fractions: tuple[float, float], seed: int) -> None:
    """Assign each subject to train/val/test (grouped, stratified by usable label, seeded) in place."""
    val_fraction, test_fraction = fractions
    by_subject: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_subject[item.subject].append(item)
    strata: dict[str, list[str]] = defaultdict(list)
    for subject, subject_items in sorted(by_subject.items()):
        first = subject_items[0]
        strata[str(first.targets[0]) if first.mask and first.mask[0] else "none"].append(subject)
    rng = random.Random(seed)
    for _, subjects in sorted(strata.items()):
        rng.shuffle(subjects)
        n = len(subjects)
        n_test = round(n * test_fraction) if n >= 3 else 0
        n_val = round(n * val_fraction) if n >= 3 else 0
        if n >= 3 and val_fraction > 0 and n_val == 0:
            n_val = 1
        for index, subject in enumerate(subjects):
            split = "test" if index < n_test else "val" if index < n_test + n_val else "train"
            for item in by_subject[subject]:
                item.split = split


def build_dataset(scans: Iterable[ScanRecord], outputs: Sequence[Output], settings: LabelSettings, *,
                  seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Dataset:
    """Label every frame, then split subjects; raises DatasetError when nothing is labelled."""
    items = label_items(scans, outputs, settings)
    if not items:
        raise DatasetError("no scan has a settled decision that judges any output: nothing to train on")
    split_subjects(items, (val_fraction, test_fraction), seed)
    return Dataset(list(outputs), items, seed)


def check_dataset(dataset: Dataset, min_per_class: int) -> None:
    """Refuse a set where an output has one class only or fewer than ``min_per_class`` of a class."""
    problems = []
    for key, count in dataset.counts().items():
        if count["present"] == 0 or count["absent"] == 0:
            have = "positive" if count["present"] else "negative"
            problems.append(f"output {key!r} has only one class ({count['present'] + count['absent']} {have} labels)")
        elif min(count.values()) < min_per_class:
            problems.append(f"output {key!r} has too few labels ({count['present']} present, {count['absent']} "
                            f"absent; at least {min_per_class} of each needed)")
    train = dataset.counts("train")
    for key, count in train.items():
        if not problems and (count["present"] == 0 or count["absent"] == 0):
            problems.append(f"output {key!r} has one class only in the training split")
    if not dataset.split("val"):
        problems.append("too few subjects for a validation split")
    if problems:
        raise DatasetError("; ".join(problems))


def select_outputs(scans: Sequence[ScanRecord], candidates: Sequence[Output], settings: LabelSettings,
                   min_per_class: int) -> tuple[list[Output], dict[str, str]]:
    """The usable output plus the artifact candidates with enough labels of both classes.

    Returns the kept outputs and, for each left-out artifact, why (shown to the user and
    logged as a run parameter). The usable output is always kept: check_dataset judges it.
    """
    counts = label_counts(label_items(scans, candidates, settings), candidates)
    kept, skipped = [], {}
    for output in candidates:
        count = counts[output.key]
        if output.kind == "usable" or min(count.values()) >= min_per_class:
            kept.append(output)
        else:
            skipped[output.key] = f"{count['present']} present / {count['absent']} absent"
    return kept, skipped
