"""Services return domain objects (ORM rows, frozen dataclasses), never JSON-shaped dicts: an answer's
shape is its response schema's, so the OpenAPI description is true by construction. Only a job's
result and params are JSON by nature (stored on the Job row), as are files' formats and a few lookup
maps; each is listed with its reason."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "app" / "services"

# (module path under app/services, function): why its dict is the value itself, not an answer's shape.
ALLOWED = {
    ("training_job.py", "run_training"): "a job's result, stored as the job's JSON",
    ("evaluations.py", "run_evaluation"): "a job's result, stored as the job's JSON",
    ("saliency.py", "make_map"): "a job's result, stored as the job's JSON",
    ("evaluations.py", "job_params"): "a job's params, stored as the job's JSON",
    ("training/params.py", "clean_params"): "a training job's params, stored as the job's and the run's JSON",
    ("evaluations.py", "project_scores"): "an Evaluation row's scores column: probability per output key",
    ("evaluations.py", "project_uncertainty"): "an Evaluation row's uncertainty column",
    ("health.py", "mlflow_status"): "a /healthz probe's facts as it finds them",
    ("health.py", "check"): "the /healthz report: each probe's own facts (the queue's are huey's)",
    ("health.py", "report_for"): "the /healthz report, cut to its verdict for all but superusers",
    ("sync/dicomweb.py", "plain"): "DICOM JSON attributes, read from a PACS",
    ("transfer/artifact_names.py", "lookup"): "a lookup map: name in a file -> vocabulary key",
    ("transfer/artifact_names.py", "ArtifactNames.states"): "lookup maps: artifact key -> state of a decision",
    ("transfer/export_model.py", "miqa_states"): "MIQA's file format: artifact name -> state",
    ("transfer/export_model.py", "location_object"): "MIQA's and qcloop's file format: a location object",
    ("transfer/people.py", "member_rows"): "the full export file's member rows",
}

JSON_LEAVES = {"Any", "str", "int", "float", "bool", "None", "object"}
CONTAINERS = {"dict", "list", "tuple", "set"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _parts(node: ast.Subscript) -> list[ast.AST]:
    return list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]


def _json_value(node: ast.AST) -> bool:
    """Built from JSON's own types only (no domain class anywhere inside)."""
    if isinstance(node, ast.Constant):
        return node.value is None or node.value is Ellipsis
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _json_value(node.left) and _json_value(node.right)
    if isinstance(node, ast.Subscript):
        return _name(node.value) in CONTAINERS and all(_json_value(part) for part in _parts(node))
    return _name(node) in JSON_LEAVES or _name(node) in CONTAINERS


def json_shaped(node: ast.AST | None) -> bool:
    """A bare ``dict``, a ``dict[str, ...]`` of JSON values, or a list, tuple or optional of one."""
    if node is None:
        return False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return json_shaped(node.left) or json_shaped(node.right)
    if _name(node) == "dict":
        return True
    if isinstance(node, ast.Subscript):
        kind, parts = _name(node.value), _parts(node)
        if kind == "dict":
            return _name(parts[0]) == "str" and _json_value(parts[1])
        if kind in ("list", "tuple", "set"):
            return any(json_shaped(part) for part in parts)
    return False


def _returns_dict_display(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function itself (not a function nested in it) returns a ``{"key": ...}`` record, annotated
    or not (a comprehension keyed by id or name is a lookup map)."""
    todo, found = list(function.body), False
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict) and any(
                isinstance(key, ast.Constant) and isinstance(key.value, str) for key in node.value.keys):
            found = True
        todo.extend(ast.iter_child_nodes(node))
    return found


def dict_returning(tree: ast.Module) -> list[str]:
    """Public functions, and public methods of public classes, annotated to return a JSON-shaped dict or
    returning a ``{"key": ...}`` record."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            candidates = [(node.name, node)]
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            candidates = [(f"{node.name}.{item.name}", item) for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            continue
        found += [name for name, function in candidates
                  if not name.rsplit(".", 1)[-1].startswith("_")
                  and (json_shaped(function.returns) or _returns_dict_display(function))]
    return found


def test_the_walker_finds_json_shaped_results():
    """A planted dict-returning function and method are found, and domain results are not, or the check
    below proves nothing."""
    tree = ast.parse(
        "def a() -> dict: ...\n"
        "def b(x) -> dict[str, Any]: ...\n"
        "def c() -> list[dict[str, int | None]]: ...\n"
        "def d() -> tuple[dict[str, Any] | None, Job | None]: ...\n"
        "def e() -> dict[str, list[str]] | None: ...\n"
        "class Report:\n    def details(self) -> dict[str, Any]: ...\n    def _own(self) -> dict: ...\n"
        "def _helper() -> dict: ...\n"
        "def rows() -> list[Row]: ...\n"
        "def by_id() -> dict[int, Row]: ...\n"
        "def by_name() -> dict[str, ModelVersion]: ...\n"
        "def timeline() -> dict[int, Timeline]: ...\n"
        "class _Private:\n    def fields(self) -> dict[str, Any]: ...\n"
        "def unannotated(x):\n    if x:\n        return {'a': x}\n    return None\n"
        "def nested() -> Row:\n    def inner():\n        return {'a': 1}\n    return Row(inner())\n"
        "def by_key(rows) -> dict[int, Row]:\n    return {row.id: row for row in rows}\n")
    assert dict_returning(tree) == ["a", "b", "c", "d", "e", "Report.details", "unannotated"]


def test_services_return_objects_not_json_shaped_dicts():
    found = [f"app/services/{module}: {name}" for path in sorted(SERVICES.rglob("*.py"))
             for module in [path.relative_to(SERVICES).as_posix()]
             for name in dict_returning(ast.parse(path.read_text(encoding="utf-8"))) if (module, name) not in ALLOWED]
    assert found == [], "return a frozen dataclass or the ORM row, and let the response schema shape the answer"


def test_the_allowlist_names_what_exists():
    """An allowlisted function that no longer returns a dict (or no longer exists) leaves the list."""
    still = {(path.relative_to(SERVICES).as_posix(), name) for path in SERVICES.rglob("*.py")
             for name in dict_returning(ast.parse(path.read_text(encoding="utf-8")))}
    assert set(ALLOWED) <= still, set(ALLOWED) - still
