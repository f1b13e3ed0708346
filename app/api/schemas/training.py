"""Training runs, their reports and promotion; model versions, agreement with reviewers, predictions."""
from __future__ import annotations

from marshmallow import fields

from app.api.schemas.base import Answer, nullable
from app.api.schemas.jobs import JobSchema


class RunVersionSchema(Answer):
    """The model version a run registered."""

    id = fields.Integer()
    registry_name = fields.String()
    version = fields.String()
    alias = nullable(fields.String)
    output_map = fields.List(fields.Dict(), metadata={"description": "each output's key, kind and entry"})


class HeldoutAucSchema(Answer):
    output = fields.String()
    auc = fields.String(metadata={"description": "the AUC with its 95% interval, or why it is undefined"})


class SkippedOutputSchema(Answer):
    output = fields.String()
    reason = fields.String()


class RunReportSchema(Answer):
    """What a run says about itself: how it was evaluated, held-out AUCs, outputs left out and why."""

    evaluation = nullable(fields.String)
    heldout_scans = nullable(fields.Integer)
    heldout = fields.List(fields.Nested(HeldoutAucSchema))
    skipped_outputs = fields.List(fields.Nested(SkippedOutputSchema))
    champion_gate = nullable(fields.String)
    mlflow = nullable(fields.String, metadata={"description": "its MLflow link, or the command that serves it"})


class RunSchema(Answer):
    """A training run as it stands (a ``RunStatus``)."""

    id = fields.Integer(attribute="run.id")
    project_id = fields.Integer(attribute="run.project_id")
    state = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]})
    params = fields.Dict(allow_none=True, attribute="run.params")
    metrics = fields.Dict(allow_none=True, attribute="run.metrics")
    error = nullable(fields.String)
    progress = fields.Float()
    message = fields.String()
    job_id = nullable(fields.Integer, attribute="run.job_id")
    mlflow_run_id = nullable(fields.String, attribute="run.mlflow_run_id")
    mlflow_url = nullable(fields.String)
    report = fields.Nested(RunReportSchema)
    model_version = nullable(fields.Nested, nested=RunVersionSchema)
    created_by_id = nullable(fields.Integer, attribute="run.created_by_id")
    created_at = nullable(fields.DateTime, attribute="run.created_at")
    finished_at = nullable(fields.DateTime, attribute="run.finished_at")


class ComparisonSchema(Answer):
    """The candidate against the champion on held-out usable AUC."""

    metric = nullable(fields.String)
    candidate = nullable(fields.Float)
    champion = nullable(fields.Float)
    better = fields.Boolean()
    same_split = fields.Boolean(metadata={"description": "both scored on the run's own held-out scans"})
    champion_version = nullable(fields.String)
    reason = fields.String()


class PromotionSchema(Answer):
    run = fields.Nested(RunSchema)
    comparison = fields.Nested(ComparisonSchema)
    forced = fields.Boolean()
    previous_champion = nullable(fields.String)


class TrainingSettingsSchema(Answer):
    """The settings training reads, defaults filled in."""

    label_rule = fields.String()
    questionable = fields.Raw(metadata={"oneOf": [{"type": "string", "enum": ["exclude"]}, {"type": "number"}],
                                        "description": '"exclude" or the weight of a questionable label'})
    min_labels_per_class = fields.Integer()


class VersionSchema(Answer):
    """A version of the project's model with its run, held-out metrics and alias."""

    id = fields.Integer()
    registry_name = fields.String()
    version = fields.String()
    alias = nullable(fields.String)
    champion = fields.Boolean()
    mlflow_run_id = nullable(fields.String)
    training_run_id = nullable(fields.Integer)
    source = fields.String(metadata={"enum": ["training", "miqa"]})
    heldout_usable_auc = nullable(fields.Float)
    heldout_usable_auc_low = nullable(fields.Float)
    heldout_usable_auc_high = nullable(fields.Float)
    outputs = fields.List(fields.String())
    created_at = fields.DateTime()


class OutputAgreementSchema(Answer):
    output = fields.String()
    scans = fields.Integer()
    accuracy = fields.Float()
    auc = nullable(fields.Float)
    auc_low = nullable(fields.Float)
    auc_high = nullable(fields.Float)


class ModelAgreementSchema(Answer):
    """How the champion's suggestions agree with the settled reviewer labels, per output."""

    version = fields.String()
    registry_name = fields.String()
    outputs = fields.List(fields.Nested(OutputAgreementSchema))


class ModelsSchema(Answer):
    model_name = nullable(fields.String)
    versions = fields.List(fields.Nested(VersionSchema))
    agreement = nullable(fields.Nested, nested=ModelAgreementSchema, metadata={"description": "null: no champion"})
    evaluation_jobs = fields.List(fields.Nested(JobSchema))


class ChampionSchema(Answer):
    """A model version now champion."""

    registry_name = fields.String()
    version = fields.String()
    alias = nullable(fields.String)


class PredictionSchema(Answer):
    """The champion's scores for an image; nothing is stored."""

    model = fields.String()
    version = fields.String()
    mlflow_run_id = nullable(fields.String)
    scores = fields.Dict(keys=fields.String(), values=fields.Float())
