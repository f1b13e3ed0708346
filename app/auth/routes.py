"""Log-in and log-out, sign-up, password change and reset, invitations, the profile page with
API tokens, and the MIQA-compatible token endpoint."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import current_app, flash, jsonify, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from flask_login.config import COOKIE_NAME

from app.auth import bp
from app.auth.forms import (
    ChangePasswordForm,
    ForgotPasswordForm,
    InviteAcceptForm,
    KeymapForm,
    LoginForm,
    ResetPasswordForm,
    SignupForm,
    TokenForm,
)
from app.auth.permissions import permission
from app.services import invitations, keymaps, users
from app.services import login as logins
from app.services.errors import ServiceError


def csrf_exempt(view):
    """Mark a view that takes credentials in the body, never a cookie, as exempt from CSRF."""
    view.csrf_exempt = True
    return view


def _safe_next(target: str | None) -> str:
    if target and not urlparse(target).netloc and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("ui.projects")


def _page(template: str, status: int = 200, retry_after: int | None = None, **context):
    response = make_response(render_template(template, **context), status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.route("/login", methods=["GET", "POST"])
@permission("public")
def login():
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        outcome = logins.log_in(form.username.data, form.password.data, via="form")
        if outcome.user is None:
            status = 429 if outcome.refusal == "throttled" else 400
            return _page("auth/login.html", status, outcome.retry_after, form=form, error=outcome.message)
        login_user(outcome.user, remember=form.remember.data)
        return redirect(_safe_next(request.args.get("next")))
    return _page("auth/login.html", 400 if form.errors else 200, form=form)


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
    outcome = logins.log_in(username, password, via="token")
    if outcome.refusal == "throttled":
        response = jsonify({"error": "throttled", "detail": outcome.message, "retry_after": outcome.retry_after})
        response.status_code = 429
        response.headers["Retry-After"] = str(outcome.retry_after)
        return response
    if outcome.user is None:  # DRF's answer, also for a sign-up still waiting for approval
        return jsonify({"non_field_errors": [logins.CREDENTIALS_REFUSED]}), 400
    return jsonify({"token": outcome.token})


@bp.route("/signup", methods=["GET", "POST"])
@permission("public")
def signup():
    """Self sign-up: the account waits for a superuser's approval."""
    if current_user.is_authenticated:
        return redirect(url_for("ui.projects"))
    form = SignupForm()
    if form.validate_on_submit():
        try:
            users.sign_up(form.username.data, form.email.data, form.password.data,
                          form.first_name.data or "", form.last_name.data or "")
        except ServiceError as err:  # the refusal's page: the request boundary rolls back
            return _page("auth/signup.html", err.status, form=form, error=err.message)
        flash("Thank you. A superuser will approve your account; you can log in once they have.", "info")
        return redirect(url_for("auth.login"))
    return _page("auth/signup.html", 400 if form.errors else 200, form=form)


@bp.route("/password/forgot", methods=["GET", "POST"])
@permission("public")
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        try:
            logins.request_password_reset(form.login.data)
        except ServiceError as err:
            return _page("auth/forgot.html", err.status, err.details.get("retry_after"), form=form, error=err.message)
        flash("If an active account has that name or address, a reset link is on its way to its email address.",
              "info")
        return redirect(url_for("auth.login"))
    return _page("auth/forgot.html", 400 if form.errors else 200, form=form)


@bp.route("/password/reset/<reset_token>", methods=["GET", "POST"])
@permission("public")
def reset_password(reset_token: str):
    account = users.user_for_reset_token(reset_token)  # an expired or used link answers 400 here
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            users.reset_password(reset_token, form.password.data)
        except ServiceError as err:
            return _page("auth/reset.html", err.status, form=form, account=account, error=err.message)
        flash("Your password is changed; log in with it.", "info")
        return redirect(url_for("auth.login"))
    return _page("auth/reset.html", 400 if form.errors else 200, form=form, account=account)


@bp.route("/invite/<invite_token>", methods=["GET", "POST"])
@permission("public")
def accept_invite(invite_token: str):
    """Accepting an invitation creates the account and its membership, or nothing on bad input."""
    invitation = invitations.open_invitation(invite_token)
    form = InviteAcceptForm()
    if form.validate_on_submit():
        try:
            user = logins.accept_invitation(invite_token, form.username.data, form.password.data,
                                            form.first_name.data or "", form.last_name.data or "")
        except ServiceError as err:
            return _page("auth/invite.html", err.status, form=form, invitation=invitation, error=err.message)
        logout_user()
        login_user(user)
        flash(f"Welcome, {user.display_name}.", "info")
        return redirect(url_for("ui.projects"))
    return _page("auth/invite.html", 400 if form.errors else 200, form=form, invitation=invitation)


def _profile(status: int = 200, new_token: str | None = None, **forms):
    forms.setdefault("password_form", ChangePasswordForm(formdata=None))
    forms.setdefault("token_form", TokenForm(formdata=None))
    forms.setdefault("keymap_form", KeymapForm(formdata=None, keymap=current_user.keymap))
    return _page("auth/profile.html", status, tokens=users.list_tokens(current_user),
                 token_state=users.token_state, new_token=new_token, **forms)


@bp.get("/profile")
@permission("login")
def profile():
    return _profile()


@bp.post("/profile/password")
@permission("login")
def change_password():
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _profile(400, password_form=form)
    try:
        users.change_password(current_user, form.current_password.data, form.password.data)
    except ServiceError as err:
        form.current_password.errors = [err.message]
        return _profile(err.status, password_form=form)
    # The new password ended every session; this one starts again (remembered if it was).
    remembered = current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies
    login_user(current_user._get_current_object(), remember=remembered)
    flash("Your password is changed.", "info")
    return redirect(url_for("auth.profile"))


@bp.post("/profile/keymap")
@permission("login")
def set_keymap():
    """Choose the keys the review page binds: qcloop's own or MIQA's."""
    form = KeymapForm()
    if not form.validate_on_submit():
        return _profile(400, keymap_form=form)
    try:
        keymaps.set_keymap(current_user, form.keymap.data or "")
    except ServiceError as err:
        form.keymap.errors = [err.message]
        return _profile(err.status, keymap_form=form)
    flash(f"The review page now uses {keymaps.KEYMAPS[current_user.keymap].label}'s keys.", "info")
    return redirect(url_for("auth.profile"))


@bp.post("/profile/tokens")
@permission("login")
def create_token():
    """A new API token, shown once on the page that answers."""
    form = TokenForm()
    if not form.validate_on_submit():
        return _profile(400, token_form=form)
    try:
        _, raw = users.create_token(current_user, form.name.data or "", form.expires_in_days.data)
    except ServiceError as err:
        form.name.errors = [err.message]
        return _profile(err.status, token_form=form)
    return _profile(201, new_token=raw)


@bp.post("/profile/tokens/<int:token_id>/revoke")
@permission("login")
def revoke_token(token_id: int):
    token = users.revoke_token(current_user, token_id)
    flash(f"Token {token.prefix}… is revoked.", "info")
    return redirect(url_for("auth.profile"))
