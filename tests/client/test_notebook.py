"""examples/review_stats.ipynb runs top to bottom against the live server, in a real Jupyter kernel."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.client.conftest import N_SCANS, PROJECT

pytestmark = pytest.mark.slow  # the package's world trains a model once
NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "review_stats.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def _text(notebook) -> str:
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs)


def test_review_stats_notebook_runs_top_to_bottom(server, trained, tmp_path, monkeypatch):
    with server.client() as client:
        run = client.training_run(trained["run"]["id"])
        if run["model_version"]["alias"] != "champion":
            client.promote(run, force=True)
        for job in client.models(PROJECT)["evaluation_jobs"]:
            client.wait(job, progress=False, timeout=300)
    for name, value in {"QCLOOP_URL": server.url, "QCLOOP_USERNAME": server.admin, "QCLOOP_PASSWORD": server.password,
                        "QCLOOP_PROJECT": PROJECT, "QCLOOP_NOTEBOOK_OUTPUT": str(tmp_path / "figures"),
                        "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QCLOOP_TOKEN", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = _text(notebook)
    assert f"logged in to {server.url} as {server.admin}" in text
    assert re.search(rf"decisions on {N_SCANS} scans by [23] reviewers", text), text
    assert re.search(r"version 1: agreement \d+% on 1[56] scans", text), text  # a questionable latest is left out
    for figure in ("review_progress.png", "agreement.png"):
        assert (tmp_path / "figures" / figure).read_bytes()[:8] == PNG
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) == 2
