"""Orthanc's own REST API beside its DICOMweb plugin: where decisions go back on an Orthanc server.

DICOMweb has no standard way to annotate a series, so on Orthanc each scan's latest decision is written
as series metadata (``PUT /series/{id}/metadata/QcloopDecision``). Orthanc keeps only metadata its
configuration declares, so the server needs ``"UserMetadata": {"QcloopDecision": 1024}`` (README: sync).
"""
from __future__ import annotations

import logging
from typing import Any

import requests

from app.services.sync.base import SourceError

log = logging.getLogger(__name__)

METADATA = "QcloopDecision"
METADATA_CONFIG = f'"UserMetadata": {{"{METADATA}": 1024}}'


class OrthancServer:
    """An Orthanc server's REST root (the DICOMweb URL minus its plugin's path), with the source's session."""

    def __init__(self, root: str, session: requests.Session, source: str, timeout: tuple[float, float]) -> None:
        self.root = root.rstrip("/") + "/"
        self.session = session
        self.source = source
        self.timeout = timeout

    @classmethod
    def detect(cls, root: str, session: requests.Session, source: str,
               timeout: tuple[float, float]) -> OrthancServer | None:
        """The server when ``GET /system`` answers as Orthanc does (its ``Version`` and ``ApiVersion``), else
        None: any other DICOMweb server (whatever it answers there), whose decisions go to the export file."""
        server = cls(root, session, source, timeout)
        response = server._request("GET", "system", "asking whether the server is Orthanc",
                                   allowed=tuple(range(400, 600)))
        if not response.ok:
            return None
        try:
            system = response.json()
        except ValueError:
            return None
        if not (isinstance(system, dict) and "Version" in system and "ApiVersion" in system):
            return None
        log.info("%s is Orthanc %s", source, system["Version"])
        return server

    def series_id(self, series_uid: str) -> str | None:
        """Orthanc's id of the series with this SeriesInstanceUID (``POST /tools/lookup``), None when gone."""
        response = self._request("POST", "tools/lookup", f"looking up series {series_uid}", data=series_uid)
        found: list[dict[str, Any]] = response.json()
        return next((entry["ID"] for entry in found if entry.get("Type") == "Series"), None)

    def write_metadata(self, series_id: str, value: str, series_uid: str) -> str | None:
        """Store ``value`` as the series' decision metadata; the reason when Orthanc refuses it (None when
        stored). Credentials refused or a server gone raise: no other series would fare better."""
        response = self._request("PUT", f"series/{series_id}/metadata/{METADATA}",
                                 f"writing the decision of series {series_uid}", data=value.encode(),
                                 allowed=(400, 404, 415))
        if response.ok:
            return None
        return (f"Orthanc refused the metadata {METADATA} (HTTP {response.status_code}): declare it in the "
                f"server's configuration, {METADATA_CONFIG}")

    def _request(self, method: str, path: str, doing: str, *, data: Any = None,
                 allowed: tuple[int, ...] = ()) -> requests.Response:
        try:
            response = self.session.request(method, self.root + path, data=data, timeout=self.timeout)
        except requests.RequestException as error:
            raise refusal(self.source, error, doing) from error
        if response.ok or response.status_code in allowed:
            return response
        raise refusal(self.source, requests.HTTPError(response=response), doing)


def refusal(source: str, error: requests.RequestException, doing: str) -> SourceError:
    """The error naming the source for a failed request: credentials refused, a server that cannot be
    reached or did not answer in time, or an HTTP error (with what was being done)."""
    response = error.response
    if response is not None:
        if response.status_code in (401, 403):
            return SourceError(source, f"the server refused the credentials (HTTP {response.status_code}) while "
                                       f"{doing}; check the user name and password")
        status = " ".join(filter(None, (str(response.status_code), response.reason)))
        return SourceError(source, f"the server answered HTTP {status} while {doing}")
    if isinstance(error, requests.Timeout):
        return SourceError(source, f"the server did not answer in time while {doing}")
    if isinstance(error, requests.ConnectionError):
        return SourceError(source, f"the server cannot be reached while {doing} ({_cause(error)})")
    return SourceError(source, f"{doing} failed: {error}")


def _cause(error: Exception) -> str:
    """The innermost reason of a connection error ("Connection refused"), not urllib3's nested repr."""
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause)
    return text.split("] ", 1)[-1] if "] " in text else text or type(cause).__name__
