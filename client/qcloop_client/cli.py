"""qcloop-client: qcloop's loop from a shell, over the API.

Exit codes: 0 done, 1 refused by the server (4xx) or a job that failed, 2 usage, 3 not logged in or
not allowed, 4 no qcloop server at the URL (nothing answers, or something that is not qcloop), 5 server
error. Errors are one line on stderr.
"""
from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable

from qcloop_client.client import Client
from qcloop_client.config import credentials_path, load_credentials, save_credentials
from qcloop_client.errors import AuthError, ConnectionFailed, QcloopError, ServerError
from qcloop_client.listing import DECISION_COLUMNS, decision_row

OK, REFUSED, USAGE, AUTH, UNREACHABLE, SERVER = 0, 1, 2, 3, 4, 5


class Usage(Exception):
    """A mistake on the command line or a local file that cannot be read."""


def _client() -> Client:
    saved = load_credentials()
    if saved is None:
        raise AuthError(f"not logged in ({credentials_path()} has no log-in): run qcloop-client login URL -u USER")
    return Client(saved["url"], saved["token"])


def _emit(args: argparse.Namespace, answer: Any, human: Callable[[Any], str]) -> None:
    print(json.dumps(answer, indent=2, default=str) if args.json else human(answer))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells)


def login(args: argparse.Namespace) -> None:
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    if not password:
        raise Usage("no password given")
    client = Client.login(args.url, args.username, password)
    path = save_credentials(client.url, args.username, client.token or "")
    _emit(args, {"url": client.url, "username": args.username, "credentials": str(path)},
          lambda a: f"logged in to {a['url']} as {a['username']} (token kept in {a['credentials']})")


def projects(args: argparse.Namespace) -> None:
    with _client() as client:
        items = client.projects().to_list()
    _emit(args, items, lambda rows: _table([[p["id"], p["name"], p.get("my_role"), p.get("model_name")]
                                            for p in rows], ["id", "name", "role", "model"]))


def import_(args: argparse.Namespace) -> None:
    _readable(args.file)
    with _client() as client:
        summary = client.import_file(args.file, args.project, mode=args.mode, dry_run=args.dry_run,
                                     add_unknown_artifacts=args.add_unknown_artifacts, progress=not args.json)

    def human(answer: dict) -> str:
        counts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in answer.get("counts", {}).items()
                           if value)
        what = "would change" if answer.get("dry_run") else "imported"
        return f"{what} {', '.join(answer.get('projects', []))}: {counts or 'nothing new'}"
    _emit(args, summary, human)


def export(args: argparse.Namespace) -> None:
    with _client() as client:
        path = client.export(args.project, args.format, args.output)
    _emit(args, {"output": str(path), "bytes": Path(path).stat().st_size},
          lambda a: f"wrote {a['output']} ({a['bytes']} bytes)")


def decisions(args: argparse.Namespace) -> None:
    if args.json and args.format == "csv":
        raise Usage("--json prints JSON: drop --format csv, or --json")
    fmt = "json" if args.json else args.format or "csv"
    with _client() as client:
        items = client.decisions(args.project).to_list()
    if fmt == "json":
        text = json.dumps(items, indent=2)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, DECISION_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(decision_row(item) for item in items)
        text = buffer.getvalue()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {len(items)} decisions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _run_line(run: dict) -> str:
    version = run.get("model_version")
    line = f"run {run['id']} {run['state']}"
    if version:
        line += f": {version['registry_name']} version {version['version']} ({version['alias'] or 'no alias'})"
    metrics = run.get("metrics") or {}
    if metrics.get("heldout_usable_auc") is not None:
        line += f", held-out usable AUC {metrics['heldout_usable_auc']:.3f}"
    if run.get("error"):
        line += f": {run['error']}"
    return line


