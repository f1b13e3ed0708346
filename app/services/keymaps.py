"""The review page's keymaps, one chosen per user on the profile page.

MIQA's reviewers decide with u/i/o/p; qcloop binds letters to artifacts, so a MIQA user's
hands toggle tags instead, and a project cannot rebind its vocabulary because the letters
are taken. A keymap is the reviewer's choice, not the project's: the page
(static/js/keymap.js) turns the chosen name and the project's vocabulary into the keys it
binds and lists them in its `?` dialog. This registry names the keymaps and says what each
binds; the script holds the same names.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.db import User
from app.services.errors import InvalidInput


@dataclass(frozen=True)
class Keymap:
    label: str
    summary: str


KEYMAPS: dict[str, Keymap] = {
    "qcloop": Keymap("qcloop", "the project's shortcuts: number keys choose a decision, each artifact's letter "
                               "cycles it, Enter submits"),
    "miqa": Keymap("MIQA", "u usable, i usable-extra, o questionable, p unusable, each saved at once as in MIQA; "
                           "q/w, a/s and z/x move the axial, sagittal and coronal slice; artifacts move to "
                           "1-9 and 0"),
}


def set_keymap(user: User, name: str) -> None:
    """Store the keymap the review page binds for this user."""
    if name not in KEYMAPS:
        raise InvalidInput(f"keymap must be one of {', '.join(KEYMAPS)}", field="keymap")
    user.keymap = name
