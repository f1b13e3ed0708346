"""Reading the audit log a page at a time, for the superusers' audit page."""
from __future__ import annotations

from dataclasses import dataclass, field

from app.db import AuditEvent, page
from app.services import users


@dataclass(frozen=True)
class AuditPage:
    """One page of events, newest first, with the usernames of their actors (ids of deleted users stay ids)."""

    count: int
    results: list[AuditEvent]
    offset: int
    limit: int
    names: dict[int, str] = field(default_factory=dict)

    @property
    def previous(self) -> bool:
        return self.offset > 0

    @property
    def next(self) -> bool:
        return self.offset + self.limit < self.count


def audit_page(action: str | None, offset: int, limit: int) -> AuditPage:
    """The events of ``action`` (an exact action, or a prefix ending in a dot) from ``offset`` on."""
    count, rows = page(users.audit_events(action), limit, offset)
    names = users.usernames_by_id({event.actor_id for event in rows if event.actor_id})
    return AuditPage(count=count, results=rows, offset=offset, limit=limit, names=names)
