from tests.factories import token_headers


def test_healthz_reports_each_component_to_superusers(factory, client):
    factory.user("root", superuser=True)
    response = client.get("/healthz", headers=token_headers(client, "root"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True
    assert {"database", "storage", "queue", "mlflow"} <= set(body)
    assert body["queue"]["ok"] and body["database"]["ok"] and body["mlflow"]["ok"]


def test_healthz_says_when_storage_is_missing(make_app, tmp_path):
    app = make_app(DATA_ROOT=str(tmp_path / "missing"))
    with app.app_context():
        from tests.factories import Factory

        Factory(app).user("root", superuser=True)
        client = app.test_client()
        assert client.get("/healthz").get_json() == {"ok": False}  # anonymous: no details
        response = client.get("/healthz", headers=token_headers(client, "root"))
    assert response.status_code == 503
    assert "does not exist" in response.get_json()["storage"]["error"]
