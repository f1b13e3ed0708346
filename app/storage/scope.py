"""Per-project storage roots: which files a project's frames may name.

The allowed roots (data root, ``QCLOOP_ALLOWED_ROOTS``) bound every location; within them a
project may name its own uploads folder, and, when ``QCLOOP_PROJECT_ROOTS`` is set, only
folders under those templates (``{project_id}`` is replaced by the project's id). Other
projects' uploads are never reachable. A file the project already owns stays usable, so a
re-import of its own export never fails on a root changed later.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from app.storage import LocalLocation, Location, Roots, StorageError
from app.storage.identity import UPLOADS, uploads_folder


@dataclass(frozen=True)
class ProjectScope:
    """The roots of one project (``project_id`` None: a project an import is about to create)."""

    project_id: int | None
    roots: Roots
    templates: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, project_id: int | None, roots: Roots | None = None) -> ProjectScope:
        return cls(project_id, roots or Roots.from_config(), tuple(current_app.config.get("PROJECT_ROOTS") or ()))

    def _own_roots(self) -> tuple[list[Path], list[str]]:
        local, s3 = [], []
        if self.project_id is None:
            return local, s3
        local.append(self.roots.data_root / uploads_folder(self.project_id))
        for template in self.templates:
            root = template.replace("{project_id}", str(self.project_id))
            if root.startswith("s3://"):
                s3.append(root.rstrip("/") + "/")
            else:
                local.append((self.roots.data_root / root).resolve())
        return local, s3

    def check(self, location: Location) -> None:
        """Raise StorageError when the (already resolved) location is outside this project's roots."""
        local, s3 = self._own_roots()
        if isinstance(location, LocalLocation):
            path = location.path
            if any(path.is_relative_to(root) for root in local):
                return
            if path.is_relative_to(self.roots.data_root / UPLOADS):
                raise StorageError(f"file location {path} is another project's upload, outside this project's roots")
        elif any(str(location).startswith(prefix) for prefix in s3):
            return
        if self.templates and self.project_id is not None:
            raise StorageError(f"file location {location} is outside this project's roots "
                               f"({', '.join(map(str, local + s3))})")
