"""Recording audit events: log-ins, role changes, tokens, lock breaks, imports, promotions."""
from __future__ import annotations

from typing import Any

from flask import has_request_context, request

from app.db import AuditEvent, User, db


def record(
    action: str,
    actor: User | None = None,
    project_id: int | None = None,
    target: tuple[str, Any] | None = None,
    **details: Any,
) -> AuditEvent:
    """Add an audit event to the current transaction (committed with the change it describes)."""
    event = AuditEvent(
        action=action,
        actor_id=actor.id if actor is not None and getattr(actor, "is_authenticated", False) else None,
        project_id=project_id,
        target_type=target[0] if target else None,
        target_id=str(target[1]) if target else None,
        address=request.remote_addr if has_request_context() else None,
        details=details,
    )
    db.session.add(event)
    return event
