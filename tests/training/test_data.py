"""The dataset from decisions: settled label, usable target, masks, grouped split, manifest."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.training.conftest import GHOSTING, LESIONS, T0
from training.data import (
    USABLE,
    DatasetError,
    DecisionRecord,
    FrameRecord,
    LabelSettings,
    ScanRecord,
    build_dataset,
    check_dataset,
    select_outputs,
    settle,
    targets_for,
)

OUTPUTS = [USABLE, GHOSTING, LESIONS]


def decision(meaning, role="tier1", minutes=0, ghosting="undefined", lesions="undefined", decision_id=None):
    return DecisionRecord(meaning, role, T0 + timedelta(minutes=minutes),
                          {GHOSTING.entry_id: ghosting, LESIONS.entry_id: lesions}, decision_id)


def scan(scan_id, subject, decisions, n_frames=1):
    frames = tuple(FrameRecord(scan_id * 10 + n, f"/data/{scan_id}_{n}.nii.gz", f"sum{scan_id}{n}")
                   for n in range(n_frames))
    return ScanRecord(scan_id, subject, frames, tuple(decisions))


def test_tier2_decision_wins_over_a_newer_tier1_unless_the_rule_is_newest():
    tier2 = decision("unusable", "tier2", minutes=1)
    newer_tier1 = decision("usable", "tier1", minutes=5)
    assert settle([tier2, newer_tier1]) is tier2
    assert settle([tier2, newer_tier1], "newest") is newer_tier1
    assert settle([decision("usable", "admin", 1), decision("unusable", "tier2", 2)]).meaning == "unusable"
    assert settle([]) is None


def test_meanings_masks_and_questionable_setting():
    exclude, weighted = LabelSettings(), LabelSettings(questionable=0.3)
    assert targets_for(decision("usable_extra", ghosting="absent"), OUTPUTS, exclude) == ([1, 0, 0], [1, 1, 0], 1.0)
    assert targets_for(decision("unusable", ghosting="present", lesions="absent"), OUTPUTS, exclude) == (
        [0, 1, 0], [1, 1, 1], 1.0)
    assert targets_for(decision("questionable", ghosting="present"), OUTPUTS, exclude) == ([0, 1, 0], [0, 1, 0], 1.0)
    assert targets_for(decision("questionable"), OUTPUTS, weighted) == ([0, 0, 0], [1, 0, 0], 0.3)
    assert LabelSettings.from_project({"label_rule": "newest", "questionable": "0.5"}).questionable == 0.5
    with pytest.raises(DatasetError, match="label_rule"):
        LabelSettings.from_project({"label_rule": "oldest"})
    with pytest.raises(DatasetError, match="questionable"):
        LabelSettings.from_project({"questionable": 2})


def _scans(n_subjects=20, scans_per_subject=2, frames=2):
    scans, scan_id = [], 0
    for subject in range(n_subjects):
        for _ in range(scans_per_subject):
            bad = subject % 2 == 1
            scans.append(scan(scan_id, f"sub{subject}",
                              [decision("unusable" if bad else "usable", "tier2", scan_id,
                                        ghosting="present" if bad else "absent")], n_frames=frames))
            scan_id += 1
    return scans


def test_frames_share_the_label_and_subjects_never_straddle_splits():
    scans = _scans()
    scans.append(scan(99, "unjudged", []))  # no decision: left out
    dataset = build_dataset(scans, OUTPUTS, LabelSettings(), seed=3, evaluation="holdout")
    assert dataset.evaluation == "holdout"
    assert len(dataset.items) == 20 * 2 * 2
    splits_of = {}
    for item in dataset.items:
        splits_of.setdefault(item.subject, set()).add(item.split)
        same_scan = [other for other in dataset.items if other.scan_id == item.scan_id]
        assert all(other.targets == item.targets and other.mask == item.mask for other in same_scan)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {len(dataset.split(name)) > 0 for name in ("train", "val", "test")} == {True}
    for name in ("val", "test"):  # stratified: both classes on every side
        assert min(dataset.counts(name)["usable"].values()) > 0
    again = build_dataset(scans, OUTPUTS, LabelSettings(), seed=3, evaluation="holdout")
    assert [i.split for i in again.items] == [i.split for i in dataset.items]
    assert again.digest() == dataset.digest()
    other_seed = build_dataset(scans, OUTPUTS, LabelSettings(), seed=4, evaluation="holdout")
    assert [i.split for i in other_seed.items] != [i.split for i in dataset.items]


def test_manifest_leaves_masked_labels_empty_and_hash_follows_labels(tmp_path):
    scans = _scans(n_subjects=6, scans_per_subject=1, frames=1)
    dataset = build_dataset(scans, OUTPUTS, LabelSettings(), seed=0)
    lines = dataset.write_manifest(tmp_path / "manifest.csv").read_text().splitlines()
    assert lines[0] == "frame_id,scan_id,subject,path,checksum,split,fold,weight,usable,ghosting_motion,lesions"
    assert lines[1].endswith(",1,0,") and lines[2].endswith(",0,1,")
    scans[0] = scan(0, "sub0", [decision("unusable", "tier2", ghosting="present")])
    assert build_dataset(scans, OUTPUTS, LabelSettings(), seed=0).digest() != dataset.digest()


def test_checks_name_too_few_labels_one_class_and_select_outputs_skips_thin_artifacts():
    dataset = build_dataset(_scans(n_subjects=6, scans_per_subject=1, frames=1), [USABLE, GHOSTING], LabelSettings())
    with pytest.raises(DatasetError, match=r"output 'usable' has too few labels \(3 present, 3 absent; at least 4"):
        check_dataset(dataset, 4)
    check_dataset(dataset, 1)
    clean = [scan(i, f"s{i}", [decision("usable", "tier2", i, ghosting="absent")]) for i in range(6)]
    with pytest.raises(DatasetError, match="output 'usable' has only one class"):
        check_dataset(build_dataset(clean, [USABLE], LabelSettings()), 1)
    with pytest.raises(DatasetError, match="nothing to train on"):
        build_dataset([scan(1, "a", [decision("questionable")])], [USABLE], LabelSettings())
    kept, skipped = select_outputs(_scans(n_subjects=6, scans_per_subject=1), OUTPUTS, LabelSettings(), 2)
    assert kept == [USABLE, GHOSTING] and skipped == {"lesions": "0 present / 0 absent"}


def test_small_projects_are_cross_validated_in_folds_grouped_by_subject_and_stratified():
    """40 scans cannot give a 15% test split both classes of a rare artifact: auto picks k-fold CV and says why."""
    scans = _scans(n_subjects=20, scans_per_subject=2, frames=1)
    for index in (0, 4, 8):  # three subjects (six scans) with lesions present, the rest absent
        for offset in (0, 1):
            old = scans[index * 2 + offset]
            scans[index * 2 + offset] = scan(old.scan_id, old.subject, [decision(
                old.decisions[0].meaning, "tier2", old.scan_id, ghosting=old.decisions[0].artifacts[GHOSTING.entry_id],
                lesions="present")])
    for old_index, old in enumerate(scans):
        if old.decisions[0].artifacts[LESIONS.entry_id] == "undefined":
            scans[old_index] = scan(old.scan_id, old.subject, [decision(
                old.decisions[0].meaning, "tier2", old.scan_id, ghosting=old.decisions[0].artifacts[GHOSTING.entry_id],
                lesions="absent")])
    dataset = build_dataset(scans, OUTPUTS, LabelSettings(), seed=1)
    assert dataset.evaluation == "cv" and dataset.folds == 5
    assert dataset.evaluation_reason == "20 labelled subjects are too few for a test split (from 200)"
    folds_of = {}
    for item in dataset.items:
        folds_of.setdefault(item.subject, set()).add(item.fold)
    assert all(len(folds) == 1 for folds in folds_of.values())
    lesion_folds = {item.fold for item in dataset.items if item.targets[2] == 1 and item.mask[2]}
    assert len(lesion_folds) == 3  # the three lesion subjects spread over three folds, not bunched in one
    for k in range(5):
        fold = dataset.fold(k)
        assert fold.split("test") and fold.split("train") and not fold.split("val")
        assert not {i.subject for i in fold.split("test")} & {i.subject for i in fold.split("train")}
    with pytest.raises(DatasetError, match="cannot hold both classes"):
        build_dataset(scans, OUTPUTS, LabelSettings(), seed=1, evaluation="holdout")


def test_dataset_hash_covers_file_identity():
    scans = _scans(n_subjects=6, scans_per_subject=1, frames=1)
    dataset = build_dataset(scans, OUTPUTS, LabelSettings(), seed=0)
    changed = list(scans)
    frame = changed[0].frames[0]
    changed[0] = ScanRecord(changed[0].scan_id, changed[0].subject,
                            (FrameRecord(frame.frame_id, frame.path, "another-checksum"),), changed[0].decisions)
    assert build_dataset(changed, OUTPUTS, LabelSettings(), seed=0).digest() != dataset.digest()
