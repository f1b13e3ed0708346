"""No waiting on the scan page: three server-rendered planes paint before the viewer has its volume,
step aside when it draws, and the next scan's planes come from the browser's cache."""
from __future__ import annotations

import time

import pytest

from tests.app.test_browser_review import LOADED, log_in

pytestmark = pytest.mark.browser
PLANES_PAINTED = ("() => Array.from(document.querySelectorAll('#planes img'))"
                  ".every(i => i.complete && i.naturalWidth > 0)")


def test_planes_paint_before_the_volume_and_give_way_to_it(app, browser, live_server, page, factory):
    project = factory.project("neuro")
    factory.member(project, "tier1", "ann")
    scans = [factory.scan(project, "exp", f"s{n}", shape=(40, 48, 36)) for n in range(2)]
    base = live_server.url
    log_in(page, base, "ann")
    held = []
    page.route("**/preview*", lambda route: held.append(route))  # Niivue's first volume waits
    page.goto(f"{base}/scans/{scans[0].id}")
    page.wait_for_function(PLANES_PAINTED, timeout=30000)
    assert page.locator("#planes").is_visible()
    assert [img.get_attribute("data-axis") for img in page.locator("#planes img").all()] == \
        ["sagittal", "coronal", "axial"]
    box = page.locator("#planes img").first.bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    assert page.evaluate("window.qcloop.timings.firstPaintAt") > 0
    assert page.evaluate("document.querySelector('#viewer').dataset.loaded") == "loading"
    deadline = time.time() + 10
    while not held and time.time() < deadline:
        page.wait_for_timeout(50)
    for route in held:
        route.continue_()
    page.unroute("**/preview*")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.locator("#planes").is_hidden()

    page.keyboard.press("]")  # the next scan, in the page: its planes were fetched ahead
    page.wait_for_url(f"{base}/scans/{scans[1].id}")
    page.wait_for_function(LOADED, timeout=30000)
    srcs = page.evaluate("Array.from(document.querySelectorAll('#planes img')).map(i => i.src)")
    assert all(f"/frames/{scans[1].frames[0].id}/slice" in src for src in srcs)
