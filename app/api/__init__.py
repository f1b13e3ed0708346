"""The REST API under /api/v1 (flask-smorest: schemas, validation, OpenAPI at /api/v1/openapi.json)."""
from __future__ import annotations

from flask import Flask, jsonify

from app.api.bodies import refuse_nul_characters
from app.api.docs import Api
from app.auth.permissions import permission


def init_api(app: Flask) -> Api:
    from app.api import members, models, projects, review, tokens, training, transfer, users, vocabulary, volumes
    from app.api import sync

    api = Api(app, spec_kwargs={"components": {"securitySchemes": {
        "Token": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": "`Token <40 hex characters>` from POST /api-token-auth/"}}},
        "security": [{"Token": []}]})
    for module in (users, vocabulary, tokens, members, training, models, transfer, review, projects, volumes,
                   sync):
        api.register_blueprint(module.blp, url_prefix="/api/v1")
    app.before_request(refuse_nul_characters)
    # The spec views are public; the permission-matrix test sees them declared.
    for endpoint, view in list(app.view_functions.items()):
        if endpoint.startswith("api-docs."):
            app.view_functions[endpoint] = permission("public")(view)

    @app.get("/healthz")
    @permission("public")
    def healthz():
        from flask_login import current_user

        from app.services import health

        report = health.report_for(current_user)
        return jsonify(report), 200 if report["ok"] else 503

    return api
