"""Reviewing, one concern a module: scan states (:mod:`.states`), the champion's suggestions
(:mod:`.suggestions`), experiment locks (:mod:`.locks`), the tier and note rules (:mod:`.rules`),
deciding (:mod:`.deciding`), project overviews (:mod:`.overview`), reviewer agreement
(:mod:`.agreement`) and the API's list reads (:mod:`.listing`).

Every read works on whole sets of scans in a fixed number of queries (latest decision per scan by a
window function, artifacts and options loaded alongside), so that pages of hundreds of scans cost the
same handful of queries as pages of ten. The names below are the package's public face.
"""
from app.services.review.agreement import agreement
from app.services.review.deciding import decide, set_experiment_note
from app.services.review.listing import (
    FrameView, ScanView, decisions_query, experiments_query, frame_views, frames_query, projects_query,
    scan_views, scans_query,
)
from app.services.review.locks import Lock, current_lock, release_lock, require_lock, take_lock
from app.services.review.overview import (
    FILTERS, GridCell, ProjectOverview, Reviewer, ReviewerStats, ScanRow, TaskOverview, experiment_grid, progress,
    project_overview, task_overview, timeline,
)
from app.services.review.rules import overrule_refusal, requires_note
from app.services.review.states import (
    STATE_LABELS, Settled, artifact_lists, decisions_of, history, latest_decisions, latest_settled, present_keys,
    scan_states, state_of,
)
from app.services.review.suggestions import (
    CHAMPION_ALIAS, SUGGESTION_THRESHOLD, ArtifactScore, Suggestion, champion, latest_evaluations, suggestion,
)

__all__ = [
    "CHAMPION_ALIAS", "FILTERS", "STATE_LABELS", "SUGGESTION_THRESHOLD", "ArtifactScore", "FrameView", "GridCell",
    "Lock", "ProjectOverview", "Reviewer", "ReviewerStats", "ScanRow", "ScanView", "Settled", "Suggestion",
    "TaskOverview",
    "agreement", "artifact_lists", "champion", "current_lock", "decide", "decisions_of", "decisions_query",
    "experiment_grid", "experiments_query", "frame_views", "frames_query", "history", "latest_decisions",
    "latest_settled",
    "latest_evaluations", "overrule_refusal", "present_keys", "progress", "project_overview",
    "projects_query", "release_lock", "require_lock", "requires_note", "scan_states", "scan_views", "scans_query",
    "set_experiment_note", "state_of", "suggestion", "take_lock", "task_overview", "timeline",
]
