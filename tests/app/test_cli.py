"""The qcloop command: clear one-line errors, users and the demo."""
import os
import subprocess
import sys


def _qcloop(*args, env=None, tmp_path=None):
    environment = {**os.environ, "QCLOOP_INSTANCE_PATH": str(tmp_path / "instance"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=environment,
                          timeout=900)


def test_unreachable_database_is_one_clear_line(tmp_path):
    result = _qcloop("db", "upgrade", env={"DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
                     tmp_path=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error: database") and "unreachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unwritable_data_root_and_missing_mlflow_store(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _qcloop("db", "upgrade", env={"QCLOOP_DATA_ROOT": str(blocker / "data")}, tmp_path=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "data root" in result.stderr
    result = _qcloop("db", "upgrade", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}, tmp_path=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "MLflow" in result.stderr


def test_db_upgrade_users_and_demo_twice(tmp_path, database_factory):
    env = {"DATABASE_URL": database_factory("cli"), "QCLOOP_ADMIN_PASSWORD": "demo-password-1"}
    assert _qcloop("db", "upgrade", env=env, tmp_path=tmp_path).returncode == 0
    created = _qcloop("users", "create", "carol", "--password", "carolpass1", "--superuser", env=env, tmp_path=tmp_path)
    assert created.returncode == 0 and "superuser" in created.stdout
    clash = _qcloop("users", "create", "carol", "--password", "carolpass1", env=env, tmp_path=tmp_path)
    assert clash.returncode == 1 and "already exists" in clash.stderr
    changed = _qcloop("users", "set-password", "carol", "--password", "newpass123", env=env, tmp_path=tmp_path)
    assert changed.returncode == 0 and "password of carol changed" in changed.stdout
    unknown = _qcloop("users", "set-password", "nobody", "--password", "newpass123", env=env, tmp_path=tmp_path)
    assert unknown.returncode == 1 and "no user named" in unknown.stderr
    first = _qcloop("demo", env=env, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "4 experiments, 45 scans" in first.stdout and "(51 new)" in first.stdout
    # the reviewed experiment trained the first model, which scored every scan
    assert "qcloop-demo-brain-qc version 1 (champion) suggests on every scan" in first.stdout, first.stdout
    assert "evaluated by 3-fold cross-validation" in first.stdout and "held-out AUC on 32 scans" in first.stdout
    second = _qcloop("demo", env=env, tmp_path=tmp_path)
    assert second.returncode == 0 and "(0 new)" in second.stdout and "existing password" in second.stdout
    assert "suggests on every scan" not in second.stdout  # the model is kept
