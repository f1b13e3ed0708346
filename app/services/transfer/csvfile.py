"""Reading CSV files row by row (never the whole file at once) with the share of bytes read."""
from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path
from typing import Iterator

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
# Spreadsheets run a cell that starts with one of these as a formula ("=cmd|' /C calc'!A0"): exports put
# a "'" before it, which spreadsheets read as "this is text", and imports take that "'" off again.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Bytes that are not UTF-8 decode to these (surrogateescape), so the row holding them can be named.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def escape_formula(cell: str) -> str:
    """The cell as text a spreadsheet will not evaluate. A cell already starting with "'" before such a
    character gets one more, so that ``unescape_formula`` gives back every text exactly."""
    return "'" + cell if cell.lstrip("'").startswith(_FORMULA_STARTS) else cell


def unescape_formula(cell: str) -> str:
    """The text ``escape_formula`` was given (a cell it did not change comes back unchanged)."""
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(_FORMULA_STARTS) else cell


class _CountingReader(io.RawIOBase):
    """A raw stream that counts the bytes handed out, for progress while parsing text on top of it."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.handle.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


class CsvSource:
    """A CSV file opened for streaming: header, rows with their row numbers, fraction read."""

    def __init__(self, path: Path) -> None:
        self.size = max(1, path.stat().st_size)
        self._raw = _CountingReader(open(path, "rb"))
        text = io.TextIOWrapper(io.BufferedReader(self._raw, 1 << 16), encoding="utf-8-sig", newline="",
                                errors="surrogateescape")
        self._reader = csv.reader(text)
        self._text = text
        try:
            self.header = [unescape_formula(name).strip() for name in next(self._reader)]
        except StopIteration:
            self.header = []
        except csv.Error as err:
            self.close()
            raise ValueError(f"row 1: not a CSV file ({err})") from err
        if _UNDECODABLE.search("".join(self.header)):
            self.close()
            raise ValueError("row 1: not UTF-8 text")

    @property
    def fraction(self) -> float:
        return min(1.0, self._raw.count / self.size)

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(row number counting the header as row 1, {column: cell}); short rows get empty cells."""
        header = self.header
        number = 1
        try:
            for cells in self._reader:
                number += 1
                if not any(cell.strip() for cell in cells):
                    continue
                if _UNDECODABLE.search("".join(cells)):
                    raise ValueError(f"row {number}: not UTF-8 text")
                cells = [unescape_formula(cell) for cell in cells]
                if len(cells) < len(header):
                    cells = cells + [""] * (len(header) - len(cells))
                yield number, dict(zip(header, cells))
        except csv.Error as err:
            raise ValueError(f"row {number + 1}: {err}") from err

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CsvSink:
    """Rows written into a buffer that the caller drains as text chunks (for streamed answers or files);
    text cells are escaped so that no spreadsheet runs them as formulas."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")

    def row(self, cells: list) -> None:
        self.writer.writerow(["" if cell is None else escape_formula(cell) if isinstance(cell, str) else cell
                              for cell in cells])

    def drain(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text
