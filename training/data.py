"""The training set from reviewer decisions, built from plain records (no database here).

Each scan's label is its *settled* decision: with ``label_rule="tier2_then_newest"`` the
newest decision by a tier-2 reviewer (or admin) wins over any tier-1 decision, otherwise
the newest decision wins (``label_rule="newest"``). The decision's meaning gives the
usable target (usable and usable_extra -> 1, unusable -> 0); a questionable decision is
either left out of the usable output (``questionable="exclude"``) or counts as not usable
with a sample weight (``questionable=0.3``). Each artifact output is settled on its own
(:func:`settle_artifacts`): the judgment (present -> 1, absent -> 0) of the most senior
reviewer who judged that artifact, the newest among equals, so a later "not judged" never
erases an earlier judgment; an artifact nobody judged is masked out of the loss.
Frames of one scan share the scan's label. Subjects, not frames, are split into
train/validation/test (or cross-validation folds, see :func:`build_dataset`), stratified by
each subject's rarest label, with a seeded generator.
"""
from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

USABLE_MEANINGS = {"usable": 1.0, "usable_extra": 1.0, "unusable": 0.0}
LABEL_RULES = ("tier2_then_newest", "newest")
TIER2_ROLES = ("tier2", "admin")
SPLITS = ("train", "val", "test")
EVALUATIONS = ("auto", "holdout", "cv")


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
    fold: int = -1

    def sample(self) -> dict[str, Any]:
        """The dict the transforms and the data loader see."""
        return {"image": self.path, "checksum": self.checksum, "targets": self.targets, "mask": self.mask,
                "weight": self.weight, "frame_id": self.frame_id}


@dataclass
class Dataset:
    """Labelled items and how they are evaluated: a holdout split (``Item.split``) or
    cross-validation folds (``Item.fold``; every item's split is then "cv")."""

    outputs: list[Output]
    items: list[Item]
    seed: int
    evaluation: str = "holdout"
    evaluation_reason: str = ""
    folds: int = 0

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def fold(self, k: int) -> Dataset:
        """Fold ``k`` of a cross-validated set as a holdout: its scans are "test", the rest "train"."""
        items = [replace(item, split="test" if item.fold == k else "train") for item in self.items]
        return Dataset(self.outputs, items, self.seed, "holdout", f"cross-validation fold {k + 1}/{self.folds}")

    def everything(self) -> Dataset:
        """Every item in "train": the final model of a cross-validated run."""
        return Dataset(self.outputs, [replace(item, split="train") for item in self.items], self.seed, "holdout",
                       "final model on every labelled scan")

    def one_class_splits(self, splits: Sequence[str]) -> list[str]:
        """'output X: test split has no present label' for every split that lacks a class of an output
        that has both overall (an output short of labels altogether is check_dataset's to refuse)."""
        found = []
        both = {key for key, count in self.counts().items() if min(count.values()) > 0}
        for split in splits:
            for key, count in self.counts(split).items():
                if key not in both:
                    continue
                lacking = [name for name in ("present", "absent") if count[name] == 0]
                if lacking:
                    found.append(f"output {key!r}: {split} split has no {' or '.join(lacking)} label")
        return found

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
        writer.writerow(["frame_id", "scan_id", "subject", "path", "checksum", "split", "fold", "weight",
                         *[o.key for o in self.outputs]])
        for item in sorted(self.items, key=lambda i: i.frame_id):
            labels = [("" if not m else int(t)) for t, m in zip(item.targets, item.mask)]
            writer.writerow([item.frame_id, item.scan_id, item.subject, item.path, item.checksum, item.split,
                             "" if item.fold < 0 else item.fold, item.weight, *labels])
        return buffer.getvalue()

    def write_manifest(self, path: Path) -> Path:
        path.write_text(self.manifest_csv())
        return path

    def digest(self) -> str:
        """A hash of what was trained on: each file's identity (its checksum; for a frame without
        one, its location), labels, split and fold."""
        digest = hashlib.sha256("|".join(o.key for o in self.outputs).encode())
        for item in sorted(self.items, key=lambda i: i.frame_id):
            identity = item.checksum or f"unchecked:{item.path}"
            digest.update(f"{identity}:{item.targets}:{item.mask}:{item.weight}:{item.split}:{item.fold}\n".encode())
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


def _seniority(decision: DecisionRecord, rule: str) -> int:
    """How senior a decision's reviewer is under ``rule``: tier 2 (or admin) over tier 1, or all equal."""
    return int(rule == "tier2_then_newest" and decision.creator_role in TIER2_ROLES)


def settle_artifacts(decisions: Iterable[DecisionRecord], rule: str = "tier2_then_newest") -> dict[int, str]:
    """Entry id -> the settled judgment (present or absent) of each artifact anyone judged: the most
    senior reviewer who judged it, the newest among equals. A tier-2 confirmation that leaves a
    tag "not judged" keeps tier 1's judgment instead of dropping the label."""
    settled: dict[int, tuple[tuple, str]] = {}
    for decision in decisions:
        rank = (_seniority(decision, rule), decision.created_at, decision.decision_id or 0)
        for entry_id, state in decision.artifacts.items():
            if state in ("present", "absent") and (entry_id not in settled or rank > settled[entry_id][0]):
                settled[entry_id] = (rank, state)
    return {entry_id: state for entry_id, (_, state) in settled.items()}


