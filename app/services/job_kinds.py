"""Imports every module that registers a background job handler, so the worker knows them all."""
from app.services import training  # noqa: F401,E402 - "training" jobs
