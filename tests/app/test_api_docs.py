"""The API documentation page works offline: Swagger UI comes from qcloop's static files."""
from __future__ import annotations

import re

from app.auth.permissions import declared_permission

VENDOR = "/static/vendor/swagger-ui/"


def test_docs_page_loads_swagger_ui_from_local_static_files(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    start = [asset for asset in assets if asset.startswith("/static/js/swagger-ui-start.js")]
    assert len(start) == 1  # qcloop's CSP forbids the inline script that would start Swagger UI
    assert sorted(set(assets) - set(start)) == sorted(
        VENDOR + name for name in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"))
    assert "//" not in "".join(assets), "no asset may come from another host"
    assert '"/api/v1/openapi.json"' in html
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.data) > (100 if asset in start else 10_000), asset
        answer.close()


def test_docs_page_is_public_like_the_description_it_shows(app, client):
    assert declared_permission("api-docs.openapi_swagger_ui").kind == "public"
    assert client.get("/api/v1/docs").status_code == 200  # no session, no token
    licence = client.get(VENDOR + "LICENSE")
    assert licence.status_code == 200 and b"Apache License" in licence.data
    licence.close()
