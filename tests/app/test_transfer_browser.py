"""In a real browser: upload a file on the admin import page, preview it, apply it, and watch a large
import's progress bar poll the job API until the job ends."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.db import Scan, db
from tests.app.transfer_helpers import write_csv
from tests.factories import PASSWORD

pytestmark = pytest.mark.browser


def test_preview_apply_and_job_progress(app, factory, live_server, page, tmp_path):
    app.config["WTF_CSRF_ENABLED"] = True  # forms and the poll run as in production
    admin = factory.user("siteadmin")
    project = factory.project("Site", creator=admin)
    factory.nifti("site/a.nii.gz", shape=(16, 16, 16))
    factory.nifti("site/b.nii.gz", shape=(16, 16, 16))
    small = write_csv(tmp_path / "small.csv", [["Site", "v1", "a", "T1", 0, "site/a.nii.gz"] + [""] * 10])
    large = write_csv(tmp_path / "large.csv", [["Site", "v1", "b", "T1", 0, "site/b.nii.gz"] + [""] * 10])
    base = live_server.url
    page.goto(base + "/login")
    page.fill("#username", "siteadmin")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.goto(f"{base}/admin/projects/{project.id}/import")
    page.set_input_files("#import-form input[name=file]", str(small))
    page.click("#import-form button[type=submit]")
    page.wait_for_selector("#import-summary")
    assert "Preview (nothing written yet)" in page.inner_text("#import-summary")
    assert "scans added" in page.inner_text("#import-summary")
    page.click("#apply-form button[type=submit]")
    page.wait_for_selector("#import-summary h2:has-text('Imported')")
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 1

    app.config["IMPORT_INLINE_MAX_BYTES"] = 10  # anything larger runs as a job
    page.set_input_files("#import-form input[name=file]", str(large))
    page.uncheck("#import-form input[name=dry_run]")
    page.click("#import-form button[type=submit]")
    page.wait_for_selector("#import-job")
    page.wait_for_function("() => document.querySelector('#import-job .state').textContent === 'succeeded'")
    assert page.eval_on_selector("#import-job progress", "bar => bar.value") == 1
    assert "scans added 1" in page.inner_text("#import-job .result")
    db.session.expire_all()
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 2
