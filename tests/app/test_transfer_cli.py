"""qcloop import / export / sync as a site runs them, and an import killed half-way."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from tests.app.transfer_helpers import write_csv


def _env(tmp_path: Path, url: str, **extra) -> dict[str, str]:
    return {**os.environ, "QCLOOP_INSTANCE_PATH": str(tmp_path / "instance"), "DATABASE_URL": url,
            "QCLOOP_DATA_ROOT": str(tmp_path / "data"), **extra}


def _qcloop(env, *args):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.uint8), np.eye(4)), str(path))


def test_import_export_and_sync_cycle(tmp_path, database_factory):
    env = _env(tmp_path, database_factory("transfer_cli"))
    assert _qcloop(env, "db", "upgrade").returncode == 0
    data = tmp_path / "data"
    for relative in ("repo/visit1/sub-01_T1.nii.gz", "repo/visit1/sub-02_T2_0.nii.gz",
                     "repo/visit1/sub-02_T2_1.nii.gz", "repo/visit2/sub-03.nii.gz", "repo/notes.txt"):
        if relative.endswith(".txt"):
            (data / relative).write_text("not an image")
        else:
            _nifti(data / relative)
    rows = [["Site", "visit1", "sub-01", "T1", 0, "repo/visit1/sub-01_T1.nii.gz"] + [""] * 4
            + ["U", "someone@site.org", "ok", "2022-01-01T00:00:00+00:00", "", ""]]
    source = write_csv(tmp_path / "site.csv", rows)
    missing = _qcloop(env, "import", str(source), "--project", "Site")
    assert missing.returncode == 1 and "no project named 'Site'" in missing.stderr
    dry = _qcloop(env, "import", str(source), "--dry-run")
    assert dry.returncode == 0 and "would change" in dry.stdout and "projects added: 1" in dry.stdout
    done = _qcloop(env, "import", str(source))
    assert done.returncode == 0, done.stderr
    assert "[100%]" in done.stdout and "decisions added: 1" in done.stdout
    again = _qcloop(env, "import", str(source), "--project", "Site", "--mode", "replace")
    assert again.returncode == 0 and "changed 0 item(s)" in again.stdout

    first = _qcloop(env, "sync", "--project", "Site", "--source", str(data / "repo"))
    assert first.returncode == 0, first.stderr
    assert "added 3 file(s)" in first.stdout and "repo/visit2/sub-03.nii.gz" in first.stdout
    assert "previous export kept" not in first.stdout
    second = _qcloop(env, "sync", "--project", "Site", "--source", str(data / "repo"))
    assert second.returncode == 0 and "nothing new to add" in second.stdout
    assert "previous export kept as" in second.stdout
    [sync_folder] = (tmp_path / "instance" / "sync").iterdir()  # the project's, named by its id
    assert len(list(sync_folder.glob("export-*.csv"))) == 1 and (sync_folder / "export.csv").is_file()

    out = tmp_path / "out.csv"
    exported = _qcloop(env, "export", "--project", "Site", "--format", "miqa-csv", "-o", str(out))
    assert exported.returncode == 0 and out.is_file()
    lines = out.read_text().splitlines()
    assert len(lines) == 5  # header + 4 frames
    assert any(",sub-02,T2,1,repo/visit1/sub-02_T2_1.nii.gz," in line for line in lines)
    bad_pattern = _qcloop(env, "sync", "--project", "Site", "--source", str(data / "repo"), "--pattern", "(?P<x>.*)")
    assert bad_pattern.returncode == 1 and "named group" in bad_pattern.stderr

    broken = write_csv(tmp_path / "broken.csv", [["Site", "visit1", "x", "T1", "zero", "repo/none.nii.gz"]])
    refused = _qcloop(env, "import", str(broken), "--project", "Site")
    assert refused.returncode == 1 and "nothing imported: row 2, field frame_number" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.slow
def test_an_import_killed_mid_write_leaves_nothing(tmp_path, database_factory):
    url = database_factory("transfer_kill")
    env = _env(tmp_path, url, QCLOOP_IMPORT_MISSING_FILES="off", PYTHONUNBUFFERED="1")
    assert _qcloop(env, "db", "upgrade").returncode == 0
    rows = [["Big", f"e{n // 100}", f"s{n}", "T1", 0, f"big/{n}.nii.gz", "", "", "", "", "U", "x@y.org", "", "",
             "lesions", ""] for n in range(40000)]
    source = write_csv(tmp_path / "big.csv", rows)
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "import", str(source)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if "decisions" in line:  # experiments, scans and frames are written; decisions are being written
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            for table in ("projects", "experiments", "scans", "frames", "decisions", "decision_artifacts"):
                assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table
    finally:
        engine.dispose()
