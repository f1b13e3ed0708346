"""What reading and checking an import file found: every error and warning with the place (row or JSON
path) and field it concerns; one error refuses the whole file."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.services.errors import InvalidInput

MAX_ERRORS = 100


@dataclass(slots=True)
class Problem:
    where: str
    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}, field {self.field}: {self.message}" if self.field else f"{self.where}: {self.message}"

class Problems:
    """Errors and warnings found while reading and checking a file (errors capped at MAX_ERRORS)."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.error_count = 0
        self.warnings: list[Problem] = []
        self.warning_count = 0

    def error(self, where: str, field: str | None, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(Problem(where, field, message))

    def warn(self, where: str, field: str | None, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_ERRORS:
            self.warnings.append(Problem(where, field, message))

    def raise_if_any(self) -> None:
        """All or nothing: one error refuses the whole file, naming (up to 100 of) its problems."""
        if not self.error_count:
            return
        first = self.errors[0]
        more = f" (and {self.error_count - 1} more)" if self.error_count > 1 else ""
        details: dict[str, Any] = {"errors": [asdict(p) for p in self.errors], "error_count": self.error_count}
        if first.field:
            details["field"] = first.field
        raise InvalidInput(f"{first}{more}", **details)
