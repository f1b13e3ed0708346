"""The saliency overlay in a real browser: the champion's map of the chosen output is computed on
request, laid over the scan with a colour bar, and another output can be chosen."""
from __future__ import annotations

import pytest

from app.services import model_versions
from tests.app.test_browser_review import LOADED, log_in
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("two_torch_threads")]
OVERLAY = "() => window.qcloop.nv.volumes.length === 2"


def test_the_overlay_appears_and_its_output_can_be_switched(app, browser, live_server, page, factory):
    admin = factory.user("ada", superuser=True)
    project = factory.project("salient", creator=admin)
    factory.member(project, "tier1", "ann")
    scan = factory.scan(project, "exp", "s0", shape=(40, 48, 36))
    model_versions.import_miqa(project, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", admin)
    base = live_server.url
    log_in(page, base, "ann")
    page.goto(f"{base}/scans/{scan.id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert page.locator("#saliency-controls").is_hidden()
    page.click("#toggle-saliency")
    assert page.get_attribute("#toggle-saliency", "aria-pressed") == "true"
    page.wait_for_function(OVERLAY, timeout=60000)
    assert page.evaluate("window.qcloop.nv.volumes[1].name").endswith("saliency-usable.nii.gz")
    assert page.evaluate("window.qcloop.nv.opts.isColorbar")
    page.select_option("#saliency-output", "ghosting_motion")
    page.wait_for_function("() => window.qcloop.nv.volumes.length === 2 && "
                           "window.qcloop.nv.volumes[1].name.endsWith('saliency-ghosting_motion.nii.gz')",
                           timeout=60000)
    page.fill("#saliency-opacity", "0.8")
    page.dispatch_event("#saliency-opacity", "input")
    assert abs(page.evaluate("window.qcloop.nv.volumes[1].opacity") - 0.8) < 1e-6
    assert page.locator("#viewer-message").is_hidden()
