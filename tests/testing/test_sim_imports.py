"""The simulator depends only on the form codec, the error module and its web stack."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import b24robots.testing

ALLOWED_PROJECT = ("b24robots.errors", "b24robots.inbound", "b24robots.testing")
ALLOWED_THIRD_PARTY = {"starlette", "fastapi", "httpx", "uvicorn", "jinja2"}
PLUGIN_ONLY = {"pytest"}  # the pytest plugin module may import pytest
# plugin.py and app_fixtures.py wire our whole server to the simulator: they are composition roots,
# checked by tests/test_architecture.py instead
SIMULATOR_MODULES = [
    "__init__", "_util", "asgi", "clock", "faults", "limits", "model", "registration",
    "restapi", "server", "signing", "simulator", "values", "webui",
]  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_simulator_imports_stay_inside_the_allowed_set() -> None:
    package = Path(b24robots.testing.__file__).parent
    for path in (package / f"{name}.py" for name in SIMULATOR_MODULES):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "b24robots":
                assert name.startswith(ALLOWED_PROJECT), f"{path.name} imports {name}"
            elif top not in sys.stdlib_module_names and top != "__future__":
                allowed = ALLOWED_THIRD_PARTY | (PLUGIN_ONLY if path.name == "plugin.py" else set())
                assert top in allowed, f"{path.name} imports {name}"
