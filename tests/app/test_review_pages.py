"""Review pages without a browser: projects progress and chart data, the project page with filters,
task overview and agreement, a bounded number of SQL queries for 500 scans, the scan page's data."""
from __future__ import annotations

import io
import json
import re
from contextlib import contextmanager

import pytest
from PIL import Image
from sqlalchemy import event, select

from app.db import Evaluation, Frame, ModelVersion, db
from app.services import decisions, projects, review
from app.services.review.agreement import ArtifactAgreement
from tests.factories import login


@contextmanager
def count_queries():
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _bulk_scans(project, experiment_name: str, count: int, reviewers, model) -> None:
    """Scans with frame rows (no files: the project page never reads them), decisions and evaluations."""
    experiment = projects.get_or_create_experiment(project, experiment_name)
    for n in range(count):
        scan = projects.get_or_create_scan(experiment, f"scan{n:04d}", scan_type="T1" if n % 2 else "T2")
        projects.add_frame(scan, 0, f"bulk/{n}.nii.gz", shape=[32, 32, 32])
        if n % 3 == 0:
            decisions.record_decision(scan, reviewers[0], "Q?", role="tier1", note="check",
                                      present=["ghosting_motion"])
        if n % 6 == 0:
            decisions.record_decision(scan, reviewers[1], "U", role="tier2", absent=["ghosting_motion"])
        db.session.add(Evaluation(model_version_id=model.id, scan_id=scan.id,
                                  scores={"usable": (n % 10) / 10, "ghosting_motion": 0.8 if n % 4 == 0 else 0.1}))
    db.session.commit()


@pytest.fixture
def reviewed(factory):
    project = factory.project("bulk")
    tier1 = factory.member(project, "tier1", "ann")
    tier2 = factory.member(project, "tier2", "bob")
    model = ModelVersion(project_id=project.id, registry_name=project.model_name, version="7", alias="champion")
    db.session.add(model)
    db.session.flush()
    return project, (tier1, tier2), model


