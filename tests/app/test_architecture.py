"""The web layer only translates: web modules never import the training or model code, never query,
import alone (no circles between blueprints), and a page view never loads torch."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.db import db
from app.services import decisions

ROOT = Path(__file__).resolve().parents[2]
WEB_PACKAGES = ("app/api", "app/ui", "app/admin", "app/auth")
FORBIDDEN_PACKAGES = ("training", "models")
QUERY_METHODS = ("execute", "scalars", "scalar", "get", "query")


def _web_modules() -> list[Path]:
    return sorted(path for package in WEB_PACKAGES for path in (ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module an ``import`` or ``from ... import`` names, at any depth (function-level too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _attribute_chain(node: ast.AST) -> list[str]:
    """``db.session.execute`` -> ["db", "session", "execute"]; anything but names and attributes ends the chain."""
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        chain.append(node.id)
    return chain[::-1]


def test_the_checks_see_what_they_look_for():
    """The walkers find a function-level import and a query through the session, or the tests below prove nothing."""
    tree = ast.parse("def view():\n    from training.data import Output\n    import models.registry\n"
                     "    return db.session.scalars(query), current_app.extensions['x'].session.get(1)\n")
    assert [name for _, name in _imported_modules(tree)] == ["training.data", "models.registry"]
    calls = [_attribute_chain(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert ["db", "session", "scalars"] in calls and ["session", "get"] == calls[-1][-2:]


def test_web_modules_import_neither_training_nor_models():
    """torch loads with the networks and the training code: only the worker and the CLI may import them."""
    modules = _web_modules()
    assert len(modules) > 20
    offending = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in modules for line, name in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), str(path)))
                 if name.split(".")[0] in FORBIDDEN_PACKAGES]
    assert not offending, "\n".join(offending)


def test_web_modules_do_not_query():
    """Routes call services; only services and app/db run statements through the session."""
    offending = []
    for path in _web_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call):
                continue
            chain = _attribute_chain(node.func)
            if len(chain) >= 3 and chain[-2] == "session" and chain[-1] in QUERY_METHODS:
                offending.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {'.'.join(chain)}")
    assert not offending, "\n".join(offending)


def _import_alone(module: str) -> tuple[str, int, str]:
    code = (f"import sys\nimport {module}\n"
            "assert 'torch' not in sys.modules, 'importing it loaded torch'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    return module, result.returncode, lines[-1] if lines else ""


def test_each_blueprint_module_imports_alone():
    """A fresh interpreter imports any blueprint module first without a circular-import error (or torch)."""
    modules = [_module_name(path) for path in _web_modules()
               if any(marker in path.read_text(encoding="utf-8") for marker in ("Blueprint(", "@bp.", "@blp."))]
    assert {"app.ui.routes", "app.admin.routes", "app.auth.routes", "app.api.review"} <= set(modules)
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [f"{module}: {error}" for module, code, error in pool.map(_import_alone, modules) if code != 0]
    assert not failed, "\n".join(failed)


PAGE_VIEWS = """
import json, sys
from app import create_app
from tests.factories import login

settings, urls = json.loads(sys.argv[1]), json.loads(sys.argv[2])
client = create_app(settings).test_client()
login(client, "reviewer")
statuses = {url: client.get(url).status_code for url in urls}
print(json.dumps({"statuses": statuses, "torch": "torch" in sys.modules,
                  "loaded": sorted(name for name in sys.modules if name.split(".")[0] in ("training", "models"))}))
"""


def test_the_scan_and_project_pages_do_not_load_torch(app, factory):
    """A fresh server process answering the project, scan, training and models pages (and the scan's JSON
    context) never imports torch."""
    project = factory.project("quiet")
    reviewer = factory.member(project, "tier2", "reviewer")
    scan = factory.scan(project, "exp", "s1")
    decisions.record_decision(scan, reviewer, "Q?", role="tier2", note="check", present=["ghosting_motion"])
    db.session.commit()
    settings = {key: app.config[key] for key in (
        "TESTING", "INSTANCE_PATH", "SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "DATA_ROOT", "CACHE_DIR",
        "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT", "WTF_CSRF_ENABLED", "RATELIMIT_ENABLED", "QUEUE_IMMEDIATE")}
    urls = [f"/projects/{project.id}", f"/scans/{scan.id}", f"/scans/{scan.id}/context",
            f"/experiments/{scan.experiment_id}", f"/projects/{project.id}/training", f"/projects/{project.id}/models"]
    result = subprocess.run([sys.executable, "-c", PAGE_VIEWS, json.dumps(settings), json.dumps(urls)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["statuses"] == {url: 200 for url in urls}
    assert answer["torch"] is False, f"a page view loaded torch (with {answer['loaded']})"
