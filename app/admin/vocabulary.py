"""Project admins edit their project's decision options and artifact entries."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.admin import bp
from app.auth.permissions import permission
from app.db import ArtifactEntry, DecisionOption, Project, boundary
from app.services import vocabulary
from app.services.errors import ServiceError
from app.services.loaders import load

_MODELS = {"decision": DecisionOption, "artifact": ArtifactEntry}


def _form_fields(kind: str, form) -> dict:
    """The fields a vocabulary form sends, typed as the service expects."""
    fields: dict = {}
    for name in ("key", "label", "meaning", "shortcut"):
        if form.get(name, "").strip():
            fields[name] = form[name].strip()
    if form.get("position", "").strip():
        try:
            fields["position"] = int(form["position"])
        except ValueError:
            fields["position"] = form["position"]
    if "shortcut" in form and not form["shortcut"].strip():
        fields["shortcut"] = None
    fields["retired"] = form.get("retired") == "on"
    if kind == "decision":
        fields["requires_note"] = form.get("requires_note") == "on"
    return fields


@bp.get("/projects/<int:project_id>/vocabulary")
@permission("project", "admin")
def vocabulary_page(project_id: int):
    return render_template(
        "admin/vocabulary.html", project=load(Project, project_id),
        options=vocabulary.decision_options(project_id, include_retired=True),
        entries=vocabulary.artifact_entries(project_id, include_retired=True),
        version=vocabulary.vocabulary_version(project_id),
    )


@bp.post("/projects/<int:project_id>/vocabulary/<kind>")
@permission("project", "admin")
def vocabulary_save(project_id: int, kind: str):
    model = _MODELS.get(kind)
    if model is None:
        flash(f"unknown vocabulary kind {kind!r}", "error")
        return redirect(url_for("admin.vocabulary_page", project_id=project_id))
    fields = _form_fields(kind, request.form)
    row_id = request.form.get("id", "")
    try:
        if row_id:
            fields.pop("key", None)
            vocabulary.update_entry(model, project_id, int(row_id), fields, current_user)
        else:
            vocabulary.add_entry(model, project_id, fields, current_user)
        flash("Vocabulary saved.", "info")
    except (ServiceError, ValueError) as err:
        boundary.rollback()
        flash(getattr(err, "message", str(err)), "error")
    return redirect(url_for("admin.vocabulary_page", project_id=project_id))
