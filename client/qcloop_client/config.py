"""Where the remote CLI keeps its log-in: ``credentials.json`` in the user's config folder, mode 0600."""
from __future__ import annotations

import json
import os
from pathlib import Path


def config_dir() -> Path:
    """``$QCLOOP_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/qcloop``, else ``~/.config/qcloop``."""
    if os.environ.get("QCLOOP_CONFIG_DIR"):
        return Path(os.environ["QCLOOP_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qcloop"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def save_credentials(url: str, username: str, token: str) -> Path:
    """Write the log-in readable by its owner only, replacing the previous one at once."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"url": url, "username": username, "token": token}, handle)
    os.chmod(temporary, 0o600)  # whatever the umask or an older file left
    os.replace(temporary, path)
    return path


def load_credentials() -> dict[str, str] | None:
    """The saved log-in, with ``QCLOOP_URL`` / ``QCLOOP_TOKEN`` taking precedence (the saved token only for
    the server it was saved for); None without a URL and a token."""
    path = credentials_path()
    saved: dict[str, str] = {}
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            saved = {}
    url = os.environ.get("QCLOOP_URL") or saved.get("url")
    # a token saved for one server is never sent to another
    token = os.environ.get("QCLOOP_TOKEN") or (saved.get("token") if url == saved.get("url") else None)
    if not url or not token:
        return None
    return {"url": url, "token": token, "username": saved.get("username", "")}
