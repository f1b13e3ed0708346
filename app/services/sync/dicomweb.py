"""A DICOMweb server (Orthanc, dcm4chee, a cloud PACS) as a sync source: ``dicomweb+http(s)://[USER:PASSWORD@]
HOST[:PORT]/PATH``, PATH being the server's DICOMweb root (``/dicom-web`` on Orthanc), under one of the
site's ``QCLOOP_DICOMWEB_URLS``.

Listing: QIDO-RS searches the studies, then the series of the studies that are new or changed. A patient
becomes the subject (PatientID), a study an experiment (its StudyDescription, else its date and StudyID)
with its StudyInstanceUID as session, a series a scan ("SeriesNumber SeriesDescription") typed by
:data:`SCAN_TYPE_WORDS`, its QIDO attributes (by keyword) kept as the scan's metadata.

The listing is incremental. QIDO-RS has no "changed since" filter that servers agree on (Orthanc's plugin
has none), so the cursor keeps each study's instance count and each series' instance count and scan name:
a run searches every study (one paged query), the series of only the studies whose count moved, and
lists only the series that are new or whose instance count changed. A series that could not be fetched or
imported leaves the cursor (the engine calls :meth:`DicomwebSource.forget`), and a study whose series search
failed is skipped with the reason and kept out of it, so the next run tries them again. An instance
replaced by another one keeps the counts and goes unseen. A series the cursor knew that QIDO no longer
lists (its study gone, or searched again without it) is named in ``Listing.removed``; the engine reports it,
and its scan and decisions stay.

Fetching: WADO-RS retrieves a series' instances into a temporary folder, one ``.dcm`` file each, which
becomes the series' folder only once every instance is written and the folder reads as one volume; the
frame names its first file.

Pushing: on Orthanc (``GET /system`` on the URL minus its DICOMweb path answers as Orthanc) each decision
becomes series metadata (:mod:`app.services.sync.orthanc`); any other server gets ``decisions.csv`` in the
run's folder.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable
from urllib.parse import unquote, urlsplit

import requests
from dicomweb_client.api import DICOMwebClient
from flask import current_app, has_app_context
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from app.services import imaging
from app.services.errors import InvalidInput, ServiceError
from app.services.sync.base import Listing, Outgoing, Pushed, SourceError, SourceItem
from app.services.sync.orthanc import METADATA, OrthancServer, refusal
from app.services.transfer.csvfile import escape_formula

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 120.0)  # seconds to connect, seconds between bytes of an answer
CHECK_TIMEOUT = (5.0, 5.0)  # the check before a sync is queued, which a web request waits for
NAME_MAX = 255  # the experiments.name and scans.name columns
STUDY_FIELDS = ("StudyDescription", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "PatientID",
                "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "Modality", "ProtocolName", "BodyPartExamined",
                 "SeriesDate", "SeriesTime", "NumberOfSeriesRelatedInstances")
# Modalities whose series hold no image volume (reports, presentation states, key objects, plans...).
NOT_IMAGES = frozenset({"SR", "PR", "KO", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD", "AU", "ECG"})
# Scan types by the words of a series' SeriesDescription, then its ProtocolName (split at anything not a
# letter or digit, compared without case); the first type with a word present wins, so "T2 FLAIR" is FLAIR
# and "DTI b1000 (DWI)" is DTI. Types are qcloop's (app.services.transfer.model.SCAN_TYPES, FLAIR as BIDS
# names it); a series none of them names is a scan without a type, or CT/PET by its Modality.
SCAN_TYPE_WORDS: dict[str, frozenset[str]] = {
    "FLAIR": frozenset({"flair"}),
    "DTI": frozenset({"dti", "tensor"}),
    "DWI": frozenset({"dwi", "diffusion", "diff", "adc", "trace"}),
    "FMRI": frozenset({"bold", "fmri", "rsfmri", "resting"}),
    "MRA": frozenset({"mra", "tof", "angio"}),
    "PD": frozenset({"pd", "pdw"}),
    "T2": frozenset({"t2", "t2w", "tse", "space"}),
    "T1": frozenset({"t1", "t1w", "mprage", "spgr", "bravo", "tfl"}),
}
MODALITY_TYPES = {"CT": "CT", "PT": "PET"}
_WORD = re.compile(r"[a-z0-9]+")


def allowed(base: str, bases: list[str]) -> bool:
    """Whether a server's base URL (``http(s)://HOST[:PORT]/PATH``) lies under one of the allowlisted ``bases``
    (``QCLOOP_DICOMWEB_URLS``, with or without ``dicomweb+``)."""
    for entry in bases:
        entry = entry.strip().removeprefix("dicomweb+").rstrip("/")
        if entry and (base == entry or base.startswith(entry + "/")):
            return True
    return False


class DicomwebSource:
    """A DICOMweb server. In the app it must lie under an allowlisted base (``QCLOOP_DICOMWEB_URLS``: the web
    process and the worker call no other host). Credentials: those given, else the URL's user info, else the
    settings ``DICOMWEB_USERNAME``/``_PASSWORD`` (sent to allowlisted servers only); none: anonymous (never
    ``~/.netrc`` or proxies from the environment)."""

    kind: ClassVar[str] = "dicomweb"

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.removeprefix("dicomweb+")
        if not parts.scheme.startswith("dicomweb+") or scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(url, "not a DICOMweb URL (expected dicomweb+http(s)://[USER:PASSWORD@]HOST[:PORT]/PATH, "
                                   "PATH being the server's DICOMweb root such as /dicom-web)")
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError as error:
            raise SourceError(url, f"not a DICOMweb URL ({error})") from error
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        path = parts.path.rstrip("/")
        if any(segment in (".", "..") for segment in path.split("/")) or parts.query or parts.fragment:
            raise SourceError(url, "not a DICOMweb URL (no . or .. in its path, no ?query or #fragment: the "
                                   "server's DICOMweb root as it is)")
        self.base = f"{scheme}://{host}{port}{path}"
        self.url = "dicomweb+" + self.base  # canonical: never the credentials
        # Orthanc's REST API lies above its DICOMweb root (/dicom-web, or /orthanc/dicom-web behind a proxy).
        self.root = f"{scheme}://{host}{port}{path.rsplit('/', 1)[0]}/"
        listed = has_app_context() and allowed(self.base, current_app.config.get("DICOMWEB_URLS") or [])
        if has_app_context() and not listed:
            raise InvalidInput(f"{self.url} is not an allowed DICOMweb server: an administrator of the site lists "
                               "the servers qcloop may sync from in the setting QCLOOP_DICOMWEB_URLS", field="source")
        self.session = requests.Session()
        self.session.trust_env = False  # no ~/.netrc credentials, no proxies from the environment
        if username is None and parts.username:
            username, password = unquote(parts.username), password or unquote(parts.password or "")
        elif username is None and listed and current_app.config.get("DICOMWEB_USERNAME"):
            username = current_app.config["DICOMWEB_USERNAME"]
            password = password or current_app.config.get("DICOMWEB_PASSWORD", "")
        if username is not None:
            self.session.auth = (username, password or "")
        self.client = DICOMwebClient(self.base, session=self.session, timeout=TIMEOUT)
        self.client.set_http_retry_params(max_attempts=3)

    # -- listing -----------------------------------------------------------------------------------------

    def check(self) -> None:
        """One QIDO-RS search for a single study: the server answers and accepts the credentials. Asked once,
        within :data:`CHECK_TIMEOUT` (a web request waits for it)."""
        doing = "checking the server (QIDO-RS search for one study)"
        try:
            response = self.session.get(f"{self.base}/studies", params={"limit": 1, "includefield": "StudyInstanceUID"},
                                        headers={"Accept": "application/dicom+json"}, timeout=CHECK_TIMEOUT)
            response.raise_for_status()
        except requests.RequestException as error:
            raise refusal(self.url, error, doing) from error
        if response.status_code == 204:  # no study yet
            return
        try:
            found = response.json()
        except ValueError as error:
            raise SourceError(self.url, f"{doing}: the answer is not DICOM JSON ({error})") from error
        if not isinstance(found, list):
            raise SourceError(self.url, f"{doing}: the answer is not DICOM JSON (not a list of studies)")

    def list(self, cursor: dict[str, Any] | None) -> Listing:
        """The series new or changed since ``cursor`` (see the module's note); series of no image modality and
        studies without a UID are skipped once, with the reason."""
        studies_before: dict[str, dict[str, Any]] = dict((cursor or {}).get("studies", {}))
        series_before: dict[str, list[Any]] = dict((cursor or {}).get("series", {}))
        by_study: dict[str, list[str]] = defaultdict(list)
        for key in series_before:
            by_study[key.split("/", 1)[0]].append(key)
        studies_now: dict[str, dict[str, Any]] = {}
        series_now: dict[str, list[Any]] = {}
        listing = Listing(items=[], cursor={"studies": studies_now, "series": series_now}, incremental=True)
        experiments = {entry["experiment"] for entry in studies_before.values()}
        found = self._query(lambda: self.client.search_for_studies(fields=STUDY_FIELDS, get_remaining=True),
                            "searching the studies (QIDO-RS)")
        for study in sorted(found, key=lambda s: (_text(s, "StudyDate"), _text(s, "StudyTime"),
                                                  _text(s, "StudyInstanceUID"))):
            uid = _text(study, "StudyInstanceUID")
            if not uid:
                listing.skipped.append((f"study {_text(study, 'StudyDescription') or '(no description)'}",
                                        "the server gave no StudyInstanceUID"))
                continue
            count = _number(study, "NumberOfStudyRelatedInstances")
            before = studies_before.get(uid)
            if before is None:
                name = _unique(_experiment_name(study, uid), experiments, _text(study, "PatientID"), uid)
                experiments.add(name)
            else:
                name = before["experiment"]
            studies_now[uid] = {"instances": count, "experiment": name}
            if before is not None and count is not None and before["instances"] == count:
                series_now.update((key, series_before[key]) for key in by_study.get(uid, ()))
                continue
            try:
                self._list_series(study, uid, name, series_before, series_now, listing)
            except SourceError as error:  # this study alone: listed as skipped, searched again next run
                listing.skipped.append((f"study {uid}", error.message.removeprefix(f"{self.url}: ")))
                studies_now[uid]["instances"] = None
                series_now.update((key, series_before[key]) for key in by_study.get(uid, ()))
        listing.removed = sorted(series_before.keys() - series_now.keys())
        return listing

    def _list_series(self, study: dict[str, Any], study_uid: str, experiment: str,
                     series_before: dict[str, list[Any]], series_now: dict[str, list[Any]], listing: Listing) -> None:
        """The study's series into ``listing``: those new or whose instance count changed (nothing of the study
        when its search fails: a :class:`SourceError`)."""
        found = self._query(lambda: self.client.search_for_series(study_uid, fields=SERIES_FIELDS, get_remaining=True),
                            f"searching the series of study {study_uid} (QIDO-RS)")
        names = {entry[1] for key, entry in series_before.items() if key.startswith(study_uid + "/")}
        for series in sorted(found, key=lambda s: (_number(s, "SeriesNumber") or 0, _text(s, "SeriesInstanceUID"))):
            uid = _text(series, "SeriesInstanceUID")
            if not uid:
                listing.skipped.append((f"study {study_uid}", "a series without SeriesInstanceUID"))
                continue
            key = f"{study_uid}/{uid}"
            count = _number(series, "NumberOfSeriesRelatedInstances")
            before = series_before.get(key)
            if before is None:
                name = _unique(_scan_name(series, uid), names, uid)
                names.add(name)
            else:
                name = before[1]
            series_now[key] = [count, name]
            if before is not None and count is not None and before[0] == count:
                continue
            modality = _text(series, "Modality")
            if modality in NOT_IMAGES:
                listing.skipped.append((key, f"modality {modality} holds no image volume"))
                continue
            listing.items.append(SourceItem(
                key=key, version=f"{count} instances" if count is not None else "", experiment=experiment,
                subject=_text(study, "PatientID") or None, session=study_uid, scan_name=name,
                scan_type=scan_type(series), metadata={**plain(study), **plain(series)}))

    def _query(self, search: Callable[[], list[dict[str, Any]]], doing: str) -> list[dict[str, Any]]:
        try:
            return search()
        except requests.RequestException as error:
            raise refusal(self.url, error, doing) from error
        except ValueError as error:  # an answer that is not DICOM JSON
            raise SourceError(self.url, f"{doing}: the answer is not DICOM JSON ({error})") from error

    # -- fetching ----------------------------------------------------------------------------------------

    def fetch(self, item: SourceItem, into: Path) -> Path:
        """The series' first file (in slice order) in its folder under ``into``, one ``.dcm`` per instance
        (WADO-RS): the frame names a DICOM series by its first file, as a folder sync does. Written in a
        temporary folder renamed once complete and readable as one volume, so a failure leaves nothing."""
        study_uid, series_uid = item.key.split("/", 1)
        into.mkdir(parents=True, exist_ok=True)
        folder = into / series_uid
        if folder.exists():
            raise SourceError(self.url, f"{folder} already exists", item=f"series {series_uid}")
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=into))
        try:
            count = self._download(study_uid, series_uid, partial)
            if not count:
                raise SourceError(self.url, "the server gave no instance", item=f"series {series_uid}")
            first = imaging.frame_files(partial)[0]  # one series in the folder, its files in slice order
            imaging.read_info(partial)  # and it reads as a volume within the limits
            os.rename(partial, folder)
        except Exception as error:  # noqa: BLE001 - whatever one series does wrong fails that series alone
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(error, SourceError):
                raise
            if isinstance(error, ServiceError):
                reason = error.message.removeprefix(f"{partial.name}: ")  # imaging names the temporary folder
                raise SourceError(self.url, f"not one readable DICOM volume: {reason}",
                                  item=f"series {series_uid}") from error
            raise SourceError(self.url, f"cannot be stored ({type(error).__name__}: {error})",
                              item=f"series {series_uid}") from error
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        log.info("%s: fetched series %s (%d instances)", self.url, series_uid, count)
        return folder / first.name

    def forget(self, cursor: dict[str, Any], key: str) -> None:
        """Take a series out of ``cursor`` (and its study's count, so the study's series are searched again):
        a series that failed is listed again by the next run."""
        cursor.get("series", {}).pop(key, None)
        study = cursor.get("studies", {}).get(key.split("/", 1)[0])
        if study is not None:
            study["instances"] = None

    def _download(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """Each instance of the series as its own file in ``folder``; any answer that is not DICOM (pydicom's
        InvalidDicomError, a truncated part) or a file that cannot be written fails the series, naming it."""
        doing = f"retrieving series {series_uid} (WADO-RS)"
        count = 0
        try:
            for count, dataset in enumerate(self.client.iter_series(study_uid, series_uid), start=1):
                name = str(dataset.get("SOPInstanceUID", "")) or f"instance{count:05d}"
                dataset.save_as(folder / f"{name}.dcm", enforce_file_format=True)
        except requests.RequestException as error:
            raise refusal(self.url, error, doing) from error
        except Exception as error:  # noqa: BLE001 - a part that is not DICOM, a full disk: this series fails
            raise SourceError(self.url, f"cannot be retrieved (WADO-RS): {type(error).__name__}: {error}",
                              item=f"series {series_uid}") from error
        return count

    # -- pushing -----------------------------------------------------------------------------------------

    def push(self, decisions: list[Outgoing], run_folder: Path) -> Pushed:
        """Orthanc: each decision as its series' metadata; any other server: ``decisions.csv`` in the run's
        folder. A series Orthanc no longer holds, or metadata it refuses, is listed as failed."""
        if not decisions:
            return Pushed(pushed=0)
        orthanc = OrthancServer.detect(self.root, self.session, self.url, TIMEOUT)
        if orthanc is None:
            return Pushed(pushed=len(decisions), file=write_csv(decisions, run_folder / "decisions.csv"))
        pushed = Pushed(pushed=0)
        for decision in decisions:
            series_uid = decision.key.split("/", 1)[-1]
            series_id = orthanc.series_id(series_uid)
            if series_id is None:
                pushed.failed.append((decision.key, "the server no longer holds the series"))
                continue
            refused = orthanc.write_metadata(series_id, decision_value(decision), series_uid)
            if refused:
                pushed.failed.append((decision.key, refused))
            else:
                pushed.pushed += 1
        log.info("%s: %d decisions written as series metadata %s, %d failed", self.url, pushed.pushed, METADATA,
                 len(pushed.failed))
        return pushed


def decision_value(decision: Outgoing) -> str:
    """A decision as the compact JSON kept in Orthanc's series metadata."""
    return json.dumps({"decision": decision.decision, "label": decision.label, "code": decision.code,
                       "artifacts": decision.artifacts, "note": decision.note,
                       "reviewer": decision.reviewer, "time": decision.created.isoformat()},
                      separators=(",", ":"), ensure_ascii=False)


