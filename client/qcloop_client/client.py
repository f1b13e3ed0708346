"""The client: one method per thing qcloop's API does, answers as the server's JSON (dicts)."""
from __future__ import annotations

import contextlib
import functools
import os
import re
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from qcloop_client.errors import AuthError, ConnectionFailed, InvalidInput, JobFailed, NotFound, QcloopError, \
    from_response, not_qcloop
from qcloop_client.listing import Listing, decision_row, require

API = "/api/v1"
FINAL_STATES = ("succeeded", "failed", "cancelled")
PAGE_SIZE = 100
# The keys the client reads from each kind of answer: an answer without them is not qcloop's.
JOB_KEYS = ("id", "kind", "state")
RUN_KEYS = ("id", "project_id", "state", "job_id")
PAGE_KEYS = ("count", "next", "results")
SUMMARY_KEYS = ("projects", "counts")
DECISION_KEYS = ("id", "scan", "decision")

ProjectRef = int | str  # an id, or a project's name


class Client:
    """A session with one qcloop server, authenticated by an API token (``Authorization: Token ...``)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Token {token}"} if token else {}
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=_tls())
        except httpx.InvalidURL as err:
            raise ConnectionFailed(f"not a server URL: {url} ({err})") from None

    @classmethod
    def login(cls, url: str, username: str, password: str, *, timeout: float = 60.0) -> Client:
        """Exchange a username and password for a token (the server's ``/api-token-auth/``)."""
        with cls(url, timeout=timeout) as anonymous:
            try:
                answer = anonymous._json("POST", "/api-token-auth/", keys=("token",),
                                         json={"username": username, "password": password})
            except InvalidInput as err:  # DRF's answer to wrong credentials is a 400
                raise AuthError(err.detail, status=err.status, error="login_failed", body=err.body) from None
        return cls(url, answer["token"], timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """One request; a refusal becomes its typed error, no answer a ConnectionFailed."""
        try:
            request = self._http.build_request(method, path, **kwargs)
            response = self._http.send(request, stream=stream)
        except httpx.TransportError as err:
            raise ConnectionFailed(f"cannot reach {self.url}: {err or type(err).__name__}") from None
        except httpx.InvalidURL as err:
            raise ConnectionFailed(f"not a server URL: {self.url} ({err})") from None
        if response.is_error:
            response.read()
            raise from_response(self.url, response)
        if response.is_redirect:  # qcloop's API never redirects: a proxy or another site does
            response.read()
            raise not_qcloop(self.url, response, f"a redirect to {response.headers.get('location', 'nowhere')}")
        return response

    def _json(self, method: str, path: str, *, keys: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """One request's JSON answer, checked (see ``_checked``); None for a 204."""
        response = self._send(method, path, **kwargs)
        if response.status_code == 204:
            return None
        return self._checked(response, keys)

    def _checked(self, response: httpx.Response, keys: tuple[str, ...]) -> dict:
        """The only place an answer is read: a JSON object carrying ``keys``, else NotQcloop (a wrong URL
        answers HTML or another service's JSON, and must not end in a KeyError)."""
        try:
            answer = response.json()
        except ValueError:
            raise not_qcloop(self.url, response, "not JSON") from None
        if not isinstance(answer, dict):
            raise not_qcloop(self.url, response, f"JSON {type(answer).__name__}, not an object", answer)
        missing = [key for key in keys if key not in answer]
        if missing:
            raise not_qcloop(self.url, response, f"no {', '.join(repr(key) for key in missing)} in its JSON", answer)
        return answer

    def _file(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A streamed file answer (export, frame download): qcloop sends it as an attachment; anything else
        (a wrong URL's page) is NotQcloop, and is not saved."""
        response = self._send(method, path, stream=True, **kwargs)
        if not response.headers.get("content-disposition", "").startswith("attachment"):
            response.read()
            raise not_qcloop(self.url, response, "not a file attachment")
        return response

    def _pages(self, path: str, params: dict[str, Any] | None = None,
               item_keys: tuple[str, ...] = ("id",)) -> Iterator[dict]:
        """Every item of a paginated list (``count``, ``next``, ``results``), one page at a time."""
        params = {key: value for key, value in (params or {}).items() if value is not None}
        offset = 0
        while True:
            response = self._send("GET", path, params={**params, "limit": PAGE_SIZE, "offset": offset})
            page = self._checked(response, PAGE_KEYS)
            if not isinstance(page["results"], list) or not all(
                    isinstance(item, dict) and all(key in item for key in item_keys) for item in page["results"]):
                raise not_qcloop(self.url, response, f"its 'results' are not objects with {', '.join(item_keys)}",
                                 page)
            yield from page["results"]
            offset += len(page["results"])
            if page["next"] is None or not page["results"]:
                return

    def _listing(self, path: str, item_keys: tuple[str, ...] = ("id",), **params: Any) -> Listing:
        return Listing(lambda: self._pages(path, params, item_keys))

    # -- projects, experiments, scans, frames --------------------------------------------------

    def me(self) -> dict:
        return self._json("GET", f"{API}/users/me", keys=("username",))

    def projects(self) -> Listing:
        return self._listing(f"{API}/projects", ("id", "name"))

    def project(self, project: ProjectRef) -> dict:
        return self._json("GET", f"{API}/projects/{self.project_id(project)}")

    def project_id(self, project: ProjectRef | dict) -> int:
        """A project's id from its id (digits too), its name or its answer."""
        if isinstance(project, dict):
            return int(project["id"])
        if isinstance(project, int) or project.isdigit():
            return int(project)
        for item in self.projects():
            if item["name"] == project:
                return int(item["id"])
        raise NotFound(f"no project named {project!r} that you may read", status=404, error="not_found")

    def create_project(self, name: str, template: str | None = None) -> dict:
        return self._json("POST", f"{API}/projects", json={"name": name, "template": template})

    def experiments(self, project: ProjectRef | None = None) -> Listing:
        return self._listing(f"{API}/experiments", project=self._optional_project(project))

    def experiment(self, experiment_id: int) -> dict:
        return self._json("GET", f"{API}/experiments/{experiment_id}")

    def scans(self, project: ProjectRef | None = None, experiment: int | None = None) -> Listing:
        """Scans with their frames, decisions (newest first), state and the champion's suggestion."""
        return self._listing(f"{API}/scans", project=self._optional_project(project), experiment=experiment)

    def scan(self, scan_id: int) -> dict:
        return self._json("GET", f"{API}/scans/{scan_id}")

    def frames(self, scan: int | None = None) -> Listing:
        return self._listing(f"{API}/frames", scan=scan)

    def frame(self, frame_id: int) -> dict:
        return self._json("GET", f"{API}/frames/{frame_id}")

    def upload_frame(self, path: str | Path, *, scan: int | None = None, project: ProjectRef | None = None,
                     experiment: str | None = None, scan_name: str | None = None, scan_type: str | None = None,
                     frame_number: int = 0) -> dict:
        """Upload an image file as a frame of ``scan``, or of ``project``/``experiment``/``scan_name``."""
        form = {"frame_number": frame_number, "scan": scan, "project": self._optional_project(project),
                "experiment": experiment, "scan_name": scan_name, "scan_type": scan_type}
        with open(path, "rb") as handle:
            return self._json("POST", f"{API}/frames", files={"file": (Path(path).name, handle)},
                              data={key: str(value) for key, value in form.items() if value is not None})

    def download_frame(self, frame_id: int, destination: str | Path = ".") -> Path:
        """Save the frame's original file (a zip for a multi-file frame) into a folder or as a path."""
        response = self._file("GET", f"{API}/frames/{frame_id}/download")
        target = Path(destination)
        if target.is_dir():
            target = target / (_attachment_name(response) or f"frame-{frame_id}")
        return _save(response, target)

    # -- decisions, locks, vocabularies --------------------------------------------------------

    def decisions(self, project: ProjectRef | None = None, scan: int | None = None) -> Listing:
        """Decisions (of one scan, of one project, or every one the caller may read); ``to_dataframe()``
        gives one row each. A project's are read with its scans, so each also names its scan, experiment
        and what its decision key means in the project's vocabulary."""
        if project is None or scan is not None:
            return Listing(lambda: self._pages(f"{API}/scan-decisions", {"scan": scan}, DECISION_KEYS), decision_row,
                           ("created",))
        project_id = self.project_id(project)

        def items() -> Iterator[dict]:
            meanings = {option["key"]: option["meaning"] for option in self.vocabulary(project_id)["decisions"]}
            for item in self._pages(f"{API}/scans", {"project": project_id}, ("name", "experiment", "decisions")):
                for decision in item["decisions"]:
                    yield {**decision, "scan_name": item["name"], "experiment": item["experiment"],
                           "meaning": meanings.get(decision["decision"])}
        return Listing(items, decision_row, ("created",))

    def decisions_frame(self, project: ProjectRef | None = None, scan: int | None = None) -> Any:
        """``decisions(...).to_dataframe()``: needs pandas (the ``pandas`` extra)."""
        return self.decisions(project, scan).to_dataframe()

    def create_decision(self, scan: int, decision: str, *, note: str = "", present: list[str] | tuple = (),
                        absent: list[str] | tuple = (), location: dict | None = None) -> dict:
        """Record a decision; the caller must hold the experiment's lock (see ``locked``)."""
        body = {"scan": scan, "decision": decision, "note": note,
                "artifacts": {"present": list(present), "absent": list(absent)}, "location": location}
        return self._json("POST", f"{API}/scan-decisions", json=body)

    def lock(self, experiment: int) -> dict:
        return self._json("POST", f"{API}/experiments/{experiment}/lock")

    def unlock(self, experiment: int) -> dict:
        return self._json("DELETE", f"{API}/experiments/{experiment}/lock")

    @contextlib.contextmanager
    def locked(self, experiment: int) -> Iterator[dict]:
        """Hold an experiment's review lock for the block (deciding needs it)."""
        answer = self.lock(experiment)
        try:
            yield answer
        finally:
            self.unlock(experiment)

    def vocabulary(self, project: ProjectRef) -> dict:
        """The project's decision options (each a ``key`` and its ``meaning``) and artifact entries."""
        path = f"{API}/projects/{self.project_id(project)}/vocabulary"
        response = self._send("GET", path)
        answer = self._checked(response, ("decisions", "artifacts"))
        if not isinstance(answer["decisions"], list) or not all(
                isinstance(option, dict) and {"key", "meaning"} <= set(option) for option in answer["decisions"]):
            raise not_qcloop(self.url, response, "its 'decisions' are not options with a key and a meaning", answer)
        return answer

    # -- import, export, jobs -----------------------------------------------------------------

    def import_file(self, path: str | Path, project: ProjectRef | None = None, *, mode: str = "merge",
                    dry_run: bool = False, add_unknown_artifacts: bool = False, wait: bool = True,
                    progress: bool = False) -> dict:
        """Import a MIQA or qcloop CSV/JSON file (into every project it names when ``project`` is None).
        Answers the summary; a large file runs as a job: waited for when ``wait`` (its result is the
        summary), else the "job started" answer to pass to ``wait``."""
        url = f"{API}/projects/{self.project_id(project)}/import" if project is not None else f"{API}/global/import"
        options = {"mode": mode, "dry_run": str(dry_run).lower(),
                   "add_unknown_artifacts": str(add_unknown_artifacts).lower()}
        with open(path, "rb") as handle:
            response = self._send("POST", url, files={"file": (Path(path).name, handle)}, data=options)
        started = response.status_code == 202
        answer = self._checked(response, ("job", "url") if started else SUMMARY_KEYS)
        if started and wait:
            return self.wait(answer, progress=progress)["result"]
        return answer

    def export(self, project: ProjectRef | None = None, format: str = "miqa-csv",
               output: str | Path | None = None) -> str | Path:
        """Export a project (every project when None): the text, or the file written atomically at ``output``."""
        url = f"{API}/projects/{self.project_id(project)}/export" if project is not None else f"{API}/global/export"
        response = self._file("POST", url, json={"format": format})
        if output is None:
            response.read()
            return response.text
        return _save(response, Path(output))

    def job(self, job: int | dict) -> dict:
        """A job: an id (a project's job or a global one), a job, a "job started" answer or a training run."""
        return self._find_job(job)[1]

    def cancel_job(self, job: int | dict) -> dict:
        return self._json("POST", self._find_job(job)[0] + "/cancel", keys=JOB_KEYS)

    def _find_job(self, job: int | dict) -> tuple[str, dict]:
        """Where a job is polled, and its state now. A bare id is read as a project's job, then, when no
        project has it, as a global one (an import naming no project: superusers only); neither found is
        the first 404."""
        path = _job_url(job) if isinstance(job, dict) else f"{API}/jobs/{int(job)}"
        try:
            return path, self._json("GET", path, keys=JOB_KEYS)
        except NotFound as missing:
            if isinstance(job, dict):
                raise
            global_path = f"{API}/global/jobs/{int(job)}"
            try:
                return global_path, self._json("GET", global_path, keys=JOB_KEYS)
            except (NotFound, AuthError):
                raise missing from None

    def wait(self, job: int | dict, *, progress: bool = True, interval: float = 1.0,
             timeout: float | None = None) -> dict:
        """Poll a job (an id, a job, a "job started" answer or a training run) until it ends; the job
        when it succeeded, JobFailed otherwise. A progress bar when ``progress`` and tqdm is installed."""
        url, current = self._find_job(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                if bar is None and progress:
                    bar = _progress_bar(url)
                if bar is not None:
                    bar.update(round(100 * (current.get("progress") or 0.0)) - bar.n)
                    bar.set_postfix_str(current.get("message") or current["state"], refresh=True)
                if current["state"] in FINAL_STATES:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise QcloopError(f"job {current['id']} is still {current['state']} after {timeout:g} s",
                                      body=current)
                time.sleep(interval)
                current = self._json("GET", url, keys=JOB_KEYS)
        finally:
            if bar is not None:
                bar.close()
        if current["state"] != "succeeded":
            reason = current.get("error") or current.get("message") or "no reason given"
            raise JobFailed(f"job {current['id']} ({current['kind']}) {current['state']}: {reason}",
                            error=current["state"], body=current)
        return current

    # -- training, models, evaluations, prediction ---------------------------------------------

    def training_runs(self, project: ProjectRef) -> Listing:
        return self._listing(f"{API}/projects/{self.project_id(project)}/training-runs", RUN_KEYS)

    def training_run(self, run_id: int) -> dict:
        return self._json("GET", f"{API}/training-runs/{run_id}", keys=RUN_KEYS)

    def train(self, project: ProjectRef, *, wait: bool = False, progress: bool = True, **params: Any) -> dict:
        """Start a training run (``params`` as the API's body: epochs, arch, lr, ..., ``from_`` for
        ``from``); with ``wait``, the run once its job ended (JobFailed if it failed)."""
        body = {key.rstrip("_"): value for key, value in params.items()}
        run = self._json("POST", f"{API}/projects/{self.project_id(project)}/training-runs", keys=RUN_KEYS,
                         json=body)
        if wait and run["state"] not in FINAL_STATES:
            self.wait(run, progress=progress)
        return self.training_run(run["id"]) if wait else run

    def cancel_run(self, run_id: int) -> dict:
        return self._json("POST", f"{API}/training-runs/{run_id}/cancel", keys=RUN_KEYS)

    def promote(self, run: int | dict, *, force: bool = False) -> dict:
        """Make a run's model the champion; Conflict (with the comparison in ``body``) when it is not
        better than the current one, unless ``force`` (audited)."""
        run = run if isinstance(run, dict) else self.training_run(run)
        return self._json("POST", f"{API}/projects/{run['project_id']}/training-runs/{run['id']}/promote",
                          keys=("run", "forced"), json={"force": force})

    def make_champion(self, project: ProjectRef, version: int | str) -> dict:
        """Roll back: make an earlier model version the champion again (audited)."""
        return self._json("POST", f"{API}/projects/{self.project_id(project)}/models/{version}/rollback",
                          keys=("registry_name", "version"), json={})

    def models(self, project: ProjectRef) -> dict:
        """Model versions, the champion's agreement with reviewers, evaluation jobs."""
        return self._json("GET", f"{API}/projects/{self.project_id(project)}/models", keys=("versions",))

    def evaluations(self, scan: int) -> list[dict]:
        """Every model version's evaluations of a scan and its frames, newest first."""
        return self._json("GET", f"{API}/scans/{scan}/evaluations", keys=("results",))["results"]

    def evaluate(self, project: ProjectRef, *, version: str | None = None, scope: str = "unscored",
                 wait: bool = False, progress: bool = True) -> dict:
        """Score the project's frames with a version (default the champion): the job (ended, with ``wait``)."""
        body = {"scope": scope, **({"version": str(version)} if version is not None else {})}
        started = self._json("POST", f"{API}/projects/{self.project_id(project)}/evaluations", keys=("job", "url"),
                             json=body)
        return self.wait(started, progress=progress) if wait else started["job"]

    def predict(self, project: ProjectRef, path: str | Path) -> dict:
        """The champion's scores for an image file; nothing is stored on the server."""
        with open(path, "rb") as handle:
            return self._json("POST", f"{API}/projects/{self.project_id(project)}/predict",
                              keys=("model", "version", "scores"), files={"file": (Path(path).name, handle)})

    # -- tokens ---------------------------------------------------------------------------------

    def tokens(self) -> Listing:
        return self._listing(f"{API}/tokens")

    def create_token(self, name: str = "", expires_in_days: int | None = None) -> dict:
        """A new token of the caller; its secret (``token``) is in this answer only."""
        return self._json("POST", f"{API}/tokens", keys=("id", "token"),
                          json={"name": name, "expires_in_days": expires_in_days})

    def revoke_token(self, token_id: int) -> None:
        self._json("DELETE", f"{API}/tokens/{token_id}")

    def _optional_project(self, project: ProjectRef | None) -> int | None:
        return None if project is None else self.project_id(project)


def _job_url(job: dict) -> str:
    """Where a job is polled: a "job started" answer names it; a global job (no project) lives apart."""
    if "url" in job:
        return str(job["url"])
    if "job" in job:
        return _job_url(job["job"])
    if "job_id" in job:  # a training run
        if job["job_id"] is None:
            raise InvalidInput(f"run {job['id']} has no job", error="invalid")
        return f"{API}/jobs/{job['job_id']}"
    if "project" in job and job["project"] is None:
        return f"{API}/global/jobs/{job['id']}"
    return f"{API}/jobs/{job['id']}"


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: building it reads the CA bundle, a noticeable
    cost for each client a script or the log-in makes."""
    return httpx.create_ssl_context()


def _progress_bar(url: str) -> Any:
    try:
        tqdm = require("tqdm", "progress").tqdm
    except ImportError:
        return None
    return tqdm(total=100, desc=f"job {url.rsplit('/', 1)[-1]}", unit="%")


def _attachment_name(response: httpx.Response) -> str | None:
    found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    return Path(found.group(1)).name if found else None


def _save(response: httpx.Response, target: Path) -> Path:
    """Stream an answer to ``target`` through a temporary file beside it: never a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as handle:
        try:
            for chunk in response.iter_bytes():
                handle.write(chunk)
        except httpx.TransportError as err:
            os.unlink(handle.name)
            raise ConnectionFailed(f"the answer broke off: {err or type(err).__name__}") from None
        except BaseException:
            os.unlink(handle.name)
            raise
        finally:
            response.close()
    os.replace(handle.name, target)
    return target
