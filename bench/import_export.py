"""Import and export at scale: a 100k-row MIQA CSV in, MIQA and full exports out, and a full
export of one million decisions streamed in constant memory.

Every phase runs in its own process so each peak RSS (ru_maxrss) is that phase's alone; the
"base" figure is the same process right after the app started (Python, Flask, SQLAlchemy,
nibabel), so peak - base is what the work itself took.

The generated CSV is in MIQA's layout: 1000 experiments x 50 scans x 2 frames, each scan with
a last decision (5 reviewers, one unknown creator, artifacts, a location). Its 100k frame
locations point at 100 real 8x8x8 NIfTI files under the data root, and the import checks them
with QCLOOP_IMPORT_MISSING_FILES=error (each distinct file is opened once; --missing-files off
skips the check). The 1M-decision project is written with bulk inserts (one artifact entry,
so 1M decisions carry 1M artifact states) and exported as qcloop's full CSV.

Between import and export, the imported project is opened as a tier-1 reviewer would open it
(its page, a scan's page, that page's context and the next-scan API; median server time): the
pages read every scan's state, so this is where a large import would make reviewers wait.

    taskset -c 0,1 python bench/import_export.py            # SQLite under a temporary folder
    python bench/import_export.py --rows 20000 --skip-million  # a quick run (200 experiments)
    DATABASE_URL=postgresql+psycopg://... python bench/import_export.py --keep
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPERIMENTS, SCANS, FRAMES, FILES = 1000, 50, 2, 100
REVIEWERS = ["rev0@site.org", "rev1@site.org", "rev2@site.org", "rev3@site.org", "rev4@site.org",
             "gone@elsewhere.org"]


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_mb() -> float:
    return _peak_kb() / 1024


def _app(folder: Path, url: str, missing: str):
    from app import create_app

    return create_app({
        "INSTANCE_PATH": str(folder / "instance"), "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench",
        "DATA_ROOT": str(folder / "data"), "CACHE_DIR": str(folder / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "QUEUE_IMMEDIATE": True,
        "IMPORT_MISSING_FILES": missing, "LOG_LEVEL": "WARNING"})


def setup(folder: Path, url: str, missing: str, rows: str) -> None:
    """Schema, users, projects, the NIfTI files and the CSV of ``rows`` rows (whole experiments)."""
    import flask_migrate
    import nibabel as nib
    import numpy as np

    from app.db import db
    from app.services import projects, users, vocabulary

    data = folder / "data"
    for n in range(FILES):
        path = data / "site" / f"f{n:03d}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.full((8, 8, 8), n, dtype=np.uint8), np.eye(4)), str(path))
    app = _app(folder, url, missing)
    with app.app_context():
        flask_migrate.upgrade()
        vocabulary.seed_defaults()
        site = projects.create_project("Site", None)
        projects.create_project("Million", None)
        for n in range(5):
            user = users.create_user(f"rev{n}", "bench-password-1", email=f"rev{n}@site.org")
            projects.set_role(site, user, "tier2" if n == 0 else "tier1", actor=None)
        db.session.commit()
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    with open(folder / "site.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["project_name", "experiment_name", "scan_name", "scan_type", "frame_number",
                         "file_location", "experiment_notes", "subject_id", "session_id", "scan_link",
                         "last_decision", "last_decision_creator", "last_decision_note", "last_decision_created",
                         "identified_artifacts", "location_of_interest"])
        row = 0
        for e in range(int(rows) // (SCANS * FRAMES)):
            for s in range(SCANS):
                scan = e * SCANS + s
                decision = ["U", "UE", "Q?", "UN"][scan % 4]
                created = (start + timedelta(seconds=scan)).isoformat()
                artifacts = "" if decision == "U" else ["lesions", "ghosting_motion;inhomogeneity",
                                                        "misalignment"][scan % 3]
                for f in range(FRAMES):
                    writer.writerow(["Site", f"visit{e:04d}", f"sub{scan:06d}", "T1", f,
                                     f"site/f{row % FILES:03d}.nii.gz", f"visit {e}", f"sub{scan:06d}", "ses1", "",
                                     decision, REVIEWERS[scan % len(REVIEWERS)], "looked at it, twice",
                                     created, artifacts, f"i={scan % 8};j=1;k=2"])
                    row += 1


def phase_import(folder: Path, url: str, missing: str) -> dict:
    from app.db import db
    from app.services import projects
    from app.services.transfer import importer

    app = _app(folder, url, missing)
    with app.app_context():
        base = _peak_kb()
        started = time.perf_counter()
        summary = importer.import_file(folder / "site.csv", project=projects.find_project("Site"))
        db.session.commit()
        seconds = time.perf_counter() - started
        peak = _peak_kb()
        return {"rows": summary["rows"], "seconds": round(seconds, 1), "base_rss_mb": round(base / 1024),
                "peak_rss_mb": round(peak / 1024), "bytes_per_row": round((peak - base) * 1024 / summary["rows"]),
                "counts": {k: v for k, v in summary["counts"].items() if v}}


def phase_export(folder: Path, url: str, missing: str, project: str, fmt: str) -> dict:
    from app.services import projects
    from app.services.transfer import exporter

    app = _app(folder, url, missing)
    with app.app_context():
        base = _peak_mb()
        target = folder / f"{project}.{fmt}.out"
        started = time.perf_counter()
        exporter.export_to_file(fmt, [projects.find_project(project).id], target)
        return {"format": fmt, "seconds": round(time.perf_counter() - started, 1), "mb": round(target.stat().st_size
                                                                                                / 2**20),
                "base_rss_mb": round(base), "peak_rss_mb": round(_peak_mb())}


def phase_pages(folder: Path, url: str, missing: str) -> dict:
    """The imported project as a tier-1 reviewer opens it (test client, no network): median server time
    of five requests each of its page, a scan's page, that page's context and the next-scan API."""
    import statistics

    from sqlalchemy import func, select

    from app.db import Experiment, Scan, db
    from app.services import projects

    app = _app(folder, url, missing)
    app.config.update(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)
    client = app.test_client()
    client.post("/login", data={"username": "rev1", "password": "bench-password-1"})
    with app.app_context():
        project = projects.find_project("Site")
        first = db.session.scalar(select(func.min(Scan.id)).join(Experiment).where(Experiment.project_id == project.id))
        project_id = project.id
    timings = {}
    for name, path in (("project page", f"/projects/{project_id}"), ("scan page", f"/scans/{first}"),
                       ("scan context", f"/scans/{first}/context"),
                       ("next-scan API", f"/api/v1/projects/{project_id}/next-scan")):
        samples = []
        for _ in range(6):
            started = time.perf_counter()
            answer = client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        timings[name] = round(statistics.median(samples[1:]))  # the first one warms the caches
    return timings


def phase_million(folder: Path, url: str, missing: str) -> dict:
    """1M decisions on 50k scans (20 each), one artifact entry: bulk inserts, not an import."""
    from sqlalchemy import delete, insert, select

    from app.db import ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Experiment, Frame, Scan, db
    from app.services import projects

    app = _app(folder, url, missing)
    with app.app_context():
        started = time.perf_counter()
        project = projects.find_project("Million")
        keep = db.session.scalar(select(ArtifactEntry.id).where(ArtifactEntry.project_id == project.id,
                                                               ArtifactEntry.key == "ghosting_motion"))
        db.session.execute(delete(ArtifactEntry).where(ArtifactEntry.project_id == project.id,
                                                       ArtifactEntry.id != keep))
        option = db.session.scalar(select(DecisionOption.id).where(DecisionOption.project_id == project.id,
                                                                   DecisionOption.key == "Q?"))
        now = datetime.now(timezone.utc)
        db.session.execute(insert(Experiment.__table__), [
            {"project_id": project.id, "name": f"e{n:03d}", "note": "", "created_at": now} for n in range(500)])
        experiments = db.session.execute(select(Experiment.id).where(Experiment.project_id == project.id)).scalars()
        db.session.execute(insert(Scan.__table__), [
            {"experiment_id": eid, "name": f"s{n:03d}", "scan_type": "T1", "created_at": now}
            for eid in experiments for n in range(100)])
        scans = list(db.session.execute(select(Scan.id).join(Experiment).where(Experiment.project_id == project.id))
                     .scalars())
        db.session.execute(insert(Frame.__table__), [
            {"scan_id": sid, "frame_number": 0, "file_location": "site/f000.nii.gz", "created_at": now}
            for sid in scans])
        statement = insert(Decision.__table__).returning(Decision.__table__.c.id, sort_by_parameter_order=True)
        for start in range(0, len(scans), 2500):
            rows = [{"scan_id": sid, "option_id": option, "creator_name": "someone@site.org", "creator_role": None,
                     "note": "n", "source": "import", "created_at": now + timedelta(seconds=k)}
                    for sid in scans[start:start + 2500] for k in range(20)]
            ids = db.session.execute(statement, rows).scalars().all()
            db.session.execute(insert(DecisionArtifact.__table__),
                               [{"decision_id": i, "entry_id": keep, "state": "present"} for i in ids])
        db.session.commit()
        total = db.session.scalar(select(db.func.count()).select_from(Decision).join(Scan).join(Experiment)
                                  .where(Experiment.project_id == project.id))
        return {"decisions": total, "seconds": round(time.perf_counter() - started, 1)}


def _child(args: argparse.Namespace, *phase: str) -> dict:
    command = [sys.executable, __file__, "--folder", str(args.folder), "--url", args.url, "--missing-files",
               args.missing_files, "--phase", *phase]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", ""), help="database (default: SQLite)")
    parser.add_argument("--missing-files", default="error", choices=["error", "warn", "off"])
    parser.add_argument("--rows", type=int, default=EXPERIMENTS * SCANS * FRAMES,
                        help="rows of the generated MIQA CSV, rounded down to whole experiments of 100 rows")
    parser.add_argument("--skip-million", action="store_true", help="leave out the 1M-decision export")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        runners = {"setup": setup, "import": phase_import, "export": phase_export, "pages": phase_pages,
                   "million": phase_million}
        result = runners[name](args.folder, args.url, args.missing_files, *rest)
        print(json.dumps(result or {}))
        return
    temporary = None
    if args.folder is None:
        temporary = tempfile.TemporaryDirectory(prefix="qcloop-bench-")
        args.folder = Path(temporary.name)
    args.folder.mkdir(parents=True, exist_ok=True)
    args.url = args.url or f"sqlite:///{args.folder / 'bench.db'}"
    try:
        print(f"database {args.url.split('@')[-1]}, {os.cpu_count()} CPUs visible, file check: {args.missing_files}")
        _child(args, "setup", str(args.rows))
        size = (args.folder / "site.csv").stat().st_size / 2**20
        rows = args.rows // (SCANS * FRAMES) * SCANS * FRAMES
        print(f"generated {rows} rows of MIQA CSV ({size:.1f} MB), "
              f"{rows // FRAMES} scans with a last decision, frames on {FILES} real NIfTI files")
        done = _child(args, "import")
        print(f"import: {done['rows']} rows in {done['seconds']} s, peak RSS {done['peak_rss_mb']} MB "
              f"(base {done['base_rss_mb']} MB); {done['counts']}")
        print(f"import memory: {done['bytes_per_row']} bytes per row above base")
        big = round(200 * done["rows"] / size)
        print(f"extrapolated, not measured: a 200 MB MIQA CSV like this one holds ~{big} rows and would peak near "
              f"{round(done['base_rss_mb'] + big * done['bytes_per_row'] / 2**20)} MB RSS")
        pages = _child(args, "pages")
        print(f"opening the imported project ({rows // FRAMES} scans), median server ms: "
              + ", ".join(f"{name} {ms}" for name, ms in pages.items()))
        for fmt in ("miqa-csv", "csv"):
            out = _child(args, "export", "Site", fmt)
            print(f"export {fmt} of {rows} frames / {rows // FRAMES} decisions: {out['seconds']} s, {out['mb']} MB, "
                  f"peak RSS {out['peak_rss_mb']} MB (base {out['base_rss_mb']} MB)")
        if not args.skip_million:
            seeded = _child(args, "million")
            print(f"seeded {seeded['decisions']} decisions with bulk inserts in {seeded['seconds']} s")
            out = _child(args, "export", "Million", "csv")
            print(f"export csv of {seeded['decisions']} decisions: {out['seconds']} s, {out['mb']} MB, "
                  f"peak RSS {out['peak_rss_mb']} MB (base {out['base_rss_mb']} MB)")
    finally:
        if temporary is not None and not args.keep:
            temporary.cleanup()


if __name__ == "__main__":
    main()
