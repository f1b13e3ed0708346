"""Import and export of projects in MIQA's CSV and JSON and in qcloop's lossless full formats.

``importer.import_file`` reads, checks and writes a file all or nothing; ``exporter.export``
streams an export; ``tasks`` runs large imports as background jobs. Syncing with a repository is
:mod:`app.services.sync`'s.
"""
