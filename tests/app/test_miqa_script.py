"""The token script from MIQA's documentation runs unchanged against a live qcloop: once against
the test server, once against a server started the way the README says (``qcloop db upgrade``,
``qcloop users create``, ``qcloop serve``)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

# Verbatim from MIQA's documentation (and qcloop's issue and README); only url and password vary.
MIQA_SCRIPT = '''import requests
url = "http://127.0.0.1:5000"
token = requests.post(url + "/api-token-auth/",
                      data={"username": "admin", "password": "..."}).json()["token"]
users = requests.get(url + "/api/v1/users",
                     headers={"Authorization": "Token " + token}).json()
'''
ADMIN_PASSWORD = "miqa-compatible-secret"
QCLOOP = str(Path(sys.executable).parent / "qcloop")


def run_miqa_script(url: str, password: str) -> dict:
    """Run the script in its own Python process and return the users it fetched."""
    script = MIQA_SCRIPT.replace('"http://127.0.0.1:5000"', json.dumps(url)).replace('"..."', json.dumps(password))
    script += "import json\nprint(json.dumps(users))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _check_users(users: dict) -> None:
    assert set(users) == {"count", "next", "previous", "results"}
    assert users["count"] >= 1 and users["previous"] is None
    admin = next(user for user in users["results"] if user["username"] == "admin")
    assert {"id", "username", "email", "first_name", "last_name"} <= set(admin)


def test_miqa_script_against_the_live_test_server(factory, live_server):
    factory.user("admin", superuser=True, password=ADMIN_PASSWORD)
    factory.user("reviewer")
    users = run_miqa_script(live_server.url, ADMIN_PASSWORD)
    _check_users(users)
    assert users["count"] == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_miqa_script_against_qcloop_serve_started_as_the_readme_says(tmp_path, database_factory):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("QCLOOP_") and key not in ("DATABASE_URL", "MLFLOW_TRACKING_URI")}
    env.update(QCLOOP_INSTANCE_PATH=str(tmp_path / "instance"), DATABASE_URL=database_factory("miqa_readme"),
               QCLOOP_LOG_LEVEL="WARNING")

    def qcloop(*args: str) -> str:
        done = subprocess.run([QCLOOP, *args], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "database at head" in qcloop("db", "upgrade")
    assert "created user admin" in qcloop("users", "create", "admin", "--email", "admin@example.org",
                                          "--password", ADMIN_PASSWORD, "--superuser")
    port = _free_port()
    server = subprocess.Popen([QCLOOP, "serve", "--port", str(port), "--workers", "1", "--threads", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                if requests.get(url + "/healthz", timeout=5).status_code in (200, 503):
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "qcloop serve did not answer within 120 s"
            time.sleep(0.25)
        users = run_miqa_script(url, ADMIN_PASSWORD)
        _check_users(users)
        assert users["count"] == 1
        assert requests.get(url + "/api/v1/users/me", timeout=10).status_code == 401
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        server.stderr.close()
