"""Factories for test data: users with roles, projects, scans with real NIfTI frames."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
from flask import Flask

from app.db import Project, Scan, User, db
from app.services import frames, projects, users
from app.services.phantoms import add_artifact, brain_phantom, to_uint16

PASSWORD = "correct-horse-battery"


class Factory:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self._count = 0

    def _next(self) -> int:
        self._count += 1
        return self._count

    def user(self, username: str | None = None, *, superuser: bool = False, email: str | None = None,
             password: str = PASSWORD) -> User:
        username = username or f"user{self._next()}"
        user = users.create_user(username, password, email=email or f"{username}@example.org", is_superuser=superuser)
        db.session.commit()
        return user

    def project(self, name: str | None = None, creator: User | None = None) -> Project:
        project = projects.create_project(name or f"project{self._next()}", creator)
        db.session.commit()
        return project

    def member(self, project: Project, role: str, username: str | None = None) -> User:
        user = self.user(username)
        projects.set_role(project, user, role, actor=None)
        db.session.commit()
        return user

    def nifti(self, relative: str, *, shape=(32, 32, 32), seed: int = 0, artifact: str | None = None,
              dtype=np.uint16) -> Path:
        """Write a phantom NIfTI under the data root and return its path."""
        volume = brain_phantom(shape, seed=seed)
        if artifact:
            volume = add_artifact(volume, artifact, seed=seed)
        path = Path(self.app.config["DATA_ROOT"]) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(to_uint16(volume).astype(dtype), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
        return path

    def scan(self, project: Project, experiment: str = "exp1", name: str | None = None, *, n_frames: int = 1,
             shape=(32, 32, 32), artifact: str | None = None, subject: str | None = None) -> Scan:
        name = name or f"scan{self._next()}"
        experiment_row = projects.get_or_create_experiment(project, experiment)
        scan = projects.get_or_create_scan(experiment_row, name, scan_type="T1", subject_id=subject or name)
        for number in range(n_frames):
            path = self.nifti(f"{project.name}/{experiment}/{name}_{number}.nii.gz", shape=shape,
                              seed=self._next(), artifact=artifact)
            frames.register_frame(scan, number, str(path.relative_to(self.app.config["DATA_ROOT"])))
        db.session.commit()
        return scan


def write_dicom_series(folder: Path, volume: np.ndarray, series: str, planes: list[int] | None = None, *,
                       description: str = "", name: str = "slice{z:03d}.dcm") -> None:
    """One DICOM file per z plane of ``volume`` ((z, y, x) as ITK gives it), 0.8 x 0.9 x 2.5 mm, named by
    ``name`` (formatted with z; DICOM files need no extension); ``planes`` limits which files are (re)written."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    for z in planes if planes is not None else range(volume.shape[0]):
        plane = sitk.GetImageFromArray(volume[z:z + 1])
        plane.SetSpacing((0.8, 0.9, 2.5))
        for tag, value in (("0020|000e", series), ("0020|000d", series + ".1"), ("0008|0060", "MR"),
                           ("0008|103e", description), ("0020|0032", f"10\\20\\{30 + 2.5 * z}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1)), ("0018|0050", "2.5"),
                           ("0028|0030", "0.9\\0.8")):
            plane.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")  # chosen by name, so a file without extension is DICOM too
        writer.SetFileName(str(folder / name.format(z=z)))
        writer.Execute(plane)


def write_dicom_volume(folder: Path, volume: np.ndarray, series: str, *, study: str, description: str = "",
                       patient: str = "P001", study_description: str = "", number: int = 1,
                       spacing: tuple[float, float, float] = (0.8, 0.9, 2.5)) -> list[Path]:
    """One MR Image Storage file per z plane of ``volume`` ((z, y, x), int16), written with pydicom: a file meta
    header (explicit VR little endian), the patient, study and series, and each slice's place (position along
    z, axial orientation, pixel spacing (row, column) = (y, x), slice thickness), as a scanner writes them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID

    folder.mkdir(parents=True, exist_ok=True)
    x_mm, y_mm, z_mm = spacing
    written = []
    for z, plane in enumerate(volume.astype(np.int16)):
        instance = f"{series}.{z + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, instance
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, instance, "MR"
        ds.PatientID, ds.PatientName = patient, "Test^Patient"
        ds.StudyInstanceUID, ds.StudyDescription, ds.StudyDate, ds.StudyTime, ds.StudyID = (
            study, study_description, "20260102", "120000", "7")
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = series, description, number
        ds.FrameOfReferenceUID, ds.InstanceNumber = f"{study}.0", z + 1
        ds.ImagePositionPatient = [10.0, 20.0, 30.0 + z_mm * z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [y_mm, x_mm], z_mm
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(plane).astype("<i2").tobytes()
        path = folder / f"{instance}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def login(client, username: str, password: str = PASSWORD):
    """Log a test client in through the real form."""
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 302, response.data
    return client


def token_headers(client, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api-token-auth/", data={"username": username, "password": password})
    assert response.status_code == 200, response.data
    return {"Authorization": "Token " + response.get_json()["token"]}


@contextmanager
def dicomweb_server(handler: type[BaseHTTPRequestHandler], **state) -> Iterator[ThreadingHTTPServer]:
    """A threaded server on loopback with ``state`` set on it; ``.url`` is its DICOMweb source URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    for name, value in state.items():
        setattr(httpd, name, value)
    httpd.url = f"dicomweb+http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