def test_project_page_of_500_scans_uses_a_bounded_number_of_queries(client, reviewed):
    project, reviewers, model = reviewed
    _bulk_scans(project, "small", 20, reviewers, model)
    login(client, "ann")
    with count_queries() as small:
        assert client.get(f"/projects/{project.id}").status_code == 200
    _bulk_scans(project, "large", 500, reviewers, model)
    with count_queries() as large:
        page = client.get(f"/projects/{project.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count('data-scan="') == 520
    # 26 times more scans, (almost) the same queries: only SQLAlchemy's selectin loads split their
    # IN lists into batches of 500 ids, which adds a query per relation loaded that way.
    assert len(large) <= len(small) + 3, "queries grow with the number of scans (N+1)"
    assert len(large) <= 40, large


def test_project_page_filters_task_overview_and_agreement(client, reviewed):
    project, reviewers, model = reviewed
    _bulk_scans(project, "exp", 12, reviewers, model)
    login(client, "bob")
    base = f"/projects/{project.id}"

    def scans(query: str) -> set[str]:
        html = client.get(f"{base}?{query}").get_data(as_text=True)
        return set(re.findall(r'data-scan="\d+" data-state="(\w+)"', html)), html

    states, html = scans("")
    assert states == {"unreviewed", "needs_tier2", "complete"}
    assert "12 scans" in html and "suggestions by qcloop-bulk v7" in html
    assert scans("state=complete")[0] == {"complete"}  # scans 0 and 6: tier 2 had the last word
    assert 'data-state="complete"' in scans("decision=U")[1] and "needs_tier2" not in scans("decision=U")[0]
    assert scans("artifact=ghosting_motion")[0] == {"needs_tier2"}  # scans 3 and 9
    assert scans("scan_type=T2")[1].count('data-scan="') == 6
    assert scans("suggestion=ghosting_motion")[1].count('data-scan="') == 3  # scans 0, 4, 8
    assert scans("suggestion=usable")[1].count('data-scan="') == 5  # usable >= 0.5: scans 5 to 9
    assert scans("decision=none")[1].count('data-scan="') == 8

    assert 'id="task-overview"' in html and ">ann<" in html and ">bob<" in html
    assert f'href="/projects/{project.id}/training"' in html  # the training page, where it exists
    assert f"/projects/{project.id}/import" not in html  # import/export: for project admins only
    agreement = review.agreement(project.id)
    assert agreement.scans == 2  # scans 0 and 6 were decided by both
    pair = agreement.pairs[0]
    assert pair.reviewers == ["ann", "bob"] and pair.n == 2 and pair.agreement == 0.0
    assert pair.artifacts["ghosting_motion"] == ArtifactAgreement(kappa=0.0, n=2, agreement=0.0)  # present vs absent
    assert {d.scan_name for d in agreement.disagreements} == {"scan0000", "scan0006"}
    assert "Disagreements to settle" in html and "scan0006" in html


def test_project_page_lists_experiments_a_page_at_a_time_with_filters_across_the_project(app, client, reviewed):
    project, (tier1, tier2), _ = reviewed
    app.config["PROJECT_PAGE_EXPERIMENTS"] = 4
    for n in range(10):
        experiment = projects.get_or_create_experiment(project, f"e{n:02d}")
        for m in range(2):
            scan = projects.get_or_create_scan(experiment, f"e{n:02d}s{m}")
            if n in (5, 9) and m == 1:
                decisions.record_decision(scan, tier2, "U", role="tier2")
    db.session.commit()
    login(client, "ann")
    base = f"/projects/{project.id}"

    def listed(query: str) -> tuple[list[str], str]:
        answer = client.get(f"{base}?{query}")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        html = answer.get_data(as_text=True)
        return re.findall(r'class="experiment-link"[^>]*>(e\d\d)<', html), html

    first, html = listed("")
    assert first == ["e00", "e01", "e02", "e03"] and html.count('data-scan="') == 8
    assert "20 scans" in html and "2 complete" in html  # the counts are the whole project's
    assert "experiments 1&ndash;4 of 10 (page 1 of 3)" in html and 'rel="prev"' not in html
    last, html = listed("page=3")
    assert last == ["e08", "e09"] and 'rel="next"' not in html and f'href="{base}?page=2"' in html
    # a filter reads the whole project: the matching experiments, on one page, and the pager keeps the filter
    complete, html = listed("state=complete")
    assert complete == ["e05", "e09"] and html.count('data-scan="') == 2 and 'id="pager-top"' not in html
    assert "2 of 20 scans match" in html
    app.config["PROJECT_PAGE_EXPERIMENTS"] = 1
    _, html = listed("state=complete&page=2")
    assert f'href="{base}?page=1&amp;state=complete"' in html
    assert listed("state=unreviewed&artifact=ghosting_motion")[1].count("No scan matches these filters") == 1
    for bad in ("page=0", "page=abc", "page=99", "page=%C2%B2", "page=" + "9" * 5000):
        answer = client.get(f"{base}?{bad}")
        assert answer.status_code == 400 and "page" in answer.get_data(as_text=True), bad


def test_kappa_per_pair_when_labels_vary(factory):
    project = factory.project("kappa")
    ann, bob = factory.member(project, "tier1", "ann"), factory.member(project, "tier1", "bob")
    experiment = projects.get_or_create_experiment(project, "e")
    pairs = [("U", "U"), ("U", "U"), ("UN", "UN"), ("UN", "U"), ("Q?", "Q?")]
    for n, (a, b) in enumerate(pairs):
        scan = projects.get_or_create_scan(experiment, f"s{n}")
        decisions.record_decision(scan, ann, a, role="tier1", note="n", present=["lesions"] if n % 2 else [])
        decisions.record_decision(scan, bob, b, role="tier1", note="n", present=["lesions"] if n < 2 else [])
    db.session.commit()
    from sklearn.metrics import cohen_kappa_score

    result = review.agreement(project.id).pairs[0]
    assert result.kappa == round(cohen_kappa_score([a for a, _ in pairs], [b for _, b in pairs]), 3)
    assert result.agreement == 0.8
    # Unlisted artifacts are undefined (not judged) and left out: only scan 1 was judged by both.
    assert result.artifacts == {"lesions": ArtifactAgreement(kappa=None, n=1, agreement=1.0)}


def test_projects_page_shows_progress_role_and_timeline(client, reviewed):
    project, reviewers, model = reviewed
    _bulk_scans(project, "exp", 6, reviewers, model)
    login(client, "ann")
    html = client.get("/").get_data(as_text=True)
    assert "1 need tier 2" in html and "1 complete" in html and "4 unreviewed" in html and "tier1" in html
    data = json.loads(re.search(r"data-timeline='([^']*)'", html).group(1))
    assert len(data["days"]) == 30 and sum(data["series"]["ann"]) == 2 and sum(data["series"]["bob"]) == 1


def test_scan_page_context_next_unreviewed_and_missing_frame(app, client, factory):
    project = factory.project("pages")
    factory.member(project, "tier1", "ann")
    first, second = factory.scan(project, "e", "a"), factory.scan(project, "e", "b")
    frame = db.session.scalar(select(Frame).where(Frame.scan_id == first.id))
    from pathlib import Path

    Path(app.config["DATA_ROOT"], frame.file_location).unlink()  # the page must still work
    login(client, "ann")
    page = client.get(f"/scans/{first.id}")
    assert page.status_code == 200
    context = json.loads(re.search(r'<script id="scan-context" type="application/json">(.*?)</script>',
                                   page.get_data(as_text=True), re.S).group(1))
    assert context["scan"]["name"] == "a" and context["state"] == "unreviewed" and context["can_decide"]
    assert context["neighbours"]["next"]["id"] == second.id and context["neighbours"]["previous"] is None
    assert [o["key"] for o in context["decisions"]] == ["U", "UE", "Q?", "UN"]
    assert context["frames"][0]["volume_url"].startswith(f"/api/v1/frames/{frame.id}/volume?v=")
    assert client.get(context["frames"][0]["volume_url"]).status_code == 404  # what the viewer reports
    as_json = client.get(f"/scans/{second.id}/context").get_json()
    assert as_json["neighbours"]["previous"]["id"] == first.id
    assert client.get(f"/projects/{project.id}/next").headers["Location"].endswith(f"/scans/{first.id}")
    assert client.get(f"/experiments/{first.experiment_id}/review").headers["Location"].endswith(
        f"/scans/{first.id}")


def test_experiment_grid_shows_thumbnails_states_and_decisions_in_bounded_queries(app, client, reviewed, factory):
    project, (ann, bob), model = reviewed
    experiment = projects.get_or_create_experiment(project, "grid")
    scans = [factory.scan(project, "grid", f"g{n}", shape=(20, 24, 16)) for n in range(3)]
    decisions.record_decision(scans[0], ann, "Q?", role="tier1", note="check", present=["ghosting_motion"])
    decisions.record_decision(scans[1], bob, "U", role="tier2")
    gone = db.session.scalar(select(Frame).where(Frame.scan_id == scans[2].id))
    from pathlib import Path

    Path(app.config["DATA_ROOT"], gone.file_location).unlink()
    db.session.commit()
    login(client, "ann")
    project_html = client.get(f"/projects/{project.id}").get_data(as_text=True)
    assert f'href="/experiments/{experiment.id}"' in project_html  # the project page links to the grid

    page = client.get(f"/experiments/{experiment.id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    cells = re.findall(r'<li class="thumb" data-scan="(\d+)" data-state="(\w+)">(.*?)</li>', html, re.S)
    assert [(int(scan_id), state) for scan_id, state, _ in cells] == [
        (scans[0].id, "needs_tier2"), (scans[1].id, "complete"), (scans[2].id, "unreviewed")]
    first = cells[0][2]
    assert f'href="/scans/{scans[0].id}"' in first and "Q?" in first and "by ann" in first
    assert '<span class="tag">ghosting_motion</span>' in first
    assert "3 scans:" in html and "1 need tier 2" in html and "1 complete" in html
    sources = re.findall(r'<img loading="lazy"[^>]*src="([^"]+)"', html)
    assert len(sources) == 3 and all("size=160" in src and "axis=axial" in src for src in sources)

    thumbnail = client.get(sources[0].replace("&amp;", "&"))
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/png"
    assert Image.open(io.BytesIO(thumbnail.data)).size == (20, 24)  # shrunk to fit 160, never enlarged
    missing = client.get(sources[2].replace("&amp;", "&"), headers={"Accept": "application/json"})
    assert missing.status_code == 404 and "missing" in missing.get_json()["detail"]  # what grid.js shows

    # the grid of a 500-scan experiment costs the same queries as one of 20 (no N+1)
    _bulk_scans(project, "small", 20, (ann, bob), model)
    _bulk_scans(project, "large", 500, (ann, bob), model)
    small_id, large_id = (projects.get_or_create_experiment(project, name).id for name in ("small", "large"))
    with count_queries() as small:
        assert client.get(f"/experiments/{small_id}").status_code == 200
    with count_queries() as large:
        html = client.get(f"/experiments/{large_id}").get_data(as_text=True)
    assert html.count('<li class="thumb"') == 500 and html.count('loading="lazy"') == 500
    assert len(large) <= len(small) + 2, "queries grow with the number of scans (N+1)"
    assert len(large) <= 20, large


def test_slice_size_makes_thumbnails(app, client, factory):
    project = factory.project("thumbs")
    factory.member(project, "collaborator", "viewer")
    scan = factory.scan(project, "e", "s", shape=(40, 48, 36))
    frame = db.session.scalar(select(Frame).where(Frame.scan_id == scan.id))
    login(client, "viewer")
    url = f"/api/v1/frames/{frame.id}/slice?axis=axial"
    full = Image.open(io.BytesIO(client.get(url).data))
    small = client.get(url + "&size=24")
    assert full.size == (40, 48) and Image.open(io.BytesIO(small.data)).size == (20, 24)
    assert small.headers["ETag"] != client.get(url).headers["ETag"]
    for bad in ("0", "8", "2000", "12.5", "big"):
        answer = client.get(f"{url}&size={bad}")
        assert answer.status_code == 400 and answer.get_json()["field"] == "size", bad
