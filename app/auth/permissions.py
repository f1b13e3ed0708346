"""Every route declares who may call it; the declaration is also what enforces it.

``@permission("public")``, ``@permission("login")``, ``@permission("superuser")`` or
``@permission("project", "tier1")``: the project is found from the first object id in
the URL (project_id, experiment_id, scan_id, frame_id, ...). The permission-matrix test
walks the URL map and fails on any view without a declaration.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from flask import current_app, g, request
from flask_login import current_user

from app.services import access
from app.services.errors import Forbidden, Unauthorized


_ENFORCED = "qcloop.permission_enforced"


@dataclass(frozen=True)
class Permission:
    kind: str  # public | login | superuser | project
    role: str | None = None


def permission(kind: str, role: str | None = None) -> Callable:
    if kind not in ("public", "login", "superuser", "project"):
        raise ValueError(f"unknown permission kind {kind!r}")
    if kind == "project" and role not in access.ROLE_RANK:
        raise ValueError(f"project permission needs a role among {tuple(access.ROLE_RANK)}")
    declared = Permission(kind, role)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not request.environ.get(_ENFORCED):
                enforce(declared, kwargs)
            return view(*args, **kwargs)

        wrapper.permission = declared
        return wrapper

    return decorate


def enforce(declared: Permission, view_args: dict) -> None:
    if declared.kind == "public":
        return
    if not current_user.is_authenticated:
        raise Unauthorized("Authentication credentials were not provided.")
    if declared.kind == "login":
        return
    if declared.kind == "superuser":
        if not current_user.is_superuser:
            raise Forbidden("You do not have permission to perform this action.")
        return
    argument = next((name for name in access.OBJECT_ARGUMENTS if name in view_args), None)
    if argument is None:
        raise RuntimeError("a project permission needs an object id in the URL")
    project_id = access.project_of(argument, view_args[argument])
    g.project_id = project_id
    g.project_role = access.require_project_role(current_user, project_id, declared.role)


def enforce_before_view() -> None:
    """Check the endpoint's declared permission before any other decorator of the view runs,
    so that body validation never answers an anonymous caller or a non-member first."""
    # Each request authenticates afresh, even when requests share one app context (as in tests).
    g.pop("_login_user", None)
    view = current_app.view_functions.get(request.endpoint or "")
    declared = getattr(view, "permission", None)
    if declared is not None:
        enforce(declared, request.view_args or {})
        request.environ[_ENFORCED] = True


def declared_permission(endpoint: str) -> Permission | None:
    """The permission a registered endpoint declares, or None (which the matrix test rejects)."""
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "permission", None)
