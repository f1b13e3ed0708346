"""Viewer latency: the MNI152 T1 (197x233x189, 1 mm) padded to 256^3, reviewed in Debian's chromium.

A throw-away qcloop (SQLite, temporary folder) is served over HTTP in this process (werkzeug,
threaded) with N scans, each one frame: the padded MNI volume plus a little per-scan noise, so
each scan has its own file, checksum and cache. Playwright drives /usr/bin/chromium (software
WebGL) as a tier 1 reviewer and reads the page's own timings (``window.qcloop.timings``).

Figures (p50 and p95 over the scans measured):
- first paint: from navigation start to the first image of the scan on screen: the three
  server-rendered planes (PNG middle slices), or Niivue's preview if it is drawn first, as a
  reviewer opens a scan from the project's page; on a scan whose RAS cache is not built yet
  ("cold", the server reorients the file on this request) and on the same scan opened again
  ("warm": cache built, files in the browser's HTTP cache); "reload": the scan page loaded again
  from a scan page (a reload, or a link typed in), where the browser first tears down the previous
  page's WebGL context (about 50 ms of software WebGL on this machine; moving between scans
  inside the page never does);
- first volume: from navigation start to Niivue's first volume drawn (the 8-bit preview);
- full resolution: from navigation start to the full volume drawn;
- submit to next scan: from pressing Enter to the decision saved (the POST answered), to the next
  scan's panel shown (from the context prefetched while the reviewer looked at the current scan;
  the server is asked again meanwhile), to its planes painted ("paint") then at full resolution
  ("full"): the planes, preview and volume were fetched and parsed ahead, so what remains is the
  POST, the planes from memory and the volume's upload (software WebGL here);
- slice endpoint p50/p95: PNG slices over HTTP (token auth), "cold" the first request of each of
  the other frames (cache built on that request), "warm" random axis/index/window afterwards.

Targets on this machine: first paint p95 <= 300 ms, submit to next scan painted p95 <= 200 ms,
slice warm p95 <= 30 ms.

    python bench/viewer.py --scans 16 --slices 300
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mni152" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
PASSWORD = "bench-password-1"
SIZE = 256


def padded_mni(target: Path, seed: int) -> None:
    """The MNI T1 centred in a 256^3 grid (same 1 mm voxels, world position kept), with light noise."""
    image = nib.load(str(MNI))
    data = np.asanyarray(image.dataobj)
    offset = [(SIZE - n) // 2 for n in data.shape]
    volume = np.zeros((SIZE, SIZE, SIZE), dtype=data.dtype)
    volume[offset[0]:offset[0] + data.shape[0], offset[1]:offset[1] + data.shape[1],
           offset[2]:offset[2] + data.shape[2]] = data
    noise = np.random.default_rng(seed).integers(0, 3, volume.shape, dtype=np.uint8)
    volume = np.where(volume > 0, np.clip(volume.astype(np.int16) + noise, 0, 255), 0).astype(data.dtype)
    affine = image.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ offset
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), str(target))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def build(folder: Path, scans: int):
    from app import create_app
    from app.db import db
    from app.services import frames, projects, users, vocabulary

    app = create_app({
        "INSTANCE_PATH": str(folder / "instance"), "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'bench.db'}",
        "SECRET_KEY": "bench", "DATA_ROOT": str(folder / "data"), "CACHE_DIR": str(folder / "cache"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "QUEUE_IMMEDIATE": True,
        "WTF_CSRF_ENABLED": True, "RATELIMIT_ENABLED": False, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        db.create_all()
        vocabulary.seed_defaults()
        reviewer = users.create_user("reviewer", PASSWORD, email="reviewer@example.org")
        project = projects.create_project("bench", None)
        projects.set_role(project, reviewer, "tier1", actor=None)
        experiment = projects.get_or_create_experiment(project, "mni")
        ids = []
        for n in range(scans):
            padded_mni(folder / "data" / f"mni{n}.nii.gz", seed=n)
            scan = projects.get_or_create_scan(experiment, f"scan{n:02d}")
            frames.register_frame(scan, 0, f"mni{n}.nii.gz")
            ids.append((scan.id, scan.frames[0].id))
        db.session.commit()
        project_id = project.id
    return app, project_id, ids


def serve(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def browser_figures(base: str, project_url: str, scan_ids: list[int]) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {f"{name} {kind}": [] for name in ("first paint", "first volume", "full")
                                       for kind in ("cold", "warm")}
    figures["first paint reload"] = []
    figures.update({"submit to decision saved": [], "submit to next scan shown": [], "submit to next paint": [],
                    "submit to next full": []})
    half = len(scan_ids) // 2
    full = "document.querySelector('#viewer').dataset.loaded === 'full'"
    loaded = f"() => {full}"  # functions, not strings: the page's CSP forbids eval
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("QCLOOP_CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox", "--enable-unsafe-swiftshader", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(base + "/login")
        page.fill("#username", "reviewer")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_url(base + "/")
        page.goto(f"{base}/scans/{scan_ids[0]}")  # warms the browser's cache of the page's scripts
        page.wait_for_function(loaded, timeout=120000)
        for kind, scan_id in ((kind, scan_id) for scan_id in scan_ids[1:half] for kind in ("cold", "warm", "reload")):
            if kind != "reload":  # a reviewer opens a scan from the project's page
                page.goto(project_url)
            page.goto(f"{base}/scans/{scan_id}", wait_until="commit")
            page.wait_for_function(loaded, timeout=120000)
            timings = page.evaluate("window.qcloop.timings")
            figures[f"first paint {kind}"].append(timings["firstPaintAt"])
            if kind != "reload":
                figures[f"first volume {kind}"].append(timings["volumeAt"])
                figures[f"full {kind}"].append(timings["fullAt"])
        # submit to next: each scan decided with "1" + Enter once the next scan is prefetched
        page.goto(f"{base}/scans/{scan_ids[half]}")
        page.wait_for_function(loaded, timeout=120000)
        for _ in scan_ids[half:-1]:
            page.wait_for_function("""() => {
                const q = window.qcloop, next = q.state.ctx.queue.next || q.state.ctx.neighbours.next;
                const ctx = next && q.cache.get(next.context);
                const url = ctx && ctx.value && ctx.value.frames[0].volume_url;
                const parsed = url && q.cache.get("image:" + url);
                return !!(parsed && parsed.value);
            }""", timeout=120000)
            before = page.evaluate("window.qcloop.state.ctx.scan.id")
            page.keyboard.press("1")
            page.keyboard.press("Enter")
            page.wait_for_function(f"() => window.qcloop.state.ctx.scan.id !== {before} && {full}", timeout=120000)
            timings = page.evaluate("window.qcloop.timings")
            figures["submit to next paint"].append(timings["firstPaintAt"] - timings["submitted"])
            figures["submit to next full"].append(timings["fullAt"] - timings["submitted"])
            figures["submit to decision saved"].append(timings["postedAt"] - timings["submitted"])
            figures["submit to next scan shown"].append(timings["contextAt"] - timings["submitted"])
        browser.close()
    return figures


def slice_figures(base: str, frame_ids: list[int], samples: int) -> dict[str, list[float]]:
    session = requests.Session()
    token = session.post(base + "/api-token-auth/", data={"username": "reviewer", "password": PASSWORD}).json()
    session.headers["Authorization"] = "Token " + token["token"]
    rng = random.Random(0)
    figures: dict[str, list[float]] = {"slice cold": [], "slice warm": []}

    def timed(frame_id: int, axis: str, index: int, window: float | None = None) -> float:
        params = {"axis": axis, "index": index}
        if window:
            params.update(window=window, level=window / 2)
        started = time.perf_counter()
        answer = session.get(f"{base}/api/v1/frames/{frame_id}/slice", params=params, timeout=120)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 200, answer.text
        return elapsed

    for frame_id in frame_ids:
        figures["slice cold"].append(timed(frame_id, "axial", SIZE // 2))
    for _ in range(samples):
        frame_id = rng.choice(frame_ids)
        figures["slice warm"].append(timed(frame_id, rng.choice(["axial", "coronal", "sagittal"]),
                                           rng.randrange(SIZE), rng.choice([None, 80.0, 120.0, 200.0])))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=16, help="scans to create (at least 6)")
    parser.add_argument("--slices", type=int, default=300, help="warm slice requests")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="qcloop-bench-viewer-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        app, project_id, ids = build(folder, max(6, args.scans))
        print(f"set-up: {len(ids)} scans of the MNI T1 padded to {SIZE}^3 in {time.perf_counter() - started:.1f} s")
        server, base = serve(app)
        try:
            figures = browser_figures(base, f"{base}/projects/{project_id}", [scan_id for scan_id, _ in ids])
            extra = [frame_id for _, frame_id in ids]
            # slice "cold": frames whose cache the browser run has not built yet (a new file each)
            for n in range(3):
                padded_mni(folder / "data" / f"slice{n}.nii.gz", seed=100 + n)
            with app.app_context():
                from app.db import db
                from app.services import frames as frame_service, projects

                experiment = projects.get_or_create_experiment(projects.find_project("bench"), "slices")
                cold = []
                for n in range(3):
                    scan = projects.get_or_create_scan(experiment, f"slice{n}")
                    cold.append(frame_service.register_frame(scan, 0, f"slice{n}.nii.gz").id)
                db.session.commit()
            figures.update(slice_figures(base, cold, 0))
            figures["slice warm"] = slice_figures(base, extra + cold, args.slices)["slice warm"]
        finally:
            server.shutdown()
    print(f"{'figure':<22}{'n':>4}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, values in figures.items():
        print(f"{name:<22}{len(values):>4}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}"
              f"{max(values) if values else float('nan'):>10.1f}")
    print("targets: first paint p95 <= 300 ms, submit to next paint p95 <= 200 ms, slice warm p95 <= 30 ms")


if __name__ == "__main__":
    main()
