"""Image data for the viewer: the RAS volume, its preview, the original file and PNG slices.

Volumes and previews are cached files served with ``send_file(conditional=True)``: ETag (the
cache key: frame checksum and file fingerprint), ``If-None-Match`` -> 304 and ``Range`` -> 206.
Pages add ``?v=<volumes.version>`` to the URLs, so a changed frame is a new URL and the private
max-age cannot serve a stale copy.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from urllib.parse import quote

from flask import Response, jsonify, request, send_file
from flask_login import current_user

from app.api.docs import BINARY, Blueprint, answers
from app.api.schemas.jobs import JobStartedSchema
from app.api.schemas.transfer import GeometrySchema
from app.auth.permissions import permission
from app.db import Frame, Job
from app.services import downloads, volumes
from app.services import saliency as saliency_maps
from app.services.loaders import load

blp = Blueprint("volumes", __name__, description="Frame volumes for the viewer, previews, slices, downloads")

MAX_AGE = 3600
NIFTI = {"application/octet-stream": BINARY}


def _private(response: Response) -> Response:
    response.cache_control.public = False
    response.cache_control.private = True
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _send_nifti(path: Path, etag: str, name: str) -> Response:
    response = send_file(path, mimetype="application/octet-stream", conditional=True, etag=etag,
                         max_age=MAX_AGE, download_name=name)
    return _private(response)


@blp.route("/frames/<int:frame_id>/volume", methods=["GET"])
@answers(blp, 200, content=NIFTI, description="RAS NIfTI (.nii.gz)")
@permission("project", "collaborator")
def volume(frame_id: int):
    """The frame as a RAS-reoriented NIfTI (.nii.gz), cached; ETag, Range and private caching."""
    cached = volumes.viewable(load(Frame, frame_id))
    return _send_nifti(cached.volume_path, f"{cached.key}-volume", f"frame-{frame_id}.nii.gz")


@blp.route("/frames/<int:frame_id>/geometry", methods=["GET"])
@blp.response(200, GeometrySchema)
@permission("project", "collaborator")
def geometry(frame_id: int):
    """Shapes, affines (RAS and original) and the default window: the viewer maps a clicked RAS
    position to a voxel of the original grid through ``inverse_original_affine``."""
    return volumes.viewer_facts(volumes.viewable(load(Frame, frame_id)))


@blp.route("/frames/<int:frame_id>/preview", methods=["GET"])
@answers(blp, 200, content=NIFTI, description="8-bit RAS NIfTI (.nii.gz)")
@permission("project", "collaborator")
def preview(frame_id: int):
    """A small 8-bit RAS NIfTI that the viewer paints while the full volume loads."""
    cached = volumes.viewable(load(Frame, frame_id))
    return _send_nifti(cached.preview_path, f"{cached.key}-preview", f"frame-{frame_id}-preview.nii.gz")


@blp.route("/frames/<int:frame_id>/saliency", methods=["GET"])
@answers(blp, 200, content=NIFTI, description="the map as RAS NIfTI (.nii.gz), values 0..1 on the frame's grid")
@answers(blp, 202, JobStartedSchema, description="the map is being made: poll the job, then ask again")
@permission("project", "collaborator")
def saliency(frame_id: int):
    """The champion's saliency map (Grad-CAM) of the frame for ``output`` (an output key of the model,
    default ``usable``): 202 with the job making it on first request, then the map."""
    frame = load(Frame, frame_id)
    made = saliency_maps.saliency(frame, request.args.get("output", "usable"), current_user)
    if isinstance(made, Job):
        return jsonify(JobStartedSchema().dump(made)), 202
    cached = volumes.cached_file(made, made.name.split(".")[0], label=f"saliency map of frame {frame_id}")
    return _send_nifti(cached.volume_path, f"{cached.key}-saliency", f"frame-{frame_id}-saliency.nii.gz")


@blp.route("/frames/<int:frame_id>/download", methods=["GET"])
@answers(blp, 200, content={**NIFTI, "application/zip": BINARY},
         description="the original file, or a zip of all the files of a frame made of several")
@permission("project", "collaborator")
def download(frame_id: int):
    """The original file as stored; a frame made of several files (a detached NRRD's header and data file,
    a DICOM series) answers a zip of all of them, streamed as it is written."""
    found = downloads.of_frame(load(Frame, frame_id))
    if not found.zipped:
        path = found.members[0][0]
        response = send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=found.name,
                             conditional=True, etag=found.etag or True, max_age=MAX_AGE)
        return _private(response)
    response = Response(downloads.zip_stream(found.members), mimetype="application/zip")
    response.headers.set("Content-Disposition", "attachment", **_filename(found.name))
    response.cache_control.private = True
    response.cache_control.max_age = MAX_AGE
    return response


def _filename(name: str) -> dict[str, str]:
    """Content-Disposition's filename, with an RFC 5987 ``filename*`` for names beyond ASCII (as send_file)."""
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
        return {"filename": plain, "filename*": f"UTF-8''{quote(name, safe='!#$&+^`|~')}"}
    return {"filename": name}


@blp.route("/frames/<int:frame_id>/slice", methods=["GET"])
@answers(blp, 200, content={"image/png": BINARY}, description="one slice as PNG")
@permission("project", "collaborator")
def slice_png(frame_id: int):
    """One RAS slice as PNG: ``axis`` axial|coronal|sagittal (default axial), ``index`` (default the
    middle), ``window`` and ``level`` (default the 0.5-99.5 percentile range), ``size`` (the longest
    side in pixels, 16 to 1024, for thumbnails; default the slice's own size)."""
    cached = volumes.viewable(load(Frame, frame_id))
    wanted = volumes.slice_args(cached, request.args)
    etag = f"{cached.key}-{wanted.tag}"
    response = Response(mimetype="image/png")
    response.set_etag(etag)
    response.cache_control.private = True
    response.cache_control.max_age = MAX_AGE
    if request.if_none_match.contains(etag):
        response.status_code = 304
        return response
    response.set_data(volumes.render_slice(cached, wanted))
    return response
