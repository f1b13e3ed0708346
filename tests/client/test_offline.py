"""The client's parts that need no server: the saved log-in and its file mode, optional dependencies."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qcloop_client import config
from qcloop_client.listing import Listing


def test_credentials_are_private_replaced_whole_and_overridden_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QCLOOP_CONFIG_DIR", str(tmp_path / "qcloop"))
    monkeypatch.delenv("QCLOOP_URL", raising=False)
    monkeypatch.delenv("QCLOOP_TOKEN", raising=False)
    assert config.load_credentials() is None
    (tmp_path / "qcloop").mkdir()
    (tmp_path / "qcloop" / "credentials.json").write_text("{}")
    (tmp_path / "qcloop" / "credentials.json").chmod(0o644)
    path = config.save_credentials("http://qc.example.org", "ana", "a" * 40)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and [p.name for p in path.parent.iterdir()] == [path.name]
    assert json.loads(path.read_text()) == {"url": "http://qc.example.org", "username": "ana", "token": "a" * 40}
    monkeypatch.setenv("QCLOOP_URL", "http://elsewhere.example.org")  # the saved token is not sent to another server
    assert config.load_credentials() is None
    monkeypatch.delenv("QCLOOP_URL")
    monkeypatch.setenv("QCLOOP_TOKEN", "b" * 40)
    assert config.load_credentials() == {"url": "http://qc.example.org", "token": "b" * 40, "username": "ana"}
    monkeypatch.delenv("QCLOOP_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.credentials_path() == tmp_path / "xdg" / "qcloop" / "credentials.json"


def test_a_dataframe_without_pandas_says_which_extra_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'qcloop-client\[pandas\]'"):
        Listing(lambda: iter([{"id": 1}])).to_dataframe()


CLIENT = Path(__file__).resolve().parents[2] / "client"
# What the client must never need: the server's packages and what they pull in, and the optional extras.
FORBIDDEN = ("app", "flask", "werkzeug", "sqlalchemy", "training", "models", "tests", "torch", "mlflow", "pandas",
             "tqdm")
_ALONE = """
import sys
sys.path[:] = [{client!r}, *sys.path, *{site!r}]  # -S: the standard library only, until now
forbidden = {forbidden!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in forbidden:
            raise ImportError(f"{{name}} may not be imported by the client")

sys.meta_path.insert(0, Refuse())
for name in forbidden:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{{name}} could be imported")
import qcloop_client, qcloop_client.cli
assert qcloop_client.__file__.startswith({client!r}), qcloop_client.__file__
client = qcloop_client.Client("http://127.0.0.1:9", "t")
client.close()
code = qcloop_client.cli.main(["projects"])  # no log-in saved: refused before any request
print(code, sorted(m for m in sys.modules if m.split(".")[0] in forbidden))
"""


def test_the_package_depends_on_httpx_alone():
    meta = tomllib.loads((CLIENT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower() for requirement in meta["dependencies"]]
    assert names == ["httpx"]
    extras = {extra: [re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower() for r in requirements]
              for extra, requirements in meta["optional-dependencies"].items()}
    assert extras == {"pandas": ["pandas"], "progress": ["tqdm"]}
    assert meta["scripts"] == {"qcloop-client": "qcloop_client.cli:main"}


def test_the_client_imports_and_runs_without_the_server_or_the_extras(tmp_path):
    """In a fresh interpreter (no site, no user packages) seeing only client/ and the installed libraries,
    with the server's packages and the extras refused at import."""
    site = [path for path in sys.path if path.endswith("site-packages")]
    script = _ALONE.format(client=str(CLIENT), site=site, forbidden=FORBIDDEN)
    env = {"PATH": os.environ.get("PATH", ""), "QCLOOP_CONFIG_DIR": str(tmp_path / "config")}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, encoding="utf-8",
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3 []" and "not logged in" in done.stderr
