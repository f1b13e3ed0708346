"""A DICOMweb server that answers badly for one item, through the sync engine: a series whose WADO-RS answer is
not DICOM fails alone (the others imported, nothing of it left), a study whose series search fails is skipped
with the reason and searched again next run. The server is a small one on loopback speaking just enough
QIDO-RS and WADO-RS (JSON searches, multipart/related retrieval) for dicomweb-client."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydicom
from sqlalchemy import select

from app.db import Frame, Scan, db
from app.services.sync import engine
from app.storage import Roots
from tests.factories import dicomweb_server, write_dicom_volume

STUDY, OTHER_STUDY = "1.2.826.0.1.3680043.8.498.9.1", "1.2.826.0.1.3680043.8.498.9.2"
GOOD, BAD, LATER = f"{STUDY}.1", f"{STUDY}.2", f"{OTHER_STUDY}.1"
BOUNDARY = "qcloop-test-boundary"


class _Pacs(BaseHTTPRequestHandler):
    """QIDO-RS: ``/dicom-web/studies`` and ``/dicom-web/studies/{uid}/series`` (paged by ``offset``, as
    dicomweb-client asks); WADO-RS: ``/dicom-web/studies/{uid}/series/{uid}`` as multipart/related, one part per
    instance. ``server.series`` maps (study, series) to (description, the parts' bytes); ``server.failing``
    names the studies whose series search answers HTTP 500."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.removeprefix("/dicom-web/").split("/")
        offset = int(parse_qs(url.query).get("offset", ["0"])[0])
        series = self.server.series
        if parts == ["studies"]:
            studies = sorted({study for study, _ in series})
            self._json([_study(uid, sum(len(series[key][1]) for key in series if key[0] == uid)) for uid in studies],
                       offset)
        elif len(parts) == 3 and parts[0] == "studies" and parts[2] == "series":
            if parts[1] in self.server.failing:
                self.send_error(500, "search failed")
                return
            self._json([_series(uid, description, len(instances)) for (study, uid), (description, instances)
                        in sorted(series.items()) if study == parts[1]], offset)
        elif len(parts) == 4 and (parts[1], parts[3]) in series:
            self.server.retrieved.append(parts[3])
            body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
                            for part in series[(parts[1], parts[3])][1]) + f"--{BOUNDARY}--".encode()
            self._send(body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        else:
            self.send_error(404)

    def _json(self, found: list[dict], offset: int) -> None:
        self._send(json.dumps(found[offset:]).encode(), "application/dicom+json")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _study(uid: str, instances: int) -> dict:
    ds = pydicom.Dataset()
    ds.StudyInstanceUID, ds.StudyDescription, ds.PatientID = uid, f"Study {uid[-1]}", "P9"
    ds.StudyDate, ds.NumberOfStudyRelatedInstances = "20260102", instances
    return ds.to_json_dict()


def _series(uid: str, description: str, instances: int) -> dict:
    ds = pydicom.Dataset()
    ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber, ds.Modality = uid, description, 1, "MR"
    ds.NumberOfSeriesRelatedInstances = instances
    return ds.to_json_dict()


def _instances(folder: Path, series: str, study: str, seed: int, slices: int = 4) -> list[bytes]:
    """A ``slices`` x 16 x 16 series written with pydicom, as the bytes of its files."""
    volume = np.random.default_rng(seed).integers(0, 1000, (slices, 16, 16)).astype(np.int16)
    return [path.read_bytes() for path in write_dicom_volume(folder / series, volume, series, study=study)]


@contextmanager
def pacs(app, series: dict[tuple[str, str], tuple[str, list[bytes]]]) -> Iterator[ThreadingHTTPServer]:
    """The server on loopback, allowed by the app; ``.url`` is its source URL."""
    with dicomweb_server(_Pacs, series=series, failing=set(), retrieved=[]) as httpd:
        app.config["DICOMWEB_URLS"] = [httpd.url]
        yield httpd


def _fetched(project_id: int) -> list[str]:
    """Every file under the project's fetch folder, partial ones included."""
    root = engine.fetch_folder(project_id, Roots.from_config())
    return sorted(str(Path(folder, name).relative_to(root)) for folder, _, names in os.walk(root) for name in names)


def test_a_series_whose_answer_is_not_dicom_fails_alone_and_leaves_nothing(app, factory, tmp_path):
    project = factory.project("Pacs")
    good = _instances(tmp_path, GOOD, STUDY, 1)
    # The bad series' first part is DICOM (written, then removed), its second not.
    series = {(STUDY, GOOD): ("T1 MPRAGE", good), (STUDY, BAD): ("T2 TSE", [good[0], b"not DICOM at all"])}
    with pacs(app, series) as server:
        run = engine.run_sync(project, server.url, None)

        assert (run.state, run.added_items) == ("succeeded", [f"{STUDY}/{GOOD}"])
        [failed] = run.failed_items
        assert failed["item"] == f"{STUDY}/{BAD}"
        assert failed["reason"].startswith(f"{server.url}: series {BAD}: cannot be retrieved (WADO-RS): "
                                           "InvalidDicomError: ")
        assert db.session.scalars(select(Scan.name)).all() == ["1 T1 MPRAGE"]
        assert len(db.session.scalars(select(Frame.id)).all()) == 1
        files = _fetched(project.id)
        assert len(files) == 4 and all(f"/{GOOD}/" in name for name in files)  # no file of the bad series

        # The failed series left the cursor: the next run retrieves it, and it alone, again (its instance count,
        # and its study's, as before).
        series[(STUDY, BAD)] = ("T2 TSE", _instances(tmp_path, BAD, STUDY, 2, slices=2))
        server.retrieved.clear()
        again = engine.run_sync(project, server.url, None)
    assert (again.added_items, again.failed_items, server.retrieved) == ([f"{STUDY}/{BAD}"], [], [BAD])


def test_a_study_whose_series_search_fails_is_skipped_and_searched_again_next_run(app, factory, tmp_path):
    project = factory.project("Pacs")
    series = {(STUDY, GOOD): ("T1 MPRAGE", _instances(tmp_path, GOOD, STUDY, 1)),
              (OTHER_STUDY, LATER): ("FLAIR", _instances(tmp_path, LATER, OTHER_STUDY, 3))}
    with pacs(app, series) as server:
        server.failing.add(OTHER_STUDY)
        run = engine.run_sync(project, server.url, None)
        assert (run.state, run.added_items, run.failed_items) == ("succeeded", [f"{STUDY}/{GOOD}"], [])
        assert run.skipped_items == [{"item": f"study {OTHER_STUDY}", "reason": (
            f"the server answered HTTP 500 search failed while searching the series of study {OTHER_STUDY} "
            "(QIDO-RS)")}]
        assert OTHER_STUDY not in {key.split("/")[0] for key in run.source.cursor["series"]}

        server.failing.clear()
        again = engine.run_sync(project, server.url, None)
    assert (again.added_items, again.skipped_items, again.removed_items) == ([f"{OTHER_STUDY}/{LATER}"], [], [])
    assert sorted(db.session.scalars(select(Scan.name))) == ["1 FLAIR", "1 T1 MPRAGE"]
