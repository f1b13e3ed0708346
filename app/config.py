"""All of qcloop's settings, read from environment variables with embedded defaults.

Every default lives under one instance folder, so one machine runs qcloop with nothing
else started: SQLite database, local data root, SQLite-backed MLflow and job queue.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def parse_boolean(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def parse_int(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    return int(value)


def parse_float(value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    return float(value)


def parse_list(value: str | None) -> list[str]:
    """Parts separated by os.pathsep; the ``:`` of a URI (``s3://``) does not separate."""
    if not value:
        return []
    return [part.strip() for part in re.split(re.escape(os.pathsep) + r"(?!//)", value) if part.strip()]


def _persisted_secret(instance: Path) -> str:
    """A secret key generated once and kept in the instance folder (mode 0600)."""
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


class Config:
    """Settings for a running qcloop; attributes are Flask config keys."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        instance = Path(env.get("QCLOOP_INSTANCE_PATH") or PROJECT_ROOT / "instance").resolve()
        self.INSTANCE_PATH = str(instance)
        self.SQLALCHEMY_DATABASE_URI = env.get("DATABASE_URL") or f"sqlite:///{instance / 'qcloop.db'}"
        self.DATA_ROOT = str(Path(env.get("QCLOOP_DATA_ROOT") or instance / "data").resolve())
        # Extra roots (local paths or s3://bucket/prefix) that frame locations may point into.
        self.ALLOWED_ROOTS = parse_list(env.get("QCLOOP_ALLOWED_ROOTS"))
        self.S3_ENDPOINT_URL = env.get("QCLOOP_S3_ENDPOINT_URL") or None
        # The DICOMweb servers sync sources may name (base URLs, comma-separated: a URL holds ":"; a source must
        # start with one): no other host is ever called, and the credentials below go to these only.
        self.DICOMWEB_URLS = [url.strip() for url in (env.get("QCLOOP_DICOMWEB_URLS") or "").split(",") if url.strip()]
        # Credentials of DICOMweb sync sources whose URL names no user (a source is stored by its URL without
        # the password, so scheduled syncs read them here).
        self.DICOMWEB_USERNAME = env.get("QCLOOP_DICOMWEB_USERNAME") or ""
        self.DICOMWEB_PASSWORD = env.get("QCLOOP_DICOMWEB_PASSWORD") or ""
        # Per-project roots (paths under the data root, absolute paths or s3:// prefixes within the roots above,
        # "{project_id}" replaced): when set, a project's imports may name only files there, in its own uploads
        # or already its frames'. Other projects' uploads are out of reach either way.
        self.PROJECT_ROOTS = parse_list(env.get("QCLOOP_PROJECT_ROOTS"))
        self.CACHE_DIR = str(Path(env.get("QCLOOP_CACHE_DIR") or instance / "cache").resolve())
        self.SECRET_KEY = env.get("QCLOOP_SECRET_KEY") or _persisted_secret(instance)
        self.MLFLOW_TRACKING_URI = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{instance / 'mlflow.db'}"
        self.MLFLOW_ARTIFACT_ROOT = env.get("QCLOOP_MLFLOW_ARTIFACT_ROOT") or str(instance / "mlartifacts")
        # Where people browse MLflow (e.g. `mlflow ui` on the same store); runs link there when set.
        self.MLFLOW_UI_URL = env.get("QCLOOP_MLFLOW_UI_URL") or ""
        # Training: Lightning accelerator/devices/strategy. Several GPUs: DEVICES=4, STRATEGY=ddp_spawn
        # (same code path; "ddp" would re-run the launching command, which in the worker is the worker).
        self.TRAIN_ACCELERATOR = env.get("QCLOOP_TRAIN_ACCELERATOR") or "auto"
        self.TRAIN_DEVICES = parse_int(env.get("QCLOOP_TRAIN_DEVICES"), 1)
        self.TRAIN_STRATEGY = env.get("QCLOOP_TRAIN_STRATEGY") or "auto"
        self.TRAIN_NUM_WORKERS = parse_int(env.get("QCLOOP_TRAIN_NUM_WORKERS"), 0)
        # A local copy of MIQA's published weights (a run "from miqa" needs it; never downloaded).
        self.MIQA_WEIGHTS = env.get("QCLOOP_MIQA_WEIGHTS") or ""
        # The viewer's first read of a big file waits this long in the request, then answers 503 + Retry-After.
        self.VIEW_PREPARE_WAIT_S = parse_float(env.get("QCLOOP_VIEW_PREPARE_WAIT_S"), 20.0)
        # Scoring scans (evaluation jobs, predictions): torch threads (0 = torch's default), the
        # largest image file /predict accepts, and the Monte-Carlo dropout passes an evaluation job
        # makes for networks with dropout (the uncertainty queue's order; 0 turns them off).
        self.INFERENCE_THREADS = parse_int(env.get("QCLOOP_INFERENCE_THREADS"), 0)
        self.PREDICT_MAX_BYTES = parse_int(env.get("QCLOOP_PREDICT_MAX_BYTES"), 512 * 1024 * 1024)
        self.MC_DROPOUT_PASSES = parse_int(env.get("QCLOOP_MC_DROPOUT_PASSES"), 8)
        self.QUEUE_URL = env.get("QCLOOP_QUEUE_URL") or f"sqlite:///{instance / 'queue.db'}"
        self.QUEUE_IMMEDIATE = parse_boolean(env.get("QCLOOP_QUEUE_IMMEDIATE"))
        # Seconds a running job's heartbeat may be silent before its worker counts as gone and the job
        # ends failed (or cancelled, when cancel was asked); workers beat every quarter of it.
        self.JOB_LEASE_S = parse_int(env.get("QCLOOP_JOB_LEASE_S"), 60)
        self.BASE_URL = env.get("QCLOOP_BASE_URL") or "http://127.0.0.1:5000"
        self.SMTP_HOST = env.get("QCLOOP_SMTP_HOST") or ""
        self.SMTP_PORT = parse_int(env.get("QCLOOP_SMTP_PORT"), 25)
        self.SMTP_USER = env.get("QCLOOP_SMTP_USER") or ""
        self.SMTP_PASSWORD = env.get("QCLOOP_SMTP_PASSWORD") or ""
        self.SMTP_STARTTLS = parse_boolean(env.get("QCLOOP_SMTP_STARTTLS"))
        self.MAIL_FROM = env.get("QCLOOP_MAIL_FROM") or "qcloop@localhost"
        self.MAX_CONTENT_LENGTH = parse_int(env.get("QCLOOP_MAX_UPLOAD_MB"), 1024) * 1024 * 1024
        # Failed log-ins and reset requests are counted in the database (shared by every process) unless
        # this names a shared storage such as redis://host:6379 (memory:// would count per process).
        self.RATELIMIT_STORAGE_URI = env.get("QCLOOP_RATELIMIT_STORAGE_URI") or "memory://"
        # Failed log-ins (form and token) allowed per account and per address before a 429.
        self.LOGIN_LIMIT_PER_ACCOUNT = env.get("QCLOOP_LOGIN_LIMIT_ACCOUNT") or "5 per 15 minutes"
        self.LOGIN_LIMIT_PER_ADDRESS = env.get("QCLOOP_LOGIN_LIMIT_ADDRESS") or "30 per 15 minutes"
        # Password-reset requests (each mails a link) allowed per account named and per address.
        self.RESET_LIMIT_PER_ACCOUNT = env.get("QCLOOP_RESET_LIMIT_ACCOUNT") or "3 per hour"
        self.RESET_LIMIT_PER_ADDRESS = env.get("QCLOOP_RESET_LIMIT_ADDRESS") or "10 per hour"
        # Days a token from /api-token-auth/ (MIQA's script) lives; 0: forever, as in MIQA.
        self.API_TOKEN_AUTH_DAYS = parse_int(env.get("QCLOOP_API_TOKEN_AUTH_DAYS"), 30)
        self.LOCK_MINUTES = parse_int(env.get("QCLOOP_LOCK_MINUTES"), 5)
        # Experiments listed per page of a project's page (with their scans).
        self.PROJECT_PAGE_EXPERIMENTS = max(1, parse_int(env.get("QCLOOP_PROJECT_PAGE_EXPERIMENTS"), 25))
        # Imports: a missing or unreadable image file is an "error" (nothing imported), a "warn"ing, or
        # not checked ("off"); files larger than IMPORT_INLINE_MAX_BYTES run as background jobs.
        self.IMPORT_MISSING_FILES = env.get("QCLOOP_IMPORT_MISSING_FILES") or "error"
        self.IMPORT_INLINE_MAX_BYTES = parse_int(env.get("QCLOOP_IMPORT_INLINE_MAX_KB"), 2048) * 1024
        # MIQA lists only the artifacts present in a decision: the others become "absent" (MIQA's own
        # reading: not marked) or "undefined" (not judged).
        self.IMPORT_UNLISTED_ARTIFACTS = env.get("QCLOOP_IMPORT_UNLISTED_ARTIFACTS") or "absent"
        # The largest image qcloop decodes, checked on the header first (a small file may declare a huge
        # volume): voxels in all, voxels along one axis, and MB of voxel data; a 512^3 float volume fits.
        self.IMAGE_MAX_VOXELS = parse_int(env.get("QCLOOP_IMAGE_MAX_VOXELS"), 512**3)
        self.IMAGE_MAX_AXIS = parse_int(env.get("QCLOOP_IMAGE_MAX_AXIS"), 4096)
        self.IMAGE_MAX_MB = parse_int(env.get("QCLOOP_IMAGE_MAX_MB"), 512)
        self.SESSION_COOKIE_SECURE = parse_boolean(env.get("QCLOOP_SECURE_COOKIES"))
        # CSRF is checked by app.auth for cookie-authenticated requests only (tokens need none).
        self.WTF_CSRF_CHECK_DEFAULT = False
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        self.TESTING = False
        self.LOG_LEVEL = env.get("QCLOOP_LOG_LEVEL") or "INFO"
        # The API documentation is served from static assets, never from a CDN.
        self.API_TITLE = "qcloop"
        self.API_VERSION = "v1"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = "/api/v1"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "docs"  # /api/v1/docs, public like the description it shows
        self.OPENAPI_SWAGGER_UI_URL = "/static/vendor/swagger-ui/"  # swagger-ui-dist, vendored

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in vars(self).items() if key.isupper()}
