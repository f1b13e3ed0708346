"""The engine with a source kind registered by a test (one more module is one more kind): fetched images
are moved into place whole, an unreadable one is listed as failed and leaves no file while the rest is
imported, a changed image is a new frame of its scan with its decisions kept, decisions are pushed once."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import pytest

from app.db import Decision, Scan, db
from app.services import decisions, sync
from app.services.sync import engine
from app.services.sync.base import Listing, Outgoing, Pushed, SourceItem
from app.storage import Roots


class MemorySource:
    """A repository held in a dict: key -> (version, volume or None for a broken file)."""

    kind: ClassVar[str] = "memory"
    images: ClassVar[dict[str, tuple[str, np.ndarray | None]]] = {}
    pushed: ClassVar[list[Outgoing]] = []

    def __init__(self, url: str) -> None:
        self.url = url

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        items = [SourceItem(key=key, version=version, experiment="visit1", subject="01", session=None,
                            scan_name=f"scan-{key}", scan_type="T2", metadata={"Key": key})
                 for key, (version, _) in sorted(self.images.items())]
        return Listing(items, {"seen": len(items)})

    def fetch(self, item: SourceItem, into: Path) -> Path:
        volume = self.images[item.key][1]
        path = into / f"{item.key}.nii.gz"
        if volume is None:
            path.write_bytes(b"not a volume")
        else:
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
        return path

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        """Every run lists every image: nothing to forget."""

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        self.pushed.extend(decisions)
        return Pushed(len(decisions))


class BookmarkedSource(MemorySource):
    """The same repository listed incrementally, as a DICOMweb server is: only the images whose key and version
    the cursor does not hold."""

    kind: ClassVar[str] = "bookmarked"

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        seen = dict((cursor or {}).get("seen", {}))
        items = [item for item in super().list(None).items if seen.get(item.key) != item.version]
        seen.update((item.key, item.version) for item in items)
        return Listing(items, {"seen": seen}, incremental=True)

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        cursor["seen"].pop(key, None)


@pytest.fixture
def memory(monkeypatch):
    for kind, name in (("memory", "MemorySource"), ("bookmarked", "BookmarkedSource")):
        monkeypatch.setitem(sync.KINDS, kind, f"{__name__}:{name}")
        monkeypatch.setitem(sync.PREFIXES, f"{kind}:", kind)
    MemorySource.images.clear()
    MemorySource.pushed.clear()
    return MemorySource


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 100, (8, 8, 8)).astype(np.int16)


def _files(project_id: int) -> list[str]:
    root = engine.fetch_folder(project_id, Roots.from_config())
    return sorted(str(Path(folder, name).relative_to(root)) for folder, _, names in os.walk(root) for name in names)


def test_fetched_images_fail_alone_change_as_new_frames_and_push_once(factory, memory):
    project = factory.project("Memory")
    reviewer = factory.member(project, "tier2", "memory-reviewer")
    memory.images.update({"a": ("1", _volume(1)), "b": ("1", None)})

    first = engine.run_sync(project, "memory:lab", None)
    assert (first.added_items, [line["item"] for line in first.failed_items]) == (["a"], ["b"])
    assert "not a readable NIfTI image" in first.failed_items[0]["reason"]
    [kept] = _files(project.id)  # in the project's own uploads
    assert kept.startswith(f"{first.source_id}/") and kept.endswith("/a.nii.gz")  # nothing of b, no partial
    scan = db.session.scalars(db.select(Scan).where(Scan.name == "scan-a")).one()
    assert (scan.scan_type, scan.subject_id, scan.meta, len(scan.frames)) == ("T2", "01", {"Key": "a"}, 1)
    decisions.record_decision(scan, reviewer, "U", role="tier2")
    db.session.commit()

    memory.images.update({"a": ("2", _volume(2)), "b": ("2", _volume(3))})
    second = engine.run_sync(project, "memory:lab", None)
    assert (second.added_items, second.changed, second.failed, second.pushed) == (["b"], 1, 0, 1)
    db.session.expire_all()
    scan = db.session.get(Scan, scan.id)
    assert [frame.frame_number for frame in scan.frames] == [0, 1]
    assert scan.frames[0].checksum != scan.frames[1].checksum
    assert db.session.scalar(db.select(db.func.count(Decision.id)).where(Decision.scan_id == scan.id)) == 1
    assert [(out.key, out.decision, out.label, out.code, out.reviewer) for out in memory.pushed] == [
        ("a", "usable", "Usable", "U", "memory-reviewer")]
    assert first.source.cursor == {"seen": 2}

    third = engine.run_sync(project, "memory:lab", None)
    assert (third.added, third.changed, third.unchanged, third.pushed) == (0, 0, 2, 0)
    assert len(memory.pushed) == 1 and len(_files(project.id)) == 3


def test_an_item_that_fails_after_it_was_fetched_is_listed_again_by_an_incremental_source(factory, memory):
    project = factory.project("Bookmarked")
    memory.images.update({"a": ("1", _volume(1)), "b": ("1", None)})  # b is fetched, then unreadable

    first = engine.run_sync(project, "bookmarked:lab", None)
    assert (first.added_items, [line["item"] for line in first.failed_items]) == (["a"], ["b"])
    assert first.source.cursor == {"seen": {"a": "1"}}  # the engine took b out of the stored cursor
    assert len(_files(project.id)) == 1

    memory.images["b"] = ("1", _volume(2))  # readable now, its version as before
    second = engine.run_sync(project, "bookmarked:lab", None)
    assert (second.added_items, second.failed_items, second.unchanged) == (["b"], [], 0)
    assert engine.run_sync(project, "bookmarked:lab", None).added == 0