def settled_label(decisions: Sequence[DecisionRecord], rule: str = "tier2_then_newest") -> DecisionRecord | None:
    """What a scan is trained on: the settled decision's meaning with every artifact settled on its own."""
    decision = settle(decisions, rule)
    if decision is None:
        return None
    return replace(decision, artifacts=settle_artifacts(decisions, rule))


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
        decision = settled_label(scan.decisions, settings.label_rule)
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


def _strata(by_subject: dict[str, list[Item]], outputs: Sequence[Output]) -> dict[str, list[str]]:
    """Subjects grouped by their rarest label: the (output, class) fewest subjects share, so that
    scarce positives of any output spread over the splits rather than only the usable label's."""
    labels: dict[str, set[tuple[int, float]]] = {}
    frequency: dict[tuple[int, float], int] = defaultdict(int)
    for subject, subject_items in by_subject.items():
        found = {(index, float(item.targets[index] >= 0.5)) for item in subject_items
                 for index in range(len(outputs)) if item.mask[index]}
        labels[subject] = found
        for label in found:
            frequency[label] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(by_subject):
        rarest = min(labels[subject], key=lambda label: (frequency[label], label), default=None)
        strata[str(rarest)].append(subject)
    return strata


def _deal(items: list[Item], outputs: Sequence[Output], pattern: Sequence[str], seed: int) -> dict[str, str]:
    """Subject -> slot: subjects shuffled within their stratum, strata one after another, dealt
    along ``pattern`` cyclically (so every stratum spreads over the slots in the pattern's proportions)."""
    by_subject: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_subject[item.subject].append(item)
    rng = random.Random(seed)
    order = []
    for _, subjects in sorted(_strata(by_subject, outputs).items()):
        rng.shuffle(subjects)
        order.extend(subjects)
    return {subject: pattern[index % len(pattern)] for index, subject in enumerate(order)}


def split_subjects(items: list[Item], outputs: Sequence[Output], fractions: tuple[float, float], seed: int) -> None:
    """Assign each subject to train/val/test in place: grouped by subject, stratified by label, seeded."""
    val_fraction, test_fraction = fractions
    slots = 20
    counts = {"test": round(slots * test_fraction),
              "val": max(1, round(slots * val_fraction)) if val_fraction > 0 else 0}
    counts["train"] = slots - counts["test"] - counts["val"]
    # each split's places spread evenly over the pattern, so a short stratum still reaches every split
    places = sorted(((j + 0.5) / n + offset, name) for offset, (name, n) in zip((0.0, 1e-6, 2e-6), counts.items())
                    for j in range(n))
    pattern = [name for _, name in places]
    assigned = _deal(items, outputs, pattern, seed)
    for item in items:
        item.split = assigned[item.subject]


def assign_folds(items: list[Item], outputs: Sequence[Output], folds: int, seed: int) -> None:
    """Cross-validation folds in place (``Item.fold``): grouped by subject, stratified by label, seeded."""
    assigned = _deal(items, outputs, [str(k) for k in range(folds)], seed)
    for item in items:
        item.fold = int(assigned[item.subject])


def build_dataset(scans: Iterable[ScanRecord], outputs: Sequence[Output], settings: LabelSettings, *,
                  seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  evaluation: str = "auto", folds: int = 5, holdout_min_subjects: int = 200) -> Dataset:
    """Label every frame, then plan its evaluation; raises DatasetError when nothing is labelled.

    ``evaluation``: "holdout" splits subjects into train/val/test; "cv" assigns ``folds``
    cross-validation folds (each scan scored once by a model that never saw it); "auto" takes
    the holdout split only when there are at least ``holdout_min_subjects`` labelled subjects
    and its validation and test splits hold both classes of every output, else cross-validation,
    and says why in ``Dataset.evaluation_reason``.
    """
    if evaluation not in EVALUATIONS:
        raise DatasetError(f"evaluation must be one of {', '.join(EVALUATIONS)}, not {evaluation!r}")
    items = label_items(scans, outputs, settings)
    if not items:
        raise DatasetError("no scan has a settled decision that judges any output: nothing to train on")
    dataset = Dataset(list(outputs), items, seed)
    split_subjects(items, outputs, (val_fraction, test_fraction), seed)
    subjects = len({item.subject for item in items})
    missing = dataset.one_class_splits(("val", "test") if test_fraction > 0 else ("val",))
    if evaluation == "holdout":
        if missing:
            raise DatasetError(f"a held-out split cannot hold both classes: {'; '.join(missing)}; "
                               "use cross-validation (evaluation 'cv' or 'auto')")
        dataset.evaluation, dataset.evaluation_reason = "holdout", "holdout split asked for"
        return dataset
    if evaluation == "auto" and not missing and subjects >= holdout_min_subjects:
        dataset.evaluation, dataset.evaluation_reason = "holdout", (
            f"{subjects} labelled subjects, and validation and test splits hold both classes of every output")
        return dataset
    folds = max(2, min(folds, subjects))
    assign_folds(items, outputs, folds, seed)
    for item in items:
        item.split = "cv"
    dataset.evaluation, dataset.folds = "cv", folds
    if evaluation == "cv":
        dataset.evaluation_reason = "cross-validation asked for"
    elif subjects < holdout_min_subjects:
        dataset.evaluation_reason = (f"{subjects} labelled subjects are too few for a test split "
                                     f"(from {holdout_min_subjects})")
    else:
        dataset.evaluation_reason = f"a held-out split could not hold both classes ({'; '.join(missing)})"
    return dataset


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
    if dataset.evaluation == "holdout":
        for key, count in dataset.counts("train").items():
            if not problems and (count["present"] == 0 or count["absent"] == 0):
                problems.append(f"output {key!r} has one class only in the training split")
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
