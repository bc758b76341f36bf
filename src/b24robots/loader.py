"""Load the robots' Router (or App) from an import string such as `myproject.robots:router`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from b24robots.errors import ConfigError
from b24robots.robots.router import Router


def load_router(target: str) -> Router:
    """Import `module:attribute`; the attribute is a Router or has a `.router`. Empty -> an empty Router."""
    if not target:
        return Router()
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{target!r} is not an import string; write it as module:attribute, e.g. robots:router")
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # like uvicorn: modules in the working directory are importable
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} ({exc}); check the module path and PYTHONPATH") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, Router):
        return obj
    router = getattr(obj, "router", None)
    if isinstance(router, Router):
        return router
    raise ConfigError(f"{target} is a {type(obj).__name__}, not a b24robots Router or App")
