def test_healthz_reports_each_component(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is True
    assert {"database", "storage", "queue", "mlflow"} <= set(body)
    assert body["queue"]["ok"] and body["database"]["ok"] and body["mlflow"]["ok"]


def test_healthz_says_when_storage_is_missing(make_app, tmp_path):
    app = make_app(DATA_ROOT=str(tmp_path / "missing"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert "does not exist" in response.get_json()["storage"]["error"]