def train(args: argparse.Namespace) -> None:
    params: dict[str, Any] = {key: value for key, value in (("epochs", args.epochs), ("from", args.from_),
                              ("arch", args.arch), ("fit", args.fit), ("lr", args.lr), ("seed", args.seed))
                              if value is not None}
    for setting in args.set or []:
        key, equals, value = setting.partition("=")
        if not key or not equals:
            raise Usage(f"--set takes KEY=VALUE, not {setting!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    with _client() as client:
        run = client.train(args.project, wait=args.wait, progress=not args.json, **params)
    _emit(args, run, lambda r: _run_line(r) + ("" if args.wait else f" (job {r['job_id']}; "
                                                                   f"qcloop-client wait {r['job_id']})"))


def runs(args: argparse.Namespace) -> None:
    with _client() as client:
        items = client.training_runs(args.project).to_list()
    _emit(args, items, lambda rows: _table(
        [[r["id"], r["state"], (r.get("model_version") or {}).get("version"),
          (r.get("model_version") or {}).get("alias"), (r.get("metrics") or {}).get("heldout_usable_auc"),
          r.get("created_at")] for r in rows], ["id", "state", "version", "alias", "usable_auc", "created"]))


def promote(args: argparse.Namespace) -> None:
    with _client() as client:
        if args.version:
            if args.project is None:
                raise Usage("--version needs --project")
            answer = client.make_champion(args.project, args.id)
            _emit(args, answer, lambda a: f"{a['registry_name']} version {a['version']} is the champion")
            return
        answer = client.promote(args.id, force=args.force)
    _emit(args, answer, lambda a: f"run {args.id} promoted: {a['run']['model_version']['registry_name']} version "
                                  f"{a['run']['model_version']['version']} is the champion"
                                  + (" (forced)" if a.get("forced") else ""))


def wait(args: argparse.Namespace) -> None:
    with _client() as client:
        job = client.wait(args.job, progress=not args.json)
    _emit(args, job, lambda j: f"job {j['id']} ({j['kind']}) {j['state']}")


def predict(args: argparse.Namespace) -> None:
    _readable(args.file)
    with _client() as client:
        answer = client.predict(args.project, args.file)

    def human(a: dict) -> str:
        scores = ", ".join(f"{key} {value:.3f}" for key, value in a.get("scores", {}).items())
        return f"{a.get('model')} version {a.get('version')}: {scores}"
    _emit(args, answer, human)


def _readable(path: str) -> None:
    if not Path(path).is_file():
        raise Usage(f"no such file: {path}")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    main = argparse.ArgumentParser(prog="qcloop-client", description=__doc__.split("\n\n")[0],
                                   epilog="exit codes: 0 ok, 1 refused, 2 usage, 3 auth, 4 no qcloop server, 5 server error")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("login", login, "log in and keep the token in the config folder (mode 0600)")
    sub.add_argument("url")
    sub.add_argument("-u", "--username", required=True)
    sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    command("projects", projects, "the projects you may read")
    sub = command("import", import_, "import a MIQA or qcloop CSV/JSON file")
    sub.add_argument("file")
    sub.add_argument("--project", help="name or id (default: every project the file names; superusers)")
    sub.add_argument("--mode", choices=["merge", "replace"], default="merge")
    sub.add_argument("--dry-run", action="store_true")
    sub.add_argument("--add-unknown-artifacts", action="store_true")
    sub = command("export", export, "export a project (every project without --project)")
    sub.add_argument("--project")
    sub.add_argument("--format", default="miqa-csv",
                     help="miqa-csv (the default), miqa-json, csv or json: the server names the formats it writes")
    sub.add_argument("-o", "--output", required=True)
    sub = command("decisions", decisions, "a project's decisions as CSV or JSON")
    sub.add_argument("--project", required=True)
    sub.add_argument("--format", choices=["csv", "json"], help="csv (the default) or json, as --json")
    sub.add_argument("-o", "--output")
    sub = command("train", train, "start a training run")
    sub.add_argument("--project", required=True)
    sub.add_argument("--epochs", type=int)
    sub.add_argument("--from", dest="from_", choices=["scratch", "miqa", "champion"])
    sub.add_argument("--arch")
    sub.add_argument("--fit", choices=["resize", "pad_crop", "tiles"])
    sub.add_argument("--lr", type=float)
    sub.add_argument("--seed", type=int)
    sub.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="any other setting of the API's body, VALUE read as JSON (e.g. spatial_size=[32,32,32])")
    sub.add_argument("--wait", action="store_true", help="follow the run to its end")
    sub = command("runs", runs, "a project's training runs")
    sub.add_argument("--project", required=True)
    sub = command("promote", promote, "make a run's model the champion (or, with --version, an earlier version)")
    sub.add_argument("id", type=int, metavar="RUN_OR_VERSION")
    sub.add_argument("--version", action="store_true", help="the number is a model version of --project")
    sub.add_argument("--project")
    sub.add_argument("--force", action="store_true", help="promote even when not better (audited)")
    sub = command("wait", wait, "follow a job to its end (a project's job, or a global import's)")
    sub.add_argument("job", type=int)
    sub = command("predict", predict, "the champion's scores for an image file (nothing stored)")
    sub.add_argument("file")
    sub.add_argument("--project", required=True)
    return main


def _hint(err: QcloopError) -> str:
    if isinstance(err, AuthError) and err.status == 401:
        return " (log in again: qcloop-client login URL -u USER)"
    return ""


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    try:
        args.handler(args)
    except Usage as err:
        arguments.exit(USAGE, f"qcloop-client: {err}\n")
    except ConnectionFailed as err:
        print(f"qcloop-client: {err.detail}", file=sys.stderr)
        return UNREACHABLE
    except AuthError as err:
        print(f"qcloop-client: {err}{_hint(err)}", file=sys.stderr)
        return AUTH
    except ServerError as err:
        print(f"qcloop-client: server error: {err}", file=sys.stderr)
        return SERVER
    except QcloopError as err:
        print(f"qcloop-client: {err}", file=sys.stderr)
        return REFUSED
    except OSError as err:
        print(f"qcloop-client: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("qcloop-client: interrupted", file=sys.stderr)
        return 130
    return OK


if __name__ == "__main__":
    sys.exit(main())
