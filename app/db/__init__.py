"""The ORM: one module per aggregate; import everything from here."""
from app.db.audit import AuditEvent
from app.db.base import MAX_ID, db, page, utcnow
from app.db.decisions import ARTIFACT_STATES, NOTE_MAX_LENGTH, VOXEL, WORLD, AppendOnlyError, Decision, DecisionArtifact
from app.db.jobs import JOB_STATES, Job
from app.db.ml import Evaluation, ModelVersion, TrainingRun
from app.db.projects import Experiment, Frame, Project, Scan
from app.db.sync import SYNC_RUN_STATES, SyncedItem, SyncRun, SyncSource
from app.db.users import ROLES, ApiToken, Invitation, Membership, RateLimitHit, User
from app.db.vocabulary import DECISION_MEANINGS, ArtifactEntry, DecisionOption

__all__ = [
    "ARTIFACT_STATES", "DECISION_MEANINGS", "JOB_STATES", "MAX_ID", "NOTE_MAX_LENGTH", "ROLES",
    "AppendOnlyError", "ApiToken", "ArtifactEntry", "AuditEvent", "Decision", "DecisionArtifact",
    "DecisionOption", "Evaluation", "Experiment", "Frame", "Invitation", "Job", "Membership",
    "ModelVersion", "Project", "RateLimitHit", "Scan", "TrainingRun", "User", "VOXEL", "WORLD", "db", "page", "utcnow",
    "SYNC_RUN_STATES", "SyncRun", "SyncSource", "SyncedItem",
]
