"""Project admins edit vocabularies through the API and the admin page; ids and keys stay stable."""
from app.db import AuditEvent, db
from tests.factories import login, token_headers


def _world(factory, client):
    admin = factory.user("vocadmin")
    project = factory.project(creator=admin)
    factory.member(project, "tier1", "vocreviewer")
    return project, token_headers(client, "vocadmin"), token_headers(client, "vocreviewer")


def test_members_read_and_admins_extend_the_vocabulary(factory, client):
    project, admin, reviewer = _world(factory, client)
    url = f"/api/v1/projects/{project.id}/vocabulary"
    before = client.get(url, headers=reviewer).get_json()
    assert [d["key"] for d in before["decisions"]] == ["U", "UE", "Q?", "UN"]
    assert len(before["artifacts"]) == 10

    added = client.post(f"/api/v1/projects/{project.id}/artifact-entries", headers=admin,
                        json={"key": "contrast_agent", "label": "Contrast agent", "shortcut": "z"})
    assert added.status_code == 201, added.get_json()
    after = client.get(url, headers=reviewer).get_json()
    assert after["artifacts"][-1]["key"] == "contrast_agent" and after["version"] != before["version"]

    entry_id = before["artifacts"][0]["id"]
    retired = client.patch(f"/api/v1/projects/{project.id}/artifact-entries/{entry_id}", headers=admin,
                           json={"retired": True, "label": "Normal variants (old)"})
    assert retired.status_code == 200 and retired.get_json()["retired"] is True
    assert retired.get_json()["id"] == entry_id and retired.get_json()["key"] == "normal_variants"
    assert db.session.query(AuditEvent).filter_by(action="vocabulary.update").count() == 1

    refused = client.post(f"/api/v1/projects/{project.id}/decision-options", headers=reviewer,
                          json={"key": "X", "meaning": "usable"})
    assert refused.status_code == 403


def test_bad_vocabulary_changes_are_clear_errors(factory, client):
    project, admin, _ = _world(factory, client)
    base = f"/api/v1/projects/{project.id}"
    cases = [
        (f"{base}/artifact-entries", {"key": "Bad Key"}, 400, "key"),
        (f"{base}/artifact-entries", {"key": "lesions"}, 409, "key"),
        (f"{base}/artifact-entries", {"key": "new_one", "shortcut": "q"}, 409, "shortcut"),
        (f"{base}/decision-options", {"key": "MAYBE", "meaning": "perhaps"}, 400, "meaning"),
        (f"{base}/decision-options", {"key": "MAYBE"}, 400, None),
        (f"{base}/decision-options", {"key": "MAYBE", "meaning": "usable", "position": "first"}, 400, None),
    ]
    for url, body, status, field in cases:
        response = client.post(url, headers=admin, json=body)
        assert response.status_code == status, (body, response.get_json())
        if field:
            assert response.get_json()["field"] == field
    other = factory.project()
    foreign = client.get(f"/api/v1/projects/{other.id}/vocabulary", headers=admin)
    assert foreign.status_code == 404
    option_id = client.get(f"{base}/vocabulary", headers=admin).get_json()["decisions"][0]["id"]
    renamed = client.patch(f"{base}/decision-options/{option_id}", headers=admin, json={"key": "USABLE"})
    assert renamed.status_code == 400
    missing = client.patch(f"{base}/decision-options/999999", headers=admin, json={"label": "x"})
    assert missing.status_code == 404


def test_admin_page_adds_and_retires_entries(factory, client):
    project, _, _ = _world(factory, client)
    login(client, "vocadmin")
    page = client.get(f"/admin/projects/{project.id}/vocabulary")
    assert page.status_code == 200 and b"ghosting_motion" in page.data
    response = client.post(f"/admin/projects/{project.id}/vocabulary/artifact",
                           data={"key": "metal_clip", "label": "Metal clip", "shortcut": ""}, follow_redirects=True)
    assert b"Vocabulary saved." in response.data and b"metal_clip" in response.data
    response = client.post(f"/admin/projects/{project.id}/vocabulary/decision",
                           data={"key": "Bad Key!", "meaning": "usable"}, follow_redirects=True)
    assert b"is not valid" in response.data
