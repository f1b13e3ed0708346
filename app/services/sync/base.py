"""The interface every sync source implements: list what it holds, fetch an image, push decisions back.

A source is one kind of image repository (a folder, a BIDS dataset, a DICOMweb server). The engine
(:mod:`app.services.sync.engine`) compares a listing with what the source gave before, fetches what is new
or changed, and pushes the latest decisions back; a source only speaks to its repository.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from app.services.errors import InvalidInput


def display_url(text: str) -> str:
    """A SOURCE string fit to show, log or store: a URL without its user and password (anything else as is)."""
    try:
        parts = urlsplit(text)
    except ValueError:  # a malformed URL (an unclosed IPv6 bracket): its user info cut by hand
        parts = None
    if parts is None or not parts.scheme or "@" not in parts.netloc:
        scheme, sep, rest = text.partition("://")
        if not sep or "@" not in rest.split("/", 1)[0]:
            return text
        authority, slash, path = rest.partition("/")
        return f"{scheme}://{authority.rsplit('@', 1)[1]}{slash}{path}"
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def has_userinfo(text: str) -> bool:
    """Whether a URL names a user or password."""
    return display_url(text) != text


class SourceError(InvalidInput):
    """A source that cannot be read (unreachable, refused, not what its URL says), naming it (never with its
    password) and the item."""

    def __init__(self, source: str, message: str, *, item: str | None = None) -> None:
        source = display_url(source)
        super().__init__(f"{source}: {item + ': ' if item else ''}{message}", field="source")
        self.source, self.item = source, item


@dataclass(frozen=True)
class SourceItem:
    """One image a source holds."""

    key: str                  # stable id of the image within its source
    version: str              # changes when the image changes
    experiment: str           # experiment name
    subject: str | None       # subject id
    session: str | None       # session id
    scan_name: str            # scan name, unique within the experiment
    scan_type: str | None     # scan type when it maps to one
    metadata: dict[str, Any]  # sidecar JSON / DICOM series attributes; kept as the scan's metadata
    local_path: Path | None = None  # on-disk sources: the file or DICOM folder registered in place (no copy)
    frame: int | None = None  # the frame number the source names (taken when free; else the scan's next)


@dataclass
class Listing:
    """What a source holds now (or, ``incremental``, what is new or changed since the cursor)."""

    items: list[SourceItem]
    cursor: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)
    incremental: bool = False  # True: an absent key is not a removal (``removed`` names those gone)
    removed: list[str] = field(default_factory=list)  # incremental: keys the cursor knew the source no longer has


@dataclass(frozen=True)
class Outgoing:
    """One scan's latest decision, pushed back to the source."""

    key: str
    scan_id: int
    decision: str                 # what the option means, e.g. "usable"
    label: str                    # the option's label, e.g. "Usable"
    code: str                     # the option's key (MIQA's code), e.g. "U"
    artifacts: dict[str, str]     # artifact key -> "present" | "absent" (not-judged left out)
    note: str
    reviewer: str
    created: datetime
    metadata: dict[str, Any]      # the scan's stored metadata (from SourceItem.metadata)


@dataclass
class Pushed:
    """What a push did."""

    pushed: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    file: Path | None = None  # an export file written instead of/in addition to pushing


class Source(Protocol):
    """One repository, named by its canonical URL."""

    kind: ClassVar[str]
    url: str

    def check(self) -> None:
        """Raise :class:`SourceError` when the source cannot be read now (a folder gone, a server that refuses
        the credentials or cannot be reached), with one cheap look: a sync is refused before it is queued."""

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        """Every image the source holds now, or those new since ``cursor`` (``Listing.incremental``)."""

    def fetch(self, item: SourceItem, into: Path) -> Path:
        """The frame path of ``item``: copied or downloaded under ``into`` (a fresh folder in the data root),
        or ``item.local_path`` for an on-disk source that registers files in place."""

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        """Take an item that failed (fetched or not) out of ``cursor``, the listing's, which the engine stores
        after the run: an incremental source lists it again next run. A source that lists everything each run
        has nothing to do (an item that failed was never recorded as synced)."""

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        """Write the decisions back where the repository's users see them."""
