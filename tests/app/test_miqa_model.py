"""MIQA's published network registered as a model version and run on real IXI volumes through the CLI,
against a plain re-implementation of MIQA's inference (same LPS+ array, same tiles)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from sqlalchemy import create_engine, text

from models import miqa_reference
from models.networks import MIQA_OUTPUTS, build_network
from tests.app.transfer_helpers import write_csv
from tests.conftest import SHARED_DATA

IXI = sorted((SHARED_DATA / "ixi-dti").glob("DTI-*.nii.gz"))
WEIGHTS = SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth"

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _qcloop(env, *args):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_miqa_weights_as_a_version_score_ixi_volumes_as_miqa_does(tmp_path, database_factory):
    url = database_factory("miqa_model")
    env = {**os.environ, "QCLOOP_INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": url,
           "QCLOOP_DATA_ROOT": str(tmp_path / "data"), "QCLOOP_INFERENCE_THREADS": "2",
           "QCLOOP_MC_DROPOUT_PASSES": "4"}
    assert _qcloop(env, "db", "upgrade").returncode == 0
    rows = []
    for number, source in enumerate(IXI):
        target = tmp_path / "data" / "ixi" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        rows.append(["IXI", "IXI002", f"dti-{number}", "DWI", 0, f"ixi/{source.name}"] + [""] * 10)
    imported = _qcloop(env, "import", str(write_csv(tmp_path / "ixi.csv", rows)))
    assert imported.returncode == 0, imported.stderr

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not weights")
    refused = _qcloop(env, "models", "import-miqa", "--weights", str(broken), "--project", "IXI")
    assert refused.returncode == 1 and "broken.pth is not a PyTorch weights file" in refused.stderr
    other = tmp_path / "other.pth"
    torch.save(build_network("densenet_small", 3).state_dict(), other)
    refused = _qcloop(env, "models", "import-miqa", "--weights", str(other), "--project", "IXI")
    assert refused.returncode == 1 and "does not hold the weights of MIQA's network" in refused.stderr

    registered = _qcloop(env, "models", "import-miqa", "--weights", str(WEIGHTS), "--project", "IXI")
    assert registered.returncode == 0, registered.stderr
    assert "version 1 (champion)" in registered.stdout and "ghosting_motion" in registered.stdout
    evaluated = _qcloop(env, "evaluate", "--project", "IXI", "--inline")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "5 frames scored, 0 not scored (version 1)" in evaluated.stdout
    again = _qcloop(env, "evaluate", "--project", "IXI", "--inline")
    assert "0 frames scored" in again.stdout  # unscored frames only, by default

    engine = create_engine(url)
    with engine.connect() as connection:
        stored = connection.execute(text(
            "SELECT f.file_location, e.scores, e.state, m.version, m.registry_name, e.uncertainty FROM evaluations e "
            "JOIN frames f ON f.id = e.frame_id JOIN model_versions m ON m.id = e.model_version_id")).all()
    engine.dispose()
    assert len(stored) == 5 and {row.state for row in stored} == {"scored"}
    net = build_network("miqa", len(MIQA_OUTPUTS))
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    net.eval()
    for location, scores, _, version, _, uncertainty in stored:
        scores = json.loads(scores) if isinstance(scores, str) else scores
        uncertainty = json.loads(uncertainty) if isinstance(uncertainty, str) else uncertainty
        # MIQA's network has dropout: four Monte-Carlo passes give each output's entropy for the queues
        assert uncertainty["method"] == "mc_dropout" and uncertainty["passes"] == 4
        assert set(uncertainty["entropy"]) == set(scores) and all(0 <= v <= 1 for v in uncertainty["entropy"].values())
        expected = miqa_reference.scores(tmp_path / "data" / location, net)
        assert set(scores) == set(expected)  # the default vocabulary holds all ten of MIQA's artifacts
        for key, value in expected.items():
            assert scores[key] == pytest.approx(value, abs=1e-4), (location, key)

    predicted = _qcloop(env, "predict", str(IXI[0]), "--project", "IXI")
    assert predicted.returncode == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["version"] == "1" and answer["scores"]["usable"] == pytest.approx(
        miqa_reference.scores(IXI[0], net)["usable"], abs=1e-4)
