"""Static files: content-versioned URLs cached for a year; plain URLs revalidate as before."""
import re

from tests.factories import login


def test_pages_link_versioned_static_files_that_browsers_keep(client):
    page = client.get("/login").get_data(as_text=True)
    url = re.search(r'href="(/static/qcloop\.css\?v=[0-9a-f]{12})"', page).group(1)
    answer = client.get(url)
    assert answer.status_code == 200
    assert answer.cache_control.max_age == 365 * 24 * 3600 and answer.cache_control.immutable
    plain = client.get("/static/qcloop.css")
    assert plain.status_code == 200 and plain.cache_control.max_age != 365 * 24 * 3600
    assert client.get("/static/no-such-file.js").status_code == 404


def test_the_review_page_modules_are_versioned_as_one_folder(client, factory):
    factory.user("root", superuser=True)
    project = factory.project("Modules")
    scan = factory.scan(project, "e", "s")
    login(client, "root")
    page = client.get(f"/scans/{scan.id}").get_data(as_text=True)
    url = re.search(r'<script type="module" src="(/static/tree/[0-9a-f]{12}/js/scan/main\.js)"', page).group(1)
    main = client.get(url)
    assert main.status_code == 200 and main.cache_control.immutable
    assert 'from "./viewer.js"' in main.get_data(as_text=True)
    imported = client.get(url.replace("main.js", "viewer.js"))  # where the browser resolves the relative import
    assert imported.status_code == 200 and imported.cache_control.max_age == 365 * 24 * 3600
    stale = client.get("/static/tree/000000000000/js/scan/viewer.js")  # an old page's version: revalidated
    assert stale.status_code == 200 and not stale.cache_control.immutable
    assert client.get(url.replace("main.js", "../../../app/__init__.py")).status_code == 404
