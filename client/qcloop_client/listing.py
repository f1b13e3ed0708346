"""Lists that read the server's pages lazily, and their pandas view (pandas is optional)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


DECISION_COLUMNS = ["id", "scan", "scan_name", "experiment", "decision", "meaning", "creator", "creator_role",
                    "created", "note", "present", "absent", "source", "location"]


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed: pip install 'qcloop-client[{extra}]' "
                          f"(or pip install {module})") from None


class Listing(Iterable[dict]):
    """The items of a paginated list, fetched page by page as they are iterated (again on each iteration)."""

    def __init__(self, items: Callable[[], Iterator[dict]], row: Callable[[dict], dict] = dict,
                 times: tuple[str, ...] = ()) -> None:
        self._items = items
        self._row = row
        self._times = times

    def __iter__(self) -> Iterator[dict]:
        return self._items()

    def to_list(self) -> list[dict]:
        return list(self)

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per item; times as UTC timestamps."""
        pandas = require("pandas", "pandas")
        frame = pandas.DataFrame([self._row(item) for item in self])
        for column in self._times:
            if column in frame:
                frame[column] = pandas.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame


def decision_row(decision: dict) -> dict:
    """A decision as one flat row: who, when, what, and (listed by project) the scan it is about."""
    creator = decision.get("creator") or {}
    artifacts = decision.get("artifacts") or {}
    location = decision.get("location")
    return {
        "id": decision["id"], "scan": decision["scan"], "scan_name": decision.get("scan_name"),
        "experiment": decision.get("experiment"), "decision": decision["decision"],
        "meaning": decision.get("meaning"), "creator": creator.get("username"),
        "creator_role": decision.get("creator_role"), "created": decision.get("created"),
        "note": decision.get("note"), "present": ";".join(artifacts.get("present", [])),
        "absent": ";".join(artifacts.get("absent", [])), "source": decision.get("source"),
        "location": None if location is None else ";".join(f"{axis}={location[axis]}" for axis in "ijk"),
    }