CSV_COLUMNS = ("study_instance_uid", "series_instance_uid", "decision", "label", "code", "artifacts", "note",
               "reviewer", "time")


def write_csv(decisions: Iterable[Outgoing], path: Path) -> Path:
    """The decisions as a CSV (one row a series: the decision's meaning, label and code; artifacts as
    ``key=present;key=absent``), written whole or not at all; cells a spreadsheet would run are escaped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for decision in decisions:
            study_uid, _, series_uid = decision.key.partition("/")
            artifacts = ";".join(f"{key}={state}" for key, state in sorted(decision.artifacts.items()))
            writer.writerow([escape_formula(cell) for cell in (
                study_uid, series_uid, decision.decision, decision.label, decision.code, artifacts, decision.note,
                decision.reviewer,
                decision.created.isoformat())])
    os.replace(partial, path)
    return path


def scan_type(series: dict[str, Any]) -> str | None:
    """The series' scan type by :data:`SCAN_TYPE_WORDS` (description first, then protocol), else by modality."""
    for keyword in ("SeriesDescription", "ProtocolName"):
        words = set(_WORD.findall(_text(series, keyword).lower()))
        for known, names in SCAN_TYPE_WORDS.items():
            if words & names:
                return known
    return MODALITY_TYPES.get(_text(series, "Modality"))


