"""Background jobs and the answer that starts one."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, computed, nullable


class JobSchema(Answer):
    id = fields.Integer()
    kind = fields.String()
    state = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]})
    progress = nullable(fields.Float, metadata={"description": "0 to 1"})
    message = nullable(fields.String)
    error = nullable(fields.String)
    result = fields.Raw(allow_none=True, metadata={"description": "what the job answered (kind-dependent)"})
    project = nullable(fields.Integer, attribute="project_id")
    created = nullable(fields.DateTime, attribute="created_at")
    started = nullable(fields.DateTime, attribute="started_at")
    finished = nullable(fields.DateTime, attribute="finished_at")


def _job_url(job) -> str:
    return f"/api/v1/jobs/{job.id}" if job.project_id is not None else f"/api/v1/global/jobs/{job.id}"


class JobStartedSchema(Answer):
    """A job just started (the object is the Job itself)."""

    job = computed(fields.Nested(JobSchema), lambda job: job)
    url = computed(fields.String(metadata={"description": "where to poll the job"}), _job_url)
