"""Schemathesis drives every operation of /api/v1/openapi.json with generated requests.

Each operation gets a few examples (valid and invalid bodies, queries and headers) sent by a
superuser's token against a small world whose ids fill the URL (a random id would only ever
meet the permission check's 404). Every answer must conform to the published description:
no 5xx, a documented status, a body matching its schema, JSON errors for bad input.

The operations are driven through ``APIOperation.as_strategy`` and Hypothesis directly:
schemathesis 4.32's pytest integration (``schema.parametrize()``) sets ``node._nodeid``, which
pytest 9.2 no longer has. Failures of all operations are collected and reported together.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.db import User, db
from app.services import decisions, invitations, training, users, vocabulary
from app.services.loaders import load
from tests.factories import Factory

log = logging.getLogger(__name__)

MAX_EXAMPLES = 6

# A schema cannot say everything that makes these requests valid, so a well-typed request may
# still be refused with a clear 400; the other checks (no 5xx, documented answers) still apply.
DATA_DEPENDENT = {
    "POST /api/v1/projects/{project_id}/import": "the file's rows must name real scans and vocabulary",
    "POST /api/v1/global/import": "the file's rows must name real scans and vocabulary",
    "POST /api/v1/frames": "the file must be a readable image",
    "POST /api/v1/projects/{project_id}/predict": "the file must be a readable NIfTI or NRRD image",
    "POST /api/v1/scan-decisions": "decision and artifact keys come from the project's vocabulary",
    "POST /api/v1/scans/{scan_id}/email": "recipients must be members of the scan's project",
    "POST /api/v1/projects": "the name must be free and printable, the template a real project",
    "POST /api/v1/projects/{project_id}/sync": "the source must be a folder under the data root",
}


@dataclass
class FuzzWorld:
    """The objects a URL may name, and the superuser's token (renewed when a call revokes it)."""

    ids: dict[str, object] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    root_id: int = 0

    def renew_token(self) -> None:
        """POST /logout revokes the calling token: the next operation needs a fresh one."""
        _, raw = users.issue_token(load(User, self.root_id), name="fuzz")
        db.session.commit()
        self.headers = {"Authorization": "Token " + raw}


@pytest.fixture
def fuzz_world(queued_app) -> FuzzWorld:
    with queued_app.test_request_context():  # services build links with url_for
        factory = Factory(queued_app)
        root = factory.user("root", superuser=True)
        project = factory.project("fuzz")
        member = factory.member(project, "tier1", "reviewer")
        scan = factory.scan(project, "exp1", "scan1")
        decision = decisions.record_decision(scan, root, "U", role="tier2")
        run = training.create_run(project, root, {})
        _, invite_token = invitations.invite("invitee@example.org", project, "tier1", root)
        spare_token, _ = users.issue_token(root, name="spare")
        db.session.commit()
        world = FuzzWorld(root_id=root.id)
        world.ids = {
            "project_id": project.id, "experiment_id": scan.experiment_id, "scan_id": scan.id,
            "frame_id": scan.frames[0].id, "decision_id": decision.id, "run_id": run.id, "job_id": run.job_id,
            "user_id": member.id, "token_id": spare_token.id, "invite_token": invite_token,
            "invitation_id": invitations.pending(project.id)[0].id,
            "option_id": vocabulary.decision_options(project.id)[0].id,
            "entry_id": vocabulary.artifact_entries(project.id)[0].id, "version": 1,
        }
        world.renew_token()
    return world


def _operations(app, world: FuzzWorld) -> list:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    # Known to schemathesis as configured, the token is never "mutated away" in negative cases
    # (each call still sends the current one: POST /logout revokes it).
    schema.config.update(headers=world.headers)
    # Text never holds NUL (PostgreSQL cannot store it): every JSON body with one is a 400, pinned below.
    schema.config.generation.update(allow_x00=False)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode, world: FuzzWorld) -> None:
    """Send MAX_EXAMPLES generated requests for one operation; raise on the first nonconforming answer."""
    fixed = {name: world.ids[name] for name in (p.name for p in operation.path_parameters)}
    excluded = [positive_data_acceptance] if operation.label in DATA_DEPENDENT else []
    documented = any(str(status).startswith("2") for status in operation.definition.raw.get("responses", {}))
    if not documented:  # nothing to validate the answer against (app.api.docs.answers documents one)
        log.warning("%s documents no success answer: only server errors are checked", operation.label)

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck),
                         phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))
    def check(case) -> None:
        if documented:
            response = case.call_and_validate(headers=world.headers, excluded_checks=excluded)
        else:
            response = case.call(headers=world.headers)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
        if operation.path == "/api/v1/logout" and response.status_code == 200:
            world.renew_token()

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        # Negative mode with nothing to break: every parameter is fixed and the body is absent.
        log.debug("%s: no invalid request to generate", operation.label)


def _describe(err: BaseException) -> str:
    text = str(err)
    for sub in getattr(err, "exceptions", ()):
        text += "\n  - " + str(sub)[:1500]
    return text


def test_api_conforms_to_its_description_under_generated_input(queued_app, fuzz_world):
    failures = []
    operations = _operations(queued_app, fuzz_world)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, fuzz_world)
            except (Exception, BaseExceptionGroup) as err:  # every operation is tried, all failures reported
                failures.append(f"{operation.label} ({mode.value}): {_describe(err)}")
    assert len(operations) > 40
    assert not failures, f"{len(failures)} operations answered outside their description:\n" + "\n\n".join(failures)


def test_ids_past_an_integer_column_name_nothing(queued_app, fuzz_world):
    """PostgreSQL refuses to compare an INTEGER column with 2**31: such ids are misses, never 500s."""
    client, headers, big = queued_app.test_client(), fuzz_world.headers, 2**31
    assert client.get(f"/api/v1/projects/{big}", headers=headers).status_code == 404
    assert client.get(f"/api/v1/scans?project={big}", headers=headers).status_code == 400
    assert client.post("/api/v1/scan-decisions", json={"scan": big, "decision": "U"}, headers=headers).status_code == 400
    mail = client.post(f"/api/v1/scans/{fuzz_world.ids['scan_id']}/email", json={"to": [big], "message": ""},
                       headers=headers)
    assert mail.status_code == 400 and mail.get_json()["field"] == "to"
    assert client.get(f"/api/v1/projects/{fuzz_world.ids['project_id']}", headers=headers).status_code == 200


def test_text_with_a_nul_character_is_refused_not_stored(queued_app, fuzz_world):
    """PostgreSQL cannot store NUL: found by the fuzzer as a 500 on a label."""
    client, headers = queued_app.test_client(), fuzz_world.headers
    url = f"/api/v1/projects/{fuzz_world.ids['project_id']}/artifact-entries/{fuzz_world.ids['entry_id']}"
    answer = client.patch(url, json={"label": "a\u0000b"}, headers=headers)
    assert answer.status_code == 400 and "NUL" in answer.get_json()["detail"]
