"""Form posts that call one service: its refusal becomes an error message on the next page."""
from __future__ import annotations

from typing import Callable, TypeVar

from flask import flash

from app.db import boundary
from app.services.errors import ServiceError

T = TypeVar("T")


def flash_outcome(action: Callable[[], T], success: Callable[[T], str]) -> T | None:
    """Run ``action``; flash ``success(result)``, or the service's refusal (rolled back) as an error."""
    try:
        result = action()
    except ServiceError as err:
        boundary.rollback()
        flash(err.message, "error")
        return None
    flash(success(result), "info")
    return result
