"""Sync a project with the image repository a site already runs, on a schedule or when asked.

A SOURCE string names the repository: a folder path, ``bids:PATH`` (a BIDS dataset) or
``dicomweb+http(s)://HOST/PATH`` (a DICOMweb server). Each kind is one module implementing
:class:`app.services.sync.base.Source`, registered in :data:`KINDS`; :mod:`.engine` runs the cycle
(list, fetch what is new or changed, push decisions back, record the run) and :mod:`.schedule` starts
due runs in the worker.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from app.services.errors import InvalidInput
from app.services.sync.base import Source

# kind -> "module:Class"; a class is imported when a source of its kind is opened (a kind's client library
# is loaded only where it is used).
KINDS: dict[str, str] = {
    "folder": "app.services.sync.folder:FolderSource",
    "bids": "app.services.sync.bids:BidsSource",
    "dicomweb": "app.services.sync.dicomweb:DicomwebSource",
}
# SOURCE prefixes that name a kind; anything else is a folder path.
PREFIXES = {"bids:": "bids", "dicomweb+http://": "dicomweb", "dicomweb+https://": "dicomweb"}
ON_DISK = ("folder", "bids")


def kind_of(text: str) -> str:
    """The kind a SOURCE string names."""
    return next((kind for prefix, kind in PREFIXES.items() if text.startswith(prefix)), "folder")


def source_class(kind: str) -> type:
    module, _, name = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def open_source(text: str, project_id: int, *, from_data_root: bool = False,
                patterns: str | Iterable[str] | None = None) -> Source:
    """The source a SOURCE string names, checked: an on-disk one must be a folder under the data root or an
    allowed root, and not another project's uploads (400 otherwise). A relative path is taken from the data
    root with ``from_data_root`` (the API, the worker), else from the working folder (the command line)."""
    from app.services.sync.folder import checked_root

    text = (text or "").strip()
    if not text:
        raise InvalidInput("source is required", field="source")
    kind = kind_of(text)
    if patterns and kind != "folder":
        raise InvalidInput("patterns read folder sources only", field="patterns")
    cls = source_class(kind)
    if kind in ON_DISK:
        root = checked_root(text.removeprefix("bids:") if kind == "bids" else text, project_id,
                            from_data_root=from_data_root)
        return cls(root, patterns=patterns) if kind == "folder" else cls(root)
    return cls(text)
