"""Log-in, log-out and the MIQA-compatible token endpoint."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from app.auth.forms import LoginForm
from app.auth.permissions import permission
from app.db import db
from app.services import users

bp = Blueprint("auth", __name__)


def csrf_exempt(view):
    """Mark a view that takes credentials in the body, never a cookie, as exempt from CSRF."""
    view.csrf_exempt = True
    return view


def _safe_next(target: str | None) -> str:
    if target and not urlparse(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("ui.projects")


@bp.route("/login", methods=["GET", "POST"])
@permission("public")
def login():
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        user = users.check_credentials(form.username.data, form.password.data)
        if user is None:
            users.record_failed_login(form.username.data, via="form")
            db.session.commit()
            flash("Unable to log in with provided credentials.", "error")
            return render_template("auth/login.html", form=form), 400
        login_user(user, remember=form.remember.data)
        users.record_login(user, via="form")
        db.session.commit()
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@permission("login")
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/api-token-auth/", methods=["POST"])
@permission("public")
@csrf_exempt
def api_token_auth():
    """MIQA/DRF ``obtain_auth_token``: form or JSON username and password -> {"token": ...}."""
    data = request.get_json(silent=True) if request.is_json else request.form
    data = data if isinstance(data, dict) or hasattr(data, "get") else {}
    username, password = data.get("username"), data.get("password")
    missing = {field: ["This field is required."] for field, value in
               (("username", username), ("password", password)) if not isinstance(value, str) or not value}
    if missing:
        return jsonify(missing), 400
    user = users.check_credentials(username, password)
    if user is None:
        users.record_failed_login(username, via="token")
        db.session.commit()
        return jsonify({"non_field_errors": ["Unable to log in with provided credentials."]}), 400
    _, raw = users.issue_token(user, name="api-token-auth")
    users.record_login(user, via="token")
    db.session.commit()
    return jsonify({"token": raw})
