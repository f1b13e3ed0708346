"""The review page's keys and layout in a real browser (Playwright driving Debian's chromium): every
message in view without scrolling at 1280x720 and 1400x900, `?` lists the keys in effect, MIQA's
keymap decides with u/i/o/p, and window/level and zoom carry to the next scan of the same type."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import Decision, Experiment, Frame, db
from tests.app.test_browser_review import LOADED, crosshair, log_in
from tests.conftest import ARTIFACTS_DIR

pytestmark = pytest.mark.browser
SHAPE = (40, 48, 36)
CAL = "[window.qcloop.nv.volumes[0].cal_min, window.qcloop.nv.volumes[0].cal_max]"
# Every message the page shows: alerts and statuses that are displayed and say something.
MESSAGES = """() => Array.from(document.querySelectorAll('[role=alert], [role=status]'))
  .filter((node) => node.offsetParent !== null && node.textContent.trim())
  .map((node) => { const r = node.getBoundingClientRect();
                   return {id: node.id, text: node.textContent.trim(), top: r.top, bottom: r.bottom,
                           left: r.left, right: r.right}; })"""


def assert_in_view(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None, f"{selector} is not displayed"
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= size["width"] + 0.5 and box["y"] + box["height"] <= size["height"] + 0.5, (
        selector, box, size)


def assert_messages_in_view(page, *expected: str) -> None:
    """The named texts are shown, every shown message lies inside the window, and the window does not scroll."""
    size = page.viewport_size
    messages = page.evaluate(MESSAGES)
    for text in expected:
        assert any(text in m["text"] for m in messages), (text, messages)
    for m in messages:
        assert m["top"] >= 0 and m["bottom"] <= size["height"] + 0.5, m
        assert m["left"] >= 0 and m["right"] <= size["width"] + 0.5, m
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight + 1")
    assert page.evaluate("window.scrollY") == 0


@pytest.fixture
def keys_world(app, factory):
    project = factory.project("neuro")
    factory.member(project, "tier1", "ann")
    factory.member(project, "tier1", "mia")
    scans = [factory.scan(project, "exp", f"s{n}", shape=SHAPE) for n in range(3)]
    return project, scans


@pytest.mark.parametrize("width,height", [(1280, 720), (1400, 900)])
def test_every_message_and_the_panel_are_in_view_without_scrolling_and_question_mark_lists_the_keys(
        app, browser, live_server, factory, keys_world, width, height):
    project, scans = keys_world
    broken = factory.scan(project, "exp", "s3-two-frames", shape=SHAPE, n_frames=2)
    lost = db.session.scalars(select(Frame).where(Frame.scan_id == broken.id).order_by(Frame.frame_number)).all()[1]
    Path(app.config["DATA_ROOT"], lost.file_location).unlink()
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    base = live_server.url
    log_in(page, base, "ann")
    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    page.wait_for_function("() => !document.querySelector('#lock-banner').hidden")
    for selector in ("#panel", "#viewer", "#decision-buttons", "#artifact-tags", "#note", "#submit", "#presets",
                     "#keys-open"):
        assert_in_view(page, selector)

    # an error: Enter without a decision
    page.keyboard.press("Enter")
    assert_messages_in_view(page, "Choose a decision first", "You are reviewing experiment exp")
    assert_in_view(page, "#decision-message")

    # the key list: `?` opens it, Esc closes it, the Keys button opens it too
    page.keyboard.press("?")
    page.wait_for_function("() => document.querySelector('#keys-dialog').open")
    assert_in_view(page, "#keys-dialog")
    listed = page.locator("#keys-list").inner_text()
    for text in ("Usable (U)", "Unusable (UN)", "Ghosting / motion", "submit the decision", "next / previous scan",
                 "zoom in / out", "this list", "window / level"):
        assert text in listed, text
    rows = page.evaluate("""Array.from(document.querySelectorAll('#keys-list dt')).map(
        (dt) => [dt.textContent.trim(), dt.nextElementSibling.textContent])""")
    assert ["1", "Usable (U)"] in rows and ["y", "Ghosting / motion"] in rows and ["?", "this list"] in rows
    page.keyboard.press("1")  # keys other than ? and Esc do nothing behind the dialog
    assert page.evaluate("window.qcloop.state.decision") is None
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('#keys-dialog').open")
    page.click("#keys-open")
    page.wait_for_function("() => document.querySelector('#keys-dialog').open")
    assert_in_view(page, "#keys-dialog")
    page.click("#keys-close")
    page.wait_for_function("() => !document.querySelector('#keys-dialog').open")

    # a frame whose file is gone: the viewer's message is in view
    page.goto(f"{base}/scans/{broken.id}")
    page.wait_for_function(LOADED, timeout=30000)
    page.keyboard.press(".")
    page.wait_for_function("() => document.querySelector('#viewer').dataset.loaded === 'error'")
    assert_messages_in_view(page, "cannot be shown")
    assert_in_view(page, "#viewer-message")

    # the end of the queue: every scan decided by keyboard, one after the other on the same page; the last
    # answer and the queue's end are in view. The page left first releases its lock (a request sent as it
    # unloads), so the next page's lock is not released by it.
    page.goto(f"{base}/projects/{project.id}")
    deadline = time.monotonic() + 10
    while db.session.get(Experiment, broken.experiment_id).lock_owner_id is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        db.session.expire_all()
    page.goto(f"{base}/scans/{scans[0].id}")
    for scan in scans + [broken]:
        page.wait_for_function(f"() => document.querySelector('#scan-name').textContent === '{scan.name}'")
        page.wait_for_function(LOADED, timeout=30000)
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => document.querySelector('#decision-message').textContent.startsWith('Saved')"
                               f" && document.querySelector('#decision-message').textContent.includes('{scan.name}')"
                               f" || document.querySelector('#decision-message').textContent.includes('No unreviewed')")
    page.wait_for_function("() => document.querySelector('#scan-state').textContent === 'complete'")
    assert db.session.scalar(select(func.count(Decision.id))) == len(scans) + 1
    assert_messages_in_view(page, "Saved")
    assert_in_view(page, "#panel")
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / f"scan-end-of-queue-{width}x{height}.png"))
    context.close()


def test_miqa_keymap_chosen_on_the_profile_decides_with_u_and_moves_artifacts_to_digits(
        app, live_server, page, keys_world):
    project, scans = keys_world
    base = live_server.url
    log_in(page, base, "mia")
    page.goto(f"{base}/profile")
    page.check("input[name=keymap][value=miqa]")
    page.click("#keymap-submit")
    page.wait_for_url(f"{base}/profile")
    assert "MIQA's keys" in page.locator(".flash").inner_text()

    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    labels = page.locator("#decision-buttons button").all_inner_texts()
    assert labels == ["Usable (u)", "Usable-extra (i)", "Questionable (o)", "Unusable (p)"]
    assert page.locator(".tag[data-key=normal_variants]").inner_text().startswith("Normal variants (1)")
    assert page.locator(".tag[data-key=truncation_artifact]").inner_text().startswith("Truncation artifact (0)")

    page.keyboard.press("?")
    rows = page.evaluate("""Array.from(document.querySelectorAll('#keys-list dt')).map(
        (dt) => [dt.textContent.trim(), dt.nextElementSibling.textContent])""")
    assert ["u", "Usable (U), saved at once"] in rows and ["1", "Normal variants"] in rows
    assert ["q w", "axial slice down / up (MIQA)"] in rows
    page.keyboard.press("Escape")

    before = crosshair(page)
    page.keyboard.press("w")  # MIQA's next axial slice, not an artifact
    assert 0.4 < (crosshair(page)[2] - before[2]) * SHAPE[2] < 1.6  # one axial slice up (snapped to voxels)
    page.keyboard.press("y")  # qcloop's ghosting key is free under MIQA's keymap
    page.keyboard.press("1")
    page.keyboard.press("0")
    page.keyboard.press("0")
    assert page.evaluate("JSON.stringify(window.qcloop.state.artifacts)") == (
        '{"normal_variants":"present","truncation_artifact":"absent"}')

    page.keyboard.press("u")  # as in MIQA: the key saves, and the next scan opens
    page.wait_for_url(f"{base}/scans/{scans[1].id}")
    assert "Saved U on s0" in page.locator("#decision-message").inner_text()
    stored = db.session.scalar(select(Decision).where(Decision.scan_id == scans[0].id))
    assert stored.option.key == "U" and stored.creator.username == "mia"
    assert {a.entry.key: a.state for a in stored.artifacts if a.state != "undefined"} == {
        "normal_variants": "present", "truncation_artifact": "absent"}

    # o needs a note, as the project says: refused with the reason, nothing stored, then saved with one
    page.wait_for_function(LOADED, timeout=30000)
    page.keyboard.press("o")
    page.wait_for_function("() => document.querySelector('#decision-message').textContent.includes('note is required')")
    assert db.session.scalar(select(Decision.id).where(Decision.scan_id == scans[1].id)) is None
    page.fill("#note", "motion")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{base}/scans/{scans[2].id}")
    db.session.expire_all()
    assert db.session.scalar(select(Decision).where(Decision.scan_id == scans[1].id)).option.key == "Q?"


def test_a_decision_made_while_the_next_volume_still_loads_is_saved(app, live_server, page, keys_world):
    """A fast reviewer decides from the planes while the volume still streams in: the keys are never dropped."""
    project, scans = keys_world
    base = live_server.url
    held = []  # the second scan's volumes stay in flight until the decision on it is stored
    page.route(f"**/api/v1/frames/{scans[1].frames[0].id}/*", lambda route: held.append(route)
               if "/volume" in route.request.url or "/preview" in route.request.url else route.continue_())
    log_in(page, base, "ann")
    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/scans/{scans[1].id}")
    # the browser holds the requests at once; the handlers listing them run a little later, in this process
    assert page.evaluate("document.querySelector('#viewer').dataset.loaded") != "full"

    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/scans/{scans[2].id}")
    assert "Saved UE on s1" in page.locator("#decision-message").inner_text()
    db.session.expire_all()
    assert db.session.scalar(select(Decision).where(Decision.scan_id == scans[1].id)).option.key == "UE"
    assert held, "the second scan's volume was never held"
    for route in held:
        route.continue_()
    page.wait_for_function(LOADED, timeout=30000)


def test_window_level_and_zoom_carry_to_the_next_scan_of_the_same_type_only(
        app, live_server, page, factory, keys_world):
    project, scans = keys_world
    flair = factory.scan(project, "exp", "t-flair", shape=SHAPE)
    flair.scan_type = "FLAIR"
    db.session.commit()
    base = live_server.url
    pressed = "Array.from(document.querySelectorAll('#presets button')).map((b) => b.getAttribute('aria-pressed'))"
    log_in(page, base, "ann")
    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.evaluate(pressed) == ["true", "false", "false", "false"]  # auto, the default window

    # a preset carries by name: the next scan gets it on its own intensities
    page.click("button[data-preset=soft]")
    assert page.evaluate(pressed) == ["false", "false", "true", "false"]
    assert "active" in page.locator("button[data-preset=soft]").get_attribute("class")
    page.keyboard.press("]")
    page.wait_for_url(f"{base}/scans/{scans[1].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.evaluate(pressed) == ["false", "false", "true", "false"]
    low, high = page.evaluate("window.qcloop.state.geometry.window")
    assert page.evaluate(CAL) == pytest.approx([low, low + (high - low) * 0.6])

    # typed values and a zoom carry as they are; no preset is marked then
    page.fill("#window", "1000")
    page.fill("#level", "700")
    page.press("#level", "Tab")
    assert page.evaluate(pressed) == ["false", "false", "false", "false"]
    page.click("h2:has-text('Decision')")
    page.keyboard.press("=")
    zoom = page.evaluate("window.qcloop.nv.scene.pan2Dxyzmm[3]")
    assert zoom == pytest.approx(1.25)
    page.keyboard.press("]")
    page.wait_for_url(f"{base}/scans/{scans[2].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.evaluate(CAL) == [200, 1200]
    assert (page.input_value("#window"), page.input_value("#level")) == ("1000", "700")
    assert page.evaluate("window.qcloop.nv.scene.pan2Dxyzmm[3]") == pytest.approx(zoom)

    # another scan type keeps its own view; the T1 view survives a new page load (this browser's storage)
    page.goto(f"{base}/scans/{flair.id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.evaluate(pressed) == ["true", "false", "false", "false"]
    assert page.evaluate(CAL) == pytest.approx(page.evaluate("window.qcloop.state.geometry.window"))
    assert page.evaluate("window.qcloop.nv.scene.pan2Dxyzmm[3]") == pytest.approx(1)
    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.evaluate(CAL) == [200, 1200]
    assert page.evaluate("window.qcloop.nv.scene.pan2Dxyzmm[3]") == pytest.approx(zoom)
