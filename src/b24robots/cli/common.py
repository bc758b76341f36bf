"""What every command needs: settings, the database, the register and the router, built lazily."""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from b24robots.config import Settings, load_settings
from b24robots.errors import B24RobotsError
from b24robots.loader import load_router
from b24robots.robots.registry import Registry
from b24robots.robots.router import Router
from b24robots.store.audit import Audit
from b24robots.store.db import Database, private_dir
from b24robots.store.register import Register
from b24robots.store.trigger_register import TriggerRegister

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


class Env:
    """The composition root of the command line."""

    def __init__(self, app: str | None = None) -> None:
        self._app = app

    @functools.cached_property
    def settings(self) -> Settings:
        return load_settings()

    @functools.cached_property
    def db(self) -> Database:
        if not self.settings.database_url:
            private_dir(self.settings.data_dir)
        db = Database(self.settings.effective_database_url)
        db.migrate()
        return db

    @functools.cached_property
    def audit(self) -> Audit:
        return Audit(self.db)

    @functools.cached_property
    def register(self) -> Register:
        return Register(self.db)

    @functools.cached_property
    def trigger_register(self) -> TriggerRegister:
        return TriggerRegister(self.db)

    @functools.cached_property
    def router(self) -> Router:
        return load_router(self._app if self._app is not None else self.settings.app)

    @functools.cached_property
    def registry(self) -> Registry:
        return Registry(self.router, self.register, self.trigger_register)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn our own errors into one red line and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except B24RobotsError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper


def default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "cli"


def cli_actor() -> str:
    """Who made a change from the command line, for the audit log."""
    return f"cli:{default_author()}"


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def iso(ts: float | None) -> str:
    """A time as ISO 8601 with the local zone's offset, e.g. 2026-12-02T21:05:09+03:00 ("-" when unset)."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds") if ts else "-"


def fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(2)


def out(text: Any) -> None:
    sys.stdout.write(text if isinstance(text, str) else str(text))
