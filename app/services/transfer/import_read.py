"""Reading an import file into a Document: MIQA CSV, MIQA JSON, qcloop's full CSV and full JSON.

The first of an import's three steps (read, plan, apply): nothing here touches the database;
every problem found is collected on the document, naming its row or JSON path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from flask import current_app

from app.services.errors import InvalidInput
from app.services.transfer import full, miqa_csv, miqa_json
from app.services.transfer.csvfile import CsvSource
from app.services.transfer.model import Document

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """The progress callback of an import nobody watches."""
    return None


def read_document(path: Path, filename: str | None = None, progress: Progress = no_progress) -> Document:
    """Parse a MIQA CSV, MIQA JSON, qcloop full CSV or full JSON file; problems are collected."""
    name = (filename or path.name).lower()
    unlisted = current_app.config.get("IMPORT_UNLISTED_ARTIFACTS", "absent")
    if unlisted not in ("absent", "undefined"):
        raise InvalidInput("QCLOOP_IMPORT_UNLISTED_ARTIFACTS must be absent or undefined", field="unlisted")
    with open(path, "rb") as handle:
        first = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    is_json = name.endswith(".json") or (not name.endswith(".csv") and first in (b"{", b"["))
    read_progress = lambda fraction: progress(0.4 * fraction, "reading")  # noqa: E731
    if is_json:
        document = Document("miqa-json")
        with open(path, "rb") as handle:
            miqa_json.read(handle, document, unlisted, read_progress, path.stat().st_size)
        return document
    try:
        source = CsvSource(path)
    except ValueError as err:
        document = Document("miqa-csv")
        document.problems.error("row 1", None, str(err).split(": ", 1)[-1])
        return document
    with source:
        document = Document("csv" if "record" in source.header else "miqa-csv")
        if not source.header:
            document.problems.error("row 1", None, "the file is empty (a header row is required)")
            return document
        try:
            if document.format == "csv":
                full.read(source, document, read_progress)
            else:
                miqa_csv.read(source, document, unlisted, read_progress)
        except ValueError as err:  # the CSV itself is broken at some row: name it, stop reading
            where, _, message = str(err).partition(": ")
            document.problems.error(where, None, message)
    return document