def plain(attributes: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON attributes as ``{keyword: value}``: one value as itself, several as a list, person names
    as their alphabetic text; private tags, sequences and binary data left out."""
    result: dict[str, Any] = {}
    for tag, element in attributes.items():
        try:
            keyword = keyword_for_tag(int(tag, 16))
        except ValueError:
            continue
        values = element.get("Value") if isinstance(element, dict) else None
        if not keyword or not values or element.get("vr") == "SQ":
            continue
        values = [value.get("Alphabetic", "") if isinstance(value, dict) else value for value in values]
        result[keyword] = values[0] if len(values) == 1 else values
    return result


def _text(attributes: dict[str, Any], keyword: str) -> str:
    element = attributes.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = element.get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value).strip()


def _number(attributes: dict[str, Any], keyword: str) -> int | None:
    try:
        return int(float(_text(attributes, keyword)))
    except ValueError:
        return None


def _experiment_name(study: dict[str, Any], uid: str) -> str:
    return (_text(study, "StudyDescription")
            or " ".join(filter(None, (_text(study, "StudyDate"), _text(study, "StudyID")))) or uid)


def _scan_name(series: dict[str, Any], uid: str) -> str:
    return " ".join(filter(None, (_text(series, "SeriesNumber"), _text(series, "SeriesDescription")))) or uid


def _unique(name: str, taken: set[str], *qualifiers: str) -> str:
    """``name``, or with the first qualifier (patient, UID) that makes it unique among ``taken``: two studies
    described alike stay two experiments, two series named alike two scans."""
    for candidate in (name, *(f"{name} {qualifier}" for qualifier in qualifiers if qualifier)):
        if candidate[:NAME_MAX] not in taken:
            return candidate[:NAME_MAX]
    return f"{name} {qualifiers[-1]}"[-NAME_MAX:]
