"""Training on reviewer decisions: dataset, transforms, Lightning module, MLflow tracking.

Nothing here imports the web app: the app's training service turns database rows into the
plain records of :mod:`training.data` and calls :func:`training.train.train`.
"""
