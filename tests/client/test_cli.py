"""`qcloop-client` as a user runs it: a process per command against the live server, its exit codes, and
one line on stderr (never a traceback) for every refusal."""
from __future__ import annotations

import csv
import io
import json
import re
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
from tests.client.conftest import CLI_PROJECT, CLI_SCANS

pytestmark = pytest.mark.slow  # the loop trains a model
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


# The command line's training: one network fit (a held-out split, no cross-validation), one epoch, 16^3 voxels.
TINY = ["--epochs", "1", "--arch", "resnet_small", "--set", "spatial_size=[16,16,16]", "--set", "batch_size=4",
        "--set", "min_labels=2", "--set", 'evaluation="holdout"', "--set", "val_fraction=0.45",
        "--set", "test_fraction=0"]


def test_the_loop_from_the_command_line(server, two_torch_threads_package, cli_env, tmp_path):
    """import, list, decide, export, train, wait, runs, promote (refused, then forced) and predict, each a
    `qcloop-client` process, on a project only the command line touches."""
    result = cli(cli_env, "login", server.url, "-u", server.admin, "--password-stdin", stdin=server.password + "\n")
    assert result.returncode == 0 and f"logged in to {server.url} as {server.admin}" in result.stdout
    saved = Path(cli_env["QCLOOP_CONFIG_DIR"]) / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["url"] == server.url and len(json.loads(saved.read_text())["token"]) == 40

    imported = cli(cli_env, "import", str(server.cli_csv))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(f"imported {CLI_PROJECT}: ") and f"scans added {CLI_SCANS}" in \
        imported.stdout
    listed = cli(cli_env, "projects", "--json")
    assert listed.returncode == 0 and CLI_PROJECT in [p["name"] for p in json.loads(listed.stdout)]
    assert any(line.split()[1:2] == [CLI_PROJECT] for line in cli(cli_env, "projects").stdout.splitlines()[1:])

    with server.client() as client:  # a reviewer's decision, made through the Python client
        scan = next(s for s in client.scans(project=CLI_PROJECT) if s["name"] == "scan0")
        with client.locked(scan["experiment"]):
            made = client.create_decision(scan["id"], "Q?", note="from the loop")
    table = cli(cli_env, "decisions", "--project", CLI_PROJECT, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert table.returncode == 0 and list(rows[0]) == DECISION_COLUMNS and len(rows) == CLI_SCANS + 1
    assert {(row["decision"], row["meaning"]) for row in rows} == {("U", "usable"), ("UN", "unusable"),
                                                                   ("Q?", "questionable")}
    as_json = cli(cli_env, "decisions", "--project", CLI_PROJECT, "--format", "json")
    assert sorted(d["id"] for d in json.loads(as_json.stdout)) == sorted(int(row["id"]) for row in rows)
    assert made["id"] in [d["id"] for d in json.loads(as_json.stdout)]
    assert cli(cli_env, "decisions", "--project", CLI_PROJECT, "--json").stdout == as_json.stdout
    exported = cli(cli_env, "export", "--project", CLI_PROJECT, "--format", "miqa-csv", "-o", str(tmp_path / "x.csv"))
    assert exported.returncode == 0 and exported.stdout.startswith(f"wrote {tmp_path / 'x.csv'}")
    latest = {row["scan_name"]: row for row in csv.DictReader(open(tmp_path / "x.csv", encoding="utf-8"))}
    assert len(latest) == CLI_SCANS and latest["scan0"]["last_decision"] == "Q?"

    started = cli(cli_env, "train", "--project", CLI_PROJECT, *TINY)
    found = re.fullmatch(r"run (\d+) (queued|running) \(job (\d+); qcloop-client wait (\d+)\)\n", started.stdout)
    assert started.returncode == 0 and found and found[3] == found[4], (started.stdout, started.stderr)
    run_id, job_id = found[1], found[3]
    waited = cli(cli_env, "wait", job_id)
    assert waited.returncode == 0 and waited.stdout.strip() == f"job {job_id} (training) succeeded", waited.stderr
    runs = json.loads(cli(cli_env, "runs", "--project", CLI_PROJECT, "--json").stdout)
    assert [(r["id"], r["state"], r["model_version"]["alias"]) for r in runs] == [(int(run_id), "succeeded", "challenger")]
    assert runs[0]["params"]["champion_gate"].startswith("not made champion")
    refused(cli(cli_env, "promote", run_id), 1, "qcloop-cliloop version 1 is not better than chance")
    forced = cli(cli_env, "promote", run_id, "--force")
    assert forced.returncode == 0 and forced.stdout.strip() == \
        f"run {run_id} promoted: qcloop-cliloop version 1 is the champion (forced)", forced.stderr
    refused(cli(cli_env, "promote", "1", "--version", "--project", CLI_PROJECT), 1, "already the champion")
    predicted = cli(cli_env, "predict", str(server.data_root / "cli" / "scan1.nii.gz"), "--project", CLI_PROJECT)
    assert predicted.returncode == 0 and predicted.stdout.startswith("qcloop-cliloop version 1: usable 0.")


def test_wait_follows_a_global_import_job(server, cli_env, monkeypatch):
    """A file naming no project is imported by a global job, polled elsewhere than a project's job."""
    monkeypatch.setitem(server.app.config, "IMPORT_INLINE_MAX_BYTES", 0)  # any file is large: a job
    with server.client() as client:
        started = client.import_file(server.cli_csv, dry_run=True, wait=False)
    job = started["job"]
    assert job["project"] is None and started["url"] == f"/api/v1/global/jobs/{job['id']}"
    login(server, cli_env)
    waited = cli(cli_env, "wait", str(job["id"]), "--json")
    assert waited.returncode == 0, waited.stderr
    answer = json.loads(waited.stdout)
    assert (answer["id"], answer["kind"], answer["state"]) == (job["id"], "transfer.import", "succeeded")
    assert answer["result"]["dry_run"] is True and answer["result"]["projects"] == [CLI_PROJECT]


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


def test_exit_codes_and_one_line_errors(server, cli_env, tmp_path):
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
    refused(cli(cli_env, "decisions", "--project", "x", "--json", "--format", "csv"), 2, "--json prints JSON")
    usage = cli(cli_env, "promote")
    assert usage.returncode == 2 and "RUN_OR_VERSION" in usage.stderr
    refused(cli(cli_env, "import", str(tmp_path / "missing.csv")), 2, "no such file")
    refused(cli(cli_env, "export", "--format", "xlsx", "-o", str(tmp_path / "x.xlsx")), 1,
            "format must be one of miqa-csv, miqa-json, csv, json")
    assert not (tmp_path / "x.xlsx").exists()

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
