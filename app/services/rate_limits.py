"""Rate-limit counts in qcloop's database, so that every server process shares one budget."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from app.db import RateLimitHit, db, utcnow


def hits(key: str, window: timedelta) -> tuple[int, datetime | None]:
    """The key's hits within the last ``window``, and when the oldest of them leaves it."""
    count, oldest = db.session.execute(
        select(func.count(), func.min(RateLimitHit.at)).where(RateLimitHit.key == key,
                                                              RateLimitHit.at > utcnow() - window)).one()
    return count, (oldest + window if oldest is not None else None)


def hit(key: str, keep: timedelta) -> None:
    """Count one hit (committed with the request); hits older than ``keep`` count for nothing and go."""
    db.session.execute(delete(RateLimitHit).where(RateLimitHit.at < utcnow() - keep))
    db.session.add(RateLimitHit(key=key[:200]))
    db.session.flush()
