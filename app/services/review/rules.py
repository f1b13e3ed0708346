"""Who may decide what: the tier rule (tier 1 never overrules tier 2) and the note rules (an option's own,
and the project's ``note_required_for`` list). The decision API enforces them; the scan page shows them."""
from __future__ import annotations

from app.db import Decision, DecisionOption, Project

SENIOR_ROLES = ("tier2", "admin")
OVERRULE_REFUSAL = "a tier 2 reviewer has decided this scan; tier 1 reviewers cannot overrule it"


def overrule_refusal(role: str, latest: Decision | None) -> str | None:
    """Why ``role`` may not decide a scan whose latest decision is ``latest`` (None: it may)."""
    if role == "tier1" and latest is not None and latest.creator_role in SENIOR_ROLES:
        return OVERRULE_REFUSAL
    return None


def note_required_for(project: Project) -> set[str]:
    """Decision keys the project requires a note for (its setting ``note_required_for``)."""
    listed = (project.settings or {}).get("note_required_for")
    return {key for key in listed if isinstance(key, str)} if isinstance(listed, list) else set()


def requires_note(project: Project, option: DecisionOption) -> bool:
    """Whether deciding ``option`` needs a note: the option asks for one, or the project lists it."""
    return option.requires_note or option.key in note_required_for(project)
