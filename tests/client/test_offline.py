"""The client's parts that need no server: the saved log-in and its file mode, optional dependencies."""
from __future__ import annotations

import json
import stat
import sys

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
