"""A URL that is not a qcloop server (a web page, another service's JSON, a redirect): the client raises
NotQcloop naming the URL, the command line says so in one line and exits 4, never a traceback or a None."""
from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qcloop_client import Client, ConnectionFailed
from qcloop_client.cli import UNREACHABLE, main
from qcloop_client.errors import NotQcloop

# (status, content type, body, extra headers) that each stub answers to every request
ANSWERS = {
    "html page": (200, "text/html", b"<!doctype html><html><body>Welcome to nginx!</body></html>", {}),
    "html 404": (404, "text/html", b"<!doctype html><title>404 Not Found</title>", {}),
    "other json": (200, "application/json", b'{"status": "ok", "items": [], "next": null}', {}),
    "other json 404": (404, "application/json", b'{"message": "no route", "code": 404}', {}),
    "json list": (200, "application/json", b"[1, 2, 3]", {}),
    "redirect": (301, "text/html", b"", {"Location": "https://qc.example.org/"}),
}


class _Stub(BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes, dict[str, str]] = ANSWERS["html page"]

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, media, body, headers = self.answer
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _reply

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=list(ANSWERS))
def wrong(request):
    """A server answering one kind of non-qcloop answer to everything: its URL."""
    handler = type("Stub", (_Stub,), {"answer": ANSWERS[request.param]})
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    http.server_close()


def test_the_client_raises_not_qcloop_for_every_kind_of_answer(wrong, tmp_path):
    csv = tmp_path / "decisions.csv"
    csv.write_text("project_name\n", encoding="utf-8")
    calls = {
        "login": lambda: Client.login(wrong, "ana", "secret"),
        "projects": lambda: Client(wrong, "t").projects().to_list(),
        "project by name": lambda: Client(wrong, "t").project("Demo"),
        "import": lambda: Client(wrong, "t").import_file(csv),
        "import into a project": lambda: Client(wrong, "t").import_file(csv, 3),
        "decisions": lambda: Client(wrong, "t").decisions(3).to_list(),
        "job": lambda: Client(wrong, "t").wait(5, progress=False),
        "export": lambda: Client(wrong, "t").export(3, output=tmp_path / "out.csv"),
    }
    for name, call in calls.items():
        with pytest.raises(NotQcloop) as raised:
            call()
        message = str(raised.value)
        assert f"{wrong} did not answer as a qcloop server (" in message and "None" not in message, (name, message)
        assert isinstance(raised.value, ConnectionFailed) and raised.value.status is not None
    assert not (tmp_path / "out.csv").exists()


def test_the_command_line_says_one_line_and_exits_4(wrong, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QCLOOP_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("QCLOOP_URL", wrong)
    monkeypatch.setenv("QCLOOP_TOKEN", "x" * 40)
    csv = tmp_path / "decisions.csv"
    csv.write_text("project_name\n", encoding="utf-8")
    commands = [["login", wrong, "-u", "ana", "--password-stdin"], ["projects"], ["projects", "--json"],
                ["import", str(csv)], ["import", str(csv), "--project", "3"], ["decisions", "--project", "3"],
                ["decisions", "--project", "Demo", "--format", "json"], ["wait", "5"], ["runs", "--project", "3"],
                ["export", "--project", "3", "-o", str(tmp_path / "out.csv")]]
    for argv in commands:
        monkeypatch.setattr("sys.stdin", io.StringIO("secret\n"))
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == UNREACHABLE and out == "", (argv, code, out, err)
        assert err.count("\n") == 1 and err.startswith(f"qcloop-client: {wrong} did not answer as a qcloop server ("), \
            (argv, err)
        assert "None" not in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "out.csv").exists()
