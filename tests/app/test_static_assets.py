"""Static files: content-versioned URLs cached for a year; plain URLs revalidate as before."""
import re


def test_pages_link_versioned_static_files_that_browsers_keep(client):
    page = client.get("/login").get_data(as_text=True)
    url = re.search(r'href="(/static/qcloop\.css\?v=[0-9a-f]{12})"', page).group(1)
    answer = client.get(url)
    assert answer.status_code == 200
    assert answer.cache_control.max_age == 365 * 24 * 3600 and answer.cache_control.immutable
    plain = client.get("/static/qcloop.css")
    assert plain.status_code == 200 and plain.cache_control.max_age != 365 * 24 * 3600
    assert client.get("/static/no-such-file.js").status_code == 404
