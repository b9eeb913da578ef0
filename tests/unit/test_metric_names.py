"""One list of metric names (pgkeeper/metric_names.py): every metric the code emits is in it, so the
template's alarms and dashboard, which are checked against the same list, read what is emitted."""

from __future__ import annotations

import ast
from pathlib import Path

from pgkeeper import metric_names

PACKAGE = Path(__file__).resolve().parents[2] / "layers/common/python/pgkeeper"
EMITTERS = {"add_metric", "single_metric"}


def _called(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def emitted_names() -> tuple[set[str], list[str]]:
    """(metric names the code emits, places whose name the scan cannot resolve)."""
    names: set[str] = set()
    unresolved: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        emitters = EMITTERS | ({"_count"} if path.name == "runner.py" else set())
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and _called(node) in emitters):
                    continue
                arg = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
                if isinstance(arg, ast.Constant):
                    names.add(arg.value)
                elif isinstance(arg, ast.Name) and hasattr(metric_names, arg.id):
                    names.add(getattr(metric_names, arg.id))
                else:
                    unresolved.append(f"{path.relative_to(PACKAGE)}:{function.name}")
        for node in ast.walk(tree):
            # Names passed through data: health checks' `metrics={"Name": (value, unit)}`, refresh's
            # (name, outcome) pairs, the runner's outcome table.
            if isinstance(node, ast.keyword) and node.arg == "metrics" and isinstance(node.value, ast.Dict):
                names |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_OUTCOME_METRICS" for t in node.targets):
                names |= {v.value for v in node.value.values if isinstance(v, ast.Constant)}  # type: ignore[attr-defined]
            if isinstance(node, ast.FunctionDef) and node.name == "_metrics":
                names |= {e.elts[0].value for e in ast.walk(node) if isinstance(e, ast.Tuple) and len(e.elts) == 2
                          and isinstance(e.elts[0], ast.Constant) and isinstance(e.elts[0].value, str)
                          and e.elts[0].value[:1].isupper()}
    return names, unresolved


def test_every_metric_the_code_emits_is_in_the_one_list():
    names, unresolved = emitted_names()
    # Emitters taking their name from data the scan reads above (and nowhere else).
    assert sorted(set(unresolved)) == ["health/__init__.py:_emit", "refresh/job.py:_metrics", "runner.py:_count",
                                      "runner.py:execute", "runner.py:fleet_outcome"]  # _OUTCOME_METRICS[status]
    assert names - metric_names.ALL == set()
    assert {"JobSucceeded", "JobFailed", "WorkProven", "RowsDeleted", "ViewsRefreshed", "WraparoundAgePct",
            "BackupBytes"} <= names  # the scan sees each kind of emitter


def test_the_one_list_names_nothing_the_code_does_not_emit():
    names, _ = emitted_names()
    assert metric_names.ALL - names == {metric_names.COLD_START}  # Powertools emits it
