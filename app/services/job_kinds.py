"""Imports every module that registers a background job handler, so the worker knows them all."""
from app.services import evaluations  # noqa: F401,E402 - "evaluation" jobs
from app.services import frames  # noqa: F401,E402 - "frames.checksum" jobs
from app.services import saliency  # noqa: F401,E402 - "saliency" jobs
from app.services.sync import schedule as sync_schedule  # noqa: F401,E402 - "sync" jobs
from app.services import training_job  # noqa: F401,E402 - "training" jobs
from app.services.transfer import tasks as transfer_tasks  # noqa: F401,E402 - "transfer.import" jobs
