"""Imports every module that registers a background job handler, so the worker knows them all."""
