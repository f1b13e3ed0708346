"""One live qcloop for the client's tests: the server on a free port and a worker thread taking queued
jobs, a superuser, and two MIQA CSVs of reviewer decisions on phantom volumes: one project imported and
trained once (package scope) through the client, another left for the command line's loop to import."""
from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from app import create_app
from app.db import db
from app.services import vocabulary
from qcloop_client import Client
from tests.app.transfer_helpers import write_csv
from tests.conftest import _empty_tables, _test_settings
from tests.factories import PASSWORD, Factory

log = logging.getLogger(__name__)

PROJECT = "ClientLoop"
N_SCANS = 16
CLI_PROJECT = "CliLoop"
CLI_SCANS = 8
REVIEWERS = ("alice@site.org", "bob@site.org")
SMALL = {"arch": "resnet_small", "spatial_size": [32, 32, 32], "batch_size": 4, "min_labels": 2, "lr": 3e-3,
         "epochs": 2}


@dataclass
class Server:
    app: Flask
    url: str
    admin: str
    password: str
    csv: Path
    cli_csv: Path
    data_root: Path
    tmp: Path

    def client(self) -> Client:
        return Client.login(self.url, self.admin, self.password)


def _work(huey, stop: threading.Event) -> None:
    """The worker: run queued jobs one at a time, as `qcloop worker` does."""
    while not stop.is_set():
        task = huey.dequeue()
        if task is None:
            stop.wait(0.1)
            continue
        try:
            huey.execute(task)
        except Exception:  # the job row records the failure; the worker goes on
            log.exception("job task failed")


def _miqa_csv(factory: Factory, folder: Path) -> Path:
    """Phantom volumes (every other one ghosted) and two reviewers' decisions over four days."""
    rows = []
    for index in range(N_SCANS):
        ghosted = index % 2 == 1
        factory.nifti(f"client/scan{index}.nii.gz", seed=300 + index, artifact="ghosting" if ghosted else None)
        rows.append([PROJECT, f"visit{index % 2 + 1}", f"scan{index}", "T1", 0, f"client/scan{index}.nii.gz", "",
                     f"subject{index}", "", "", "UN" if ghosted else "U", REVIEWERS[index % 3 % 2], "",
                     f"2026-01-0{1 + index % 4}T1{index % 10}:00:00+00:00", "ghosting_motion" if ghosted else "",
                     ""])
    return write_csv(folder / "decisions.csv", rows)


def _cli_csv(factory: Factory, folder: Path) -> Path:
    """The command line's project: one phantom volume copied for every scan, half judged unusable. A model
    cannot tell the copies apart, so its held-out usable AUC is 0.5 and it is never made champion by
    itself: the loop shows promotion refused, then forced."""
    first = factory.nifti("cli/scan0.nii.gz", seed=7)
    rows = []
    for index in range(CLI_SCANS):
        if index:
            shutil.copyfile(first, first.with_name(f"scan{index}.nii.gz"))
        rows.append([CLI_PROJECT, "visit1", f"scan{index}", "T1", 0, f"cli/scan{index}.nii.gz", "",
                     f"subject{index}", "", "", "UN" if index % 2 else "U", REVIEWERS[0], "",
                     f"2026-02-0{1 + index % 4}T10:00:00+00:00", "", ""])
    return write_csv(folder / "cli.csv", rows)


@pytest.fixture(scope="package")
def server(database_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("client")
    app = create_app(_test_settings(tmp / "instance", database_url, QUEUE_IMMEDIATE=False,
                                    QUEUE_URL=f"sqlite:///{tmp / 'queue.db'}", PREDICT_MAX_BYTES=2_000_000))
    with app.app_context():
        vocabulary.seed_defaults()
        db.session.commit()
        factory = Factory(app)
        admin = factory.user("client-admin", superuser=True)
        csv = _miqa_csv(factory, tmp)
        cli_csv = _cli_csv(factory, tmp)
        username = admin.username
        db.session.remove()
    stop = threading.Event()
    worker = threading.Thread(target=_work, args=(app.extensions["huey"], stop), daemon=True)
    worker.start()
    http = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=http.serve_forever, daemon=True)
    serving.start()
    yield Server(app, f"http://127.0.0.1:{http.server_port}", username, PASSWORD, csv, cli_csv,
                 Path(app.config["DATA_ROOT"]), tmp)
    http.shutdown()
    http.server_close()
    serving.join(timeout=10)
    stop.set()
    worker.join(timeout=60)
    with app.app_context():
        _empty_tables()
        db.engine.dispose()


@pytest.fixture(scope="package")
def trained(server, two_torch_threads_package) -> dict:
    """The CSV imported and one training run waited for, through the client: the project and the run."""
    with server.client() as client:
        summary = client.import_file(server.csv)
        assert summary["projects"] == [PROJECT] and summary["counts"]["scans_added"] == N_SCANS, summary
        project = client.project(PROJECT)
        run = client.train(PROJECT, wait=True, progress=False, **SMALL)
    return {"project": project, "run": run}


@pytest.fixture(scope="package")
def two_torch_threads_package():
    """Two cores in CI: keep torch from oversubscribing them while the worker trains."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli_env(server, tmp_path) -> dict[str, str]:
    """The environment of a `qcloop-client` process: its own config folder, no inherited log-in."""
    env = {key: value for key, value in os.environ.items() if key not in ("QCLOOP_URL", "QCLOOP_TOKEN")}
    env["QCLOOP_CONFIG_DIR"] = str(tmp_path / "config")
    return env
