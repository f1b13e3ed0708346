"""Browser forms (Flask-WTF: every one carries a CSRF token)."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, RadioField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional

from app.services.keymaps import KEYMAPS
from app.services.passwords import MIN_PASSWORD_LENGTH
from app.services.users import MAX_TOKEN_DAYS


def _new_password(label: str = "Password") -> PasswordField:
    return PasswordField(label, validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1024)])


def _confirmation() -> PasswordField:
    return PasswordField("Repeat the password", validators=[DataRequired(), EqualTo("password", "Passwords differ.")])


class LoginForm(FlaskForm):
    username = StringField("Username or email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("Keep me signed in")


class AccountFields(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=150)])
    first_name = StringField("First name", validators=[Optional(), Length(max=150)])
    last_name = StringField("Last name", validators=[Optional(), Length(max=150)])
    password = _new_password()
    confirm = _confirmation()


class SignupForm(AccountFields):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])


class InviteAcceptForm(AccountFields):
    """The email comes from the invitation."""


class ForgotPasswordForm(FlaskForm):
    login = StringField("Username or email", validators=[DataRequired(), Length(max=254)])


class ResetPasswordForm(FlaskForm):
    password = _new_password("New password")
    confirm = _confirmation()


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    password = _new_password("New password")
    confirm = _confirmation()


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[Optional(), Length(max=100)])
    expires_in_days = IntegerField("Expires after (days, empty: never)",
                                   validators=[Optional(), NumberRange(min=1, max=MAX_TOKEN_DAYS)])


class KeymapForm(FlaskForm):
    keymap = RadioField("Keys on the review page", validate_choice=False,
                        choices=[(name, f"{keymap.label}: {keymap.summary}") for name, keymap in KEYMAPS.items()])
