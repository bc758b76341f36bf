"""The dependency arrows stay one-way, and the public surface stays what we promise."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import b24robots

SRC = Path(b24robots.__file__).parent

# layer -> the b24robots layers it may import (besides itself, `errors`, `config` is not implied)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    # reading untrusted numbers, flags and URLs without raising (used at every boundary)
    "fields": {"errors"},
    # retries, backoff and deadlines as pure functions (used by rest, store and jobs)
    "policy": {"errors"},
    "robots": {"errors", "fields"},
    "inbound": {"errors", "fields", "robots"},
    "rest": {"errors", "fields", "inbound", "policy"},
    "sandbox": {"errors"},
    "config": {"errors", "fields"},
    "loader": {"errors", "robots"},
    "logs": set(),
    "connections": {"errors", "fields"},
    "store": {"errors", "fields", "robots", "rest", "config", "sandbox", "connections", "policy"},
    "jobs": {
        "errors",
        "fields",
        "robots",
        "rest",
        "inbound",
        "store",
        "sandbox",
        "config",
        "logs",
        "connections",
        "policy",
    },
    # the portal protocol: authentication of portal requests, the robot call, install and lifecycle
    "portal": {"errors", "fields", "robots", "rest", "inbound", "store", "jobs", "config", "logs"},
    # what the admin UI and the CLI share to author stored robots: forms, diffs, test runs, adoption
    "authoring": {"errors", "fields", "robots", "jobs", "sandbox", "connections", "store"},
    # the demo's sample robots, written with the public API like a robot author's module
    "demo": {"errors", "robots"},
    "web": {
        "authoring",
        "fields",
        "policy",
        "portal",
        "errors",
        "robots",
        "rest",
        "inbound",
        "store",
        "sandbox",
        "jobs",
        "config",
        "loader",
        "logs",
        "connections",
    },
    "testing": {"errors", "fields", "inbound"},
    "cli": {
        "authoring",
        "demo",
        "fields",
        "policy",
        "portal",
        "errors",
        "robots",
        "rest",
        "inbound",
        "store",
        "sandbox",
        "jobs",
        "web",
        "config",
        "loader",
        "testing",
        "logs",
        "connections",
    },
}
# the pytest plugin and the demo wire the whole product together, like the CLI does
COMPOSITION_ROOTS = {"testing/plugin.py", "testing/app_fixtures.py"}


def layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "b24robots" and len(parts) > 1:
                found.add(parts[1])
    return found


def source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(SRC)))
def test_dependency_arrows(path: Path) -> None:
    layer = layer_of(path)
    if layer in ("__init__", "__main__") or str(path.relative_to(SRC)) in COMPOSITION_ROOTS:
        return
    assert layer in ALLOWED, f"new top-level module {layer!r}: add it to ALLOWED with its permitted imports"
    bad = {imp for imp in imports_of(path) if imp != layer and imp not in ALLOWED[layer]}
    bad.discard("__init__")
    assert not bad, f"{path.relative_to(SRC)} ({layer}) must not import {sorted(bad)}"


def modules_imported_by(path: Path) -> set[str]:
    """The b24robots modules `path` imports, as paths under src/b24robots (`store/journal.py`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {"/".join(n.split(".")[1:]) + ".py" for n in names if n.startswith("b24robots.")}
    return found


# the stores of the installations table, one per consumer; what they share is in installation_rows
INSTALLATION_STORES = {
    "store/installations.py",
    "store/portal_tokens.py",
    "store/limiter_state.py",
    "store/registrations.py",
}
# the modules that may import each store besides the composition root: everyone else is not handed it
STORE_CONSUMERS = {
    "store/portal_tokens.py": set(),  # the REST client sees it only as its TokenStore
    "store/limiter_state.py": {"jobs/outbound.py", "web/metrics.py"},  # the REST client's LimiterState
    "store/registrations.py": {"jobs/sync.py", "jobs/trigger_sync.py", "jobs/outbound.py", "portal/install.py"},
}


def test_the_installations_stores_share_only_the_row_mapping() -> None:
    for store in INSTALLATION_STORES:
        siblings = modules_imported_by(SRC / store) & INSTALLATION_STORES
        assert not siblings, f"{store} must not import {sorted(siblings)}: share code in store/installation_rows.py"


def test_each_installations_store_reaches_only_its_consumers() -> None:
    wired = {"web/services.py"} | COMPOSITION_ROOTS
    for path in source_files():
        rel = str(path.relative_to(SRC))
        for store in modules_imported_by(path) & set(STORE_CONSUMERS):
            assert rel in STORE_CONSUMERS[store] | wired, f"{rel} imports {store}, which is not its store"


def test_only_the_web_layer_imports_the_admin_ui() -> None:
    """The CLI reaches forms, diffs and test runs through `authoring`, never through the admin views."""
    offenders = []
    for path in source_files():
        if layer_of(path) == "web":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n.startswith("b24robots.web.admin")]
    assert not offenders, offenders


def test_arrows_have_no_cycles() -> None:
    seen: dict[str, int] = {}

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"cycle: {' -> '.join((*stack, node))}"
        if seen.get(node):
            return
        for dep in ALLOWED[node]:
            visit(dep, (*stack, node))
        seen[node] = 1

    for layer in ALLOWED:
        visit(layer, ())


def test_public_surface() -> None:
    assert sorted(b24robots.__all__) == sorted(
        [
            "Bool",
            "Date",
            "DateTime",
            "Double",
            "File",
            "Int",
            "Param",
            "ParamType",
            "Params",
            "Retry",
            "RobotContext",
            "RobotFailure",
            "RobotSpec",
            "Router",
            "Select",
            "String",
            "Text",
            "User",
            "__version__",
        ]
    )
    for name in b24robots.__all__:
        assert hasattr(b24robots, name), name
