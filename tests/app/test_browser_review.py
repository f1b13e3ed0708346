"""Reviewing in a real browser (Playwright driving Debian's chromium, Niivue on SwiftShader): a tier 1
reviewer decides a scan with the keyboard, a second reviewer sees the lock and is refused, then a
tier 2 reviewer completes the scan; bad input shows clear messages without breaking the page."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.db import Decision, Evaluation, Experiment, Frame, ModelVersion, db
from tests.conftest import ARTIFACTS_DIR
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser
LOADED = "() => document.querySelector('#viewer').dataset.loaded === 'full'"
SHAPE = (40, 48, 36)
THUMBNAILS_PAINTED = ("() => Array.from(document.querySelectorAll('.thumb img'))"
                      ".every(i => i.complete && i.naturalWidth > 0)")


def log_in(page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(base + "/")


def crosshair(page) -> list[float]:
    return page.evaluate("Array.from(window.qcloop.nv.scene.crosshairPos)")


def _drag(page, box: dict, start: tuple[float, float], end: tuple[float, float], button: str = "left",
          key: str | None = None) -> None:
    """Drag across the viewer between two points given as fractions of its box, holding a key if named."""
    if key:
        page.keyboard.down(key)
    page.mouse.move(box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1])
    page.mouse.down(button=button)
    page.mouse.move(box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1], steps=8)
    page.mouse.up(button=button)
    if key:
        page.keyboard.up(key)


@pytest.fixture
def review_world(app, factory):
    project = factory.project("neuro")
    factory.member(project, "tier1", "ann")
    factory.member(project, "tier2", "bob")
    scans = [factory.scan(project, "exp", f"s{n}", shape=SHAPE) for n in range(3)]
    model = ModelVersion(project_id=project.id, registry_name=project.model_name, version="3", alias="champion")
    db.session.add(model)
    db.session.flush()
    db.session.add(Evaluation(model_version_id=model.id, scan_id=scans[0].id,
                              scores={"usable": 0.27, "ghosting_motion": 0.91, "lesions": 0.04}))
    db.session.commit()
    return project, scans


def test_tier1_decides_by_keyboard_a_second_reviewer_is_locked_out_and_tier2_completes(
        app, browser, live_server, page, review_world):
    project, scans = review_world
    base = live_server.url
    log_in(page, base, "ann")
    page.goto(f"{base}/projects/{project.id}")
    page.click("#next-unreviewed")
    page.wait_for_url(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.locator("#lock-banner").inner_text().startswith("You are reviewing experiment exp")

    # scroll: arrow keys move the axial slice, the wheel scrolls the slice under the pointer
    before = crosshair(page)
    for _ in range(3):
        page.keyboard.press("ArrowUp")
    after_keys = crosshair(page)
    assert 2.5 <= (after_keys[2] - before[2]) * SHAPE[2] <= 3.5  # three axial slices up (snapped to voxels)
    assert abs(after_keys[0] - before[0]) * SHAPE[0] <= 1 and abs(after_keys[1] - before[1]) * SHAPE[1] <= 1
    box = page.locator("#gl").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(200)
    assert crosshair(page) != after_keys

    # window/level: a preset, typed values, then a ctrl-drag on the image, each reaching the viewer
    cal_js = "[window.qcloop.nv.volumes[0].cal_min, window.qcloop.nv.volumes[0].cal_max]"
    page.click("button[data-preset=full]")
    assert page.evaluate(cal_js) == pytest.approx(page.evaluate("window.qcloop.state.geometry.range"))
    page.fill("#window", "1000")
    page.fill("#level", "700")
    page.press("#level", "Tab")
    assert page.evaluate(cal_js) == [200, 1200]
    _drag(page, box, (0.25, 0.3), (0.3, 0.2), key="Control")
    dragged = page.evaluate(cal_js)
    assert dragged != [200, 1200]
    shown = float(page.input_value("#window")), float(page.input_value("#level"))
    assert shown == pytest.approx((dragged[1] - dragged[0], (dragged[0] + dragged[1]) / 2), rel=1e-3)
    assert page.evaluate("window.qcloop.state.poi") is None  # a drag is not a point of interest
    _drag(page, box, (0.3, 0.3), (0.35, 0.25), button="right")  # right-drag windows too
    assert page.evaluate(cal_js) != dragged
    pan = page.evaluate("Array.from(window.qcloop.nv.scene.pan2Dxyzmm)")  # shift-drag pans, = zooms
    _drag(page, box, (0.3, 0.3), (0.35, 0.35), key="Shift")
    panned = page.evaluate("Array.from(window.qcloop.nv.scene.pan2Dxyzmm)")
    assert panned[:3] != pan[:3]
    page.keyboard.press("=")
    assert page.evaluate("window.qcloop.nv.scene.pan2Dxyzmm[3]") > panned[3]
    page.click("#zoom-reset")

    # the model's suggestion is shown with its version, pre-marked but not the reviewer's
    assert "Suggestions by qcloop-neuro v3" in page.locator("#suggestion").inner_text()
    ghosting = page.locator(".tag[data-key=ghosting_motion]")
    assert ghosting.get_attribute("data-state") == "undefined" and "model: present 0.91" in ghosting.inner_text()
    assert "suggested-present" in ghosting.get_attribute("class")

    # two artifacts present (key and click), one absent (key twice)
    page.keyboard.press("y")
    page.click(".tag[data-key=inhomogeneity]")
    page.keyboard.press("w")
    page.keyboard.press("w")
    states = page.evaluate("JSON.stringify(window.qcloop.state.artifacts)")
    assert states == '{"ghosting_motion":"present","inhomogeneity":"present","lesions":"absent"}'

    # point of interest: a click on the image, mapped to the original voxel grid
    page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    page.wait_for_function("() => window.qcloop.state.poi !== null")
    poi = page.evaluate("window.qcloop.state.poi")
    assert all(0 <= poi[axis] < size for axis, size in zip("ijk", SHAPE))
    assert f"i {poi['i']}, j {poi['j']}, k {poi['k']}" in page.locator("#poi").inner_text()

    page.click("button[data-preset=auto]")  # back to the default window for the picture
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    shot = ARTIFACTS_DIR / "scan-view.png"
    page.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"))
    viewer = pixels[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    assert viewer.std() > 20 and (viewer > 100).mean() > 0.02  # Niivue painted the brain, not a blank canvas

    # Questionable needs a note; Enter alone is refused with a message, then note + Enter submits
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    assert "A note is required" in page.locator("#decision-message").inner_text()
    page.fill("#note", "ghosting in the phase direction")
    page.click("h2:has-text('Decision')")  # leave the note field
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/scans/{scans[1].id}")  # on to the next scan
    assert "Saved Q? on s0" in page.locator("#decision-message").inner_text()
    page.wait_for_function(LOADED, timeout=30000)

    stored = db.session.scalar(select(Decision).where(Decision.scan_id == scans[0].id))
    assert stored.option.key == "Q?" and stored.creator_role == "tier1"
    assert (stored.location_i, stored.location_j, stored.location_k) == (poi["i"], poi["j"], poi["k"])
    assert {a.entry.key: a.state for a in stored.artifacts if a.state != "undefined"} == {
        "ghosting_motion": "present", "inhomogeneity": "present", "lesions": "absent"}

    page.keyboard.press("[")  # back to the decided scan: its history and state
    page.wait_for_url(f"{base}/scans/{scans[0].id}")
    page.wait_for_function("() => document.querySelector('#scan-state').textContent === 'needs tier 2'")
    entry = page.locator("#history li").first.inner_text()
    for text in ("Questionable (Q?)", "ann, tier1", "present: ghosting_motion, inhomogeneity", "absent: lesions",
                 f"point i {poi['i']}, j {poi['j']}, k {poi['k']}", "ghosting in the phase direction"):
        assert text in entry

    # a second browser: bob sees ann's lock and his decision is refused with the reason
    other = browser.new_context(viewport={"width": 1400, "height": 900})
    second = other.new_page()
    log_in(second, base, "bob")
    second.goto(f"{base}/scans/{scans[0].id}")
    second.wait_for_function("() => !document.querySelector('#lock-banner').hidden")
    assert "locked by ann" in second.locator("#lock-banner").inner_text()
    second.keyboard.press("1")
    second.keyboard.press("Enter")
    second.wait_for_function("() => document.querySelector('#decision-message').textContent.includes('Not saved')")
    assert "is locked by ann" in second.locator("#decision-message").inner_text()

    # ann leaves (her lock is released); bob, tier 2, completes the scan
    page.goto(f"{base}/projects/{project.id}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        db.session.expire_all()
        if db.session.get(Experiment, scans[0].experiment_id).lock_owner_id is None:
            break
        time.sleep(0.1)
    second.reload()
    second.wait_for_function(LOADED, timeout=30000)
    second.keyboard.press("4")
    second.fill("#note", "motion confirmed")
    second.keyboard.press("Control+Enter")  # nothing else needs tier 2: bob stays, told so
    second.wait_for_function("() => document.querySelector('#queue-status').textContent.includes('No scan needing')")
    second.wait_for_function("() => document.querySelector('#scan-state').textContent === 'complete'")
    assert "Unusable (UN)" in second.locator("#history li").first.inner_text()
    assert "bob, tier2" in second.locator("#history li").first.inner_text()

    # the experiment grid: a painted thumbnail per scan with its state and latest decision; a click opens it
    second.goto(f"{base}/projects/{project.id}")
    second.click(f".experiment[data-experiment='{scans[0].experiment_id}'] a.experiment-link")
    second.wait_for_url(f"{base}/experiments/{scans[0].experiment_id}")
    second.wait_for_function(THUMBNAILS_PAINTED)
    assert second.locator(".thumb").count() == 3
    cell = second.locator(f".thumb[data-scan='{scans[0].id}']")
    assert cell.get_attribute("data-state") == "complete"
    assert "UN" in cell.inner_text() and "by bob" in cell.inner_text() and "complete" in cell.inner_text()
    assert second.locator(f".thumb[data-scan='{scans[2].id}']").get_attribute("data-state") == "unreviewed"
    second.screenshot(path=str(ARTIFACTS_DIR / "experiment-grid.png"))
    second.click(f".thumb[data-scan='{scans[2].id}'] a")
    second.wait_for_url(f"{base}/scans/{scans[2].id}")
    other.close()


def test_bad_input_and_missing_files_show_messages_without_breaking_the_page(
        app, live_server, page, factory):
    project = factory.project("broken")
    factory.member(project, "tier1", "ann")
    scan = factory.scan(project, "exp", "two-frames", n_frames=2)
    frames = db.session.scalars(select(Frame).where(Frame.scan_id == scan.id).order_by(Frame.frame_number)).all()
    Path(app.config["DATA_ROOT"], frames[1].file_location).unlink()
    base = live_server.url
    log_in(page, base, "ann")
    page.goto(f"{base}/scans/{scan.id}")
    page.wait_for_function(LOADED, timeout=30000)

    page.keyboard.press(".")  # the second frame: its file is gone
    page.wait_for_function("() => document.querySelector('#viewer').dataset.loaded === 'error'")
    assert "cannot be shown" in page.locator("#viewer-message").inner_text()
    assert "missing" in page.locator("#viewer-message").inner_text()
    page.keyboard.press(",")  # back to the first frame: the viewer recovers
    page.wait_for_function(LOADED, timeout=30000)
    page.keyboard.press("/")  # 3-D render on request
    assert page.evaluate("window.qcloop.nv.opts.multiplanarShowRender") == 1

    page.keyboard.press("1")
    page.evaluate("window.qcloop.state.poi = {i: 5, j: 5, k: 99}")  # outside the 32^3 volume
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#decision-message').textContent.includes('Not saved')")
    assert "outside the volume" in page.locator("#decision-message").inner_text()
    page.evaluate("window.qcloop.state.poi = null")
    page.evaluate("window.qcloop.state.artifacts = {no_such_artifact: 'present'}")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#decision-message').textContent.includes('unknown artifact')")
    page.evaluate("window.qcloop.state.artifacts = {}")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#queue-status').textContent.includes('No unreviewed')")
    assert page.locator("#scan-state").inner_text() == "complete"
    assert db.session.scalar(select(Decision.id).where(Decision.scan_id == scan.id)) is not None

    # the experiment grid: a scan whose file is gone says why instead of a broken image
    lost = factory.scan(project, "exp", "lost")
    Path(app.config["DATA_ROOT"], lost.frames[0].file_location).unlink()
    page.goto(f"{base}/experiments/{scan.experiment_id}")
    page.wait_for_function(THUMBNAILS_PAINTED)  # the two-frames scan: its first frame is fine
    message = page.locator(f".thumb[data-scan='{lost.id}'] .thumb-missing")
    message.wait_for()
    page.wait_for_function(f"() => document.querySelector(\".thumb[data-scan='{lost.id}'] .thumb-missing\")"
                           ".textContent.includes('missing')")
    assert "image unavailable" in message.inner_text()
    assert page.locator(f".thumb[data-scan='{scan.id}']").get_attribute("data-state") == "complete"
