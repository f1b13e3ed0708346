"""One owner for commits: the request boundary commits a successful answer and rolls back a refusal;
web modules never commit, and services commit only where a job or command must show its work to
another process (a queued job row, a job's progress)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app.auth.permissions import permission
from app.db import ApiToken, AuditEvent, User, db
from app.services import users
from app.services.errors import Conflict
from tests.factories import PASSWORD, token_headers

ROOT = Path(__file__).resolve().parents[2]
WEB_PACKAGES = ("app/api", "app/ui", "app/admin", "app/auth")
# The job and command boundaries in services: (module, function) pairs allowed to call boundary.commit().
JOB_BOUNDARIES = {
    ("app/services/jobs.py", "enqueue"),  # the worker must read the job row
    ("app/services/jobs.py", "run_job"),
    ("app/services/jobs.py", "_finish"),
    ("app/services/jobs.py", "cancel"),  # the running worker must see the request
    ("app/services/jobs.py", "end_abandoned"),
    ("app/services/sync/schedule.py", "_enqueue"),  # claims the source and queues its job in one commit
    ("app/services/sync/schedule.py", "_sync_abandoned"),
    ("app/services/sync/engine.py", "_run"),
    ("app/services/sync/engine.py", "_end"),
    ("app/services/training_job.py", "run_training"),
    ("app/services/training_job.py", "_train"),
    ("app/services/training_job.py", "_train.mlflow_run_opened"),
    ("app/services/training_job.py", "_end_run"),
    ("app/services/training_job.py", "end_abandoned_run"),
    ("app/services/evaluations.py", "create_job"),  # the CLI's --inline evaluation
    ("app/services/evaluations.py", "run_evaluation"),
    ("app/services/evaluations.py", "_fail_pending"),
    ("app/services/frames.py", "fill_checksums"),  # a batch at a time, no write transaction while hashing
    ("app/services/transfer/tasks.py", "run_import"),  # the stash goes only once its rows are stored
    ("app/services/demo.py", "train_demo_model"),  # `qcloop demo`: the run must be stored before its job runs
}


def _commit_calls(source: str) -> list[tuple[str, int]]:
    """(enclosing function path, line) of every ``<anything>.commit()`` call in a module's source."""
    found = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope + [child.name] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scope
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and child.func.attr == "commit"):
                found.append((".".join(scope), child.lineno))
            visit(child, inner)

    visit(ast.parse(source), [])
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_walker_finds_commits_in_nested_functions():
    source = "def outer():\n    def inner():\n        db.session.commit()\n    boundary.commit()\n"
    assert sorted(_commit_calls(source)) == [("outer", 4), ("outer.inner", 3)]


def test_web_modules_never_commit():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for package in WEB_PACKAGES
                 for path in sorted((ROOT / package).rglob("*.py")) for _, line in _commit_calls(_read(path))]
    assert not offenders, "the request boundary commits; routes do not: " + ", ".join(offenders)


def test_services_commit_only_at_job_boundaries():
    found = {(str(path.relative_to(ROOT)), scope): line for path in sorted((ROOT / "app/services").rglob("*.py"))
             for scope, line in _commit_calls(_read(path))}
    stray = sorted(f"{module}:{line} ({scope or 'module'})" for (module, scope), line in found.items()
                   if (module, scope) not in JOB_BOUNDARIES)
    assert not stray, "a service flushes; only job boundaries commit: " + ", ".join(stray)
    assert set(found) == JOB_BOUNDARIES, "an allowed boundary no longer commits: drop it from JOB_BOUNDARIES"


def test_only_the_boundary_commits_the_session():
    """Services and commands call boundary.commit(), never the session's own commit."""
    direct = [f"{path.relative_to(ROOT)}:{line}" for path in sorted((ROOT / "app").rglob("*.py"))
              if path.name != "boundary.py" for line in _session_commits(path)]
    assert not direct, ", ".join(direct)


def _session_commits(path: Path) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(_read(path)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit"
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "session"]


def _stored_users(username: str) -> int:
    """Rows another connection sees: only what was committed."""
    with db.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(User).where(User.username == username))


@pytest.fixture
def probe_client(app):
    """Routes that write a user, then answer, refuse or fail."""

    def write_then(outcome: str):
        users.create_user(f"probe-{outcome}", PASSWORD)
        if outcome == "refuse":
            raise Conflict("refused after the write")
        if outcome == "fail":
            raise RuntimeError("failed after the write")
        if outcome == "unstorable":  # the database refuses it only at commit
            db.session.add(User(username="ann", email="other@example.org"))
        return {"written": outcome}

    app.add_url_rule("/probe/<outcome>", view_func=permission("public")(write_then), methods=["POST"])
    return app.test_client()


def test_a_successful_answer_is_committed(factory, probe_client):
    answer = probe_client.post("/probe/ok")
    assert answer.status_code == 200
    assert _stored_users("probe-ok") == 1


@pytest.mark.parametrize("outcome, status", [("refuse", 409), ("fail", 500)])
def test_a_request_that_raises_after_a_write_stores_nothing(factory, probe_client, outcome, status):
    answer = probe_client.post(f"/probe/{outcome}")
    assert answer.status_code == status
    assert _stored_users(f"probe-{outcome}") == 0
    assert db.session.scalar(select(func.count()).select_from(User).where(User.username == f"probe-{outcome}")) == 0


def test_a_commit_the_database_refuses_is_an_error_answer(factory, probe_client):
    factory.user("ann")
    answer = probe_client.post("/probe/unstorable", headers={"Accept": "application/json"})
    assert answer.status_code == 500 and answer.get_json()["error"] == "internal"
    assert _stored_users("probe-unstorable") == 0


def test_a_refused_log_in_is_still_counted_and_audited(factory, client):
    factory.user("ada")
    refused = client.post("/api-token-auth/", json={"username": "ada", "password": "not-it"})
    assert refused.status_code == 400
    with db.engine.connect() as connection:
        failed = connection.scalar(select(func.count()).select_from(AuditEvent)
                                   .where(AuditEvent.action == "login.failed"))
    assert failed == 1


def test_a_tokens_last_use_is_written_aside(factory, client):
    """Recorded even when the answer is a refusal, and by its own transaction: the request's stays free of writes
    (on SQLite a pending write would hold the file's lock for the whole request)."""
    factory.user("ada")
    headers = token_headers(client, "ada")
    with db.engine.begin() as connection:
        connection.execute(update(ApiToken).values(last_used_at=None))
    answer = client.get("/api/v1/projects/999999", headers=headers)
    assert answer.status_code == 404
    with db.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ApiToken)
                                 .where(ApiToken.last_used_at.is_not(None))) == 1
