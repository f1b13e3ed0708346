"""A tier-2 session in a real browser goes from scan to scan needing tier 2 by keyboard, skipping unreviewed
scans and an experiment another reviewer holds; each form starts from tier 1's artifacts, marked carried
over; at the end of the queue the page says so and offers the unreviewed scans."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import Decision, db, utcnow
from app.services import decisions
from tests.app.test_browser_review import LOADED, log_in

pytestmark = pytest.mark.browser
SHAPE = (24, 28, 20)


@pytest.fixture
def queue_world(app, factory):
    project = factory.project("queues")
    ann = factory.member(project, "tier1", "ann")
    factory.member(project, "tier2", "bob")
    carl = factory.member(project, "tier2", "carl")
    scans = {name: factory.scan(project, experiment, name, shape=SHAPE)
             for experiment, name in (("e", "s0"), ("e", "s1"), ("e", "s2"), ("e", "s3"), ("f", "f0"))}
    decisions.record_decision(scans["s0"], ann, "Q?", role="tier1", note="motion?", present=["ghosting_motion"])
    decisions.record_decision(scans["s2"], ann, "UN", role="tier1", note="bad", absent=["lesions"])
    decisions.record_decision(scans["f0"], ann, "UN", role="tier1", note="bad")
    held = scans["f0"].experiment
    held.lock_owner_id, held.lock_expires_at = carl.id, utcnow() + timedelta(minutes=30)
    db.session.commit()
    return project, scans


def test_tier2_goes_from_scan_to_scan_needing_tier2_by_keyboard(page, live_server, queue_world):
    project, scans = queue_world
    base = live_server.url
    log_in(page, base, "bob")
    page.goto(f"{base}/projects/{project.id}")
    assert "(2)" in page.locator("#next-tier2").inner_text()  # s0 and s2; f0 is in carl's experiment
    page.click("#next-tier2")
    page.wait_for_url(f"{base}/scans/{scans['s0'].id}")
    page.wait_for_function(LOADED, timeout=30000)
    assert "2 needing tier 2 open to you" in page.locator("#queue-status").inner_text()

    # tier 1's tag is already set, marked as carried over
    ghosting = page.locator(".tag[data-key=ghosting_motion]")
    assert ghosting.get_attribute("data-state") == "present" and ghosting.get_attribute("data-carried") == "true"
    assert "carried over" in ghosting.inner_text()

    # "2, Enter" confirms as usable-extra and moves on to s2, past the unreviewed s1
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/scans/{scans['s2'].id}")
    assert "Saved UE on s0" in page.locator("#decision-message").inner_text()
    page.wait_for_function("() => document.querySelector('.tag[data-key=lesions]').dataset.state === 'absent'")

    # "2, Enter" on the last one: the queue is empty, the page says so and offers the unreviewed scans
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#queue-status').classList.contains('empty')")
    status = page.locator("#queue-status").inner_text()
    assert "No scan needing tier 2 is open to you; 2 unreviewed" in status
    assert page.url == f"{base}/scans/{scans['s2'].id}"

    stored = {d.scan_id: d for d in db.session.scalars(select(Decision).where(Decision.creator_role == "tier2"))}
    assert stored[scans["s0"].id].option.key == "UE"
    assert {a.entry.key: a.state for a in stored[scans["s0"].id].artifacts if a.state != "undefined"} == {
        "ghosting_motion": "present"}
    assert {a.entry.key: a.state for a in stored[scans["s2"].id].artifacts if a.state != "undefined"} == {
        "lesions": "absent"}

    page.click("#queue-other")
    page.wait_for_url(f"{base}/scans/{scans['s1'].id}?queue=tier1")
    page.wait_for_function("() => document.querySelector('#queue-status').textContent.includes('unreviewed')")
    page.keyboard.press("]")  # the tier-1 queue by keyboard too: s3 next, f0's experiment skipped
    page.wait_for_url(f"{base}/scans/{scans['s3'].id}?queue=tier1")
