"""`qcloop-client` as a user runs it: a process per command against the live server, its exit codes, and
one line on stderr (never a traceback) for every refusal."""
from __future__ import annotations

import csv
import io
import json
import stat
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db import ApiToken, db, utcnow
from qcloop_client.listing import DECISION_COLUMNS
from tests.client.conftest import N_SCANS, PROJECT

pytestmark = pytest.mark.slow  # the package's world trains a model once
EXECUTABLE = str(Path(sys.executable).with_name("qcloop-client"))


def cli(env: dict, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([EXECUTABLE, *args], env=env, input=stdin, capture_output=True, encoding="utf-8", timeout=300)


def refused(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    """Exit ``code`` and one line on stderr containing ``words``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


def login(server, env: dict) -> None:
    done = cli(env, "login", server.url, "-u", server.admin, "--password-stdin", stdin=server.password + "\n")
    assert done.returncode == 0, done.stderr


def test_the_loop_from_the_command_line(server, trained, cli_env, tmp_path):
    result = cli(cli_env, "login", server.url, "-u", server.admin, "--password-stdin", stdin=server.password + "\n")
    assert result.returncode == 0 and f"logged in to {server.url} as {server.admin}" in result.stdout
    saved = Path(cli_env["QCLOOP_CONFIG_DIR"]) / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["url"] == server.url and len(json.loads(saved.read_text())["token"]) == 40

    listed = cli(cli_env, "projects", "--json")
    assert listed.returncode == 0 and [p["name"] for p in json.loads(listed.stdout)] == [PROJECT]
    assert PROJECT in cli(cli_env, "projects").stdout.splitlines()[1]

    table = cli(cli_env, "decisions", "--project", PROJECT, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.returncode == 0 and list(rows[0]) == DECISION_COLUMNS and len(rows) >= N_SCANS
    assert {row["decision"] for row in rows} >= {"U", "UN"} and {row["meaning"] for row in rows} >= {"usable"}
    as_json = json.loads(cli(cli_env, "decisions", "--project", PROJECT, "--format", "json").stdout)
    assert sorted(d["id"] for d in as_json) == sorted(int(row["id"]) for row in rows)

    dry = cli(cli_env, "import", str(server.csv), "--project", PROJECT, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.strip() == f"would change {PROJECT}: decisions already present {N_SCANS}"
    exported = cli(cli_env, "export", "--project", PROJECT, "--format", "csv", "-o", str(tmp_path / "full.csv"))
    assert exported.returncode == 0 and exported.stdout.startswith(f"wrote {tmp_path / 'full.csv'}")
    assert len(list(csv.DictReader(open(tmp_path / "full.csv", encoding="utf-8")))) >= N_SCANS

    run = trained["run"]
    runs = json.loads(cli(cli_env, "runs", "--project", PROJECT, "--json").stdout)
    assert run["id"] in [r["id"] for r in runs]
    waited = cli(cli_env, "wait", str(run["job_id"]))
    assert waited.returncode == 0 and waited.stdout.strip() == f"job {run['job_id']} (training) succeeded"
    refused(cli(cli_env, "train", "--project", PROJECT, "--epochs", "0"), 1, "epochs")

    with server.client() as client:
        alias = client.training_run(run["id"])["model_version"]["alias"]
    refused(cli(cli_env, "promote", str(run["id"])), 1, "already the champion" if alias == "champion" else
            "not better than chance")
    if alias != "champion":
        forced = cli(cli_env, "promote", str(run["id"]), "--force")
        assert forced.returncode == 0 and forced.stdout.strip() == \
            f"run {run['id']} promoted: qcloop-clientloop version 1 is the champion (forced)"
    refused(cli(cli_env, "promote", "1", "--version", "--project", PROJECT), 1, "already the champion")
    predicted = cli(cli_env, "predict", str(server.data_root / "client" / "scan0.nii.gz"), "--project", PROJECT)
    assert predicted.returncode == 0 and "clientloop version 1: " in predicted.stdout and "usable 0." in predicted.stdout


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"error": "internal", "detail": "the database is gone"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_exit_codes_and_one_line_errors(server, trained, cli_env, tmp_path):
    refused(cli(cli_env, "projects"), 3, "not logged in")
    refused(cli(cli_env, "login", "http://127.0.0.1:9", "-u", "x", "--password-stdin", stdin="pw\n"), 4,
            "cannot reach http://127.0.0.1:9")
    refused(cli(cli_env, "login", server.url, "-u", server.admin, "--password-stdin", stdin="wrong\n"), 3,
            "Unable to log in with provided credentials.")
    refused(cli({**cli_env, "QCLOOP_URL": "http://127.0.0.1:9", "QCLOOP_TOKEN": "x" * 40}, "projects"), 4,
            "cannot reach")

    failing = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=failing.serve_forever, daemon=True).start()
    try:
        refused(cli({**cli_env, "QCLOOP_URL": f"http://127.0.0.1:{failing.server_port}", "QCLOOP_TOKEN": "x" * 40},
                    "projects"), 5, "server error: 500 internal: the database is gone")
    finally:
        failing.shutdown()
        failing.server_close()

    login(server, cli_env)
    refused(cli(cli_env, "wait", "999999"), 1, "404 not_found")
    refused(cli(cli_env, "runs", "--project", "no such project"), 1, "no project named 'no such project'")
    usage = cli(cli_env, "promote")
    assert usage.returncode == 2 and "RUN_OR_VERSION" in usage.stderr
    refused(cli(cli_env, "import", str(tmp_path / "missing.csv")), 2, "no such file")

    token = json.loads((Path(cli_env["QCLOOP_CONFIG_DIR"]) / "credentials.json").read_text())["token"]
    with server.app.app_context():
        row = db.session.scalars(select(ApiToken).order_by(ApiToken.id.desc())).first()
        assert row.prefix == token[:8]
        row.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    refused(cli(cli_env, "projects"), 3, "Token has expired. (log in again")
    login(server, cli_env)
    token = json.loads((Path(cli_env["QCLOOP_CONFIG_DIR"]) / "credentials.json").read_text())["token"]
    with server.client() as client:
        client.revoke_token(next(t["id"] for t in client.tokens() if t["prefix"] == token[:8]))
    refused(cli(cli_env, "projects", "--json"), 3, "401 unauthorized: Invalid token.")
