"""`b24robots robots disable|enable|delete CODE`: take a stored robot out of service or back.

Each asks for confirmation (`--yes` for scripts), is written to the audit log, and then syncs that
robot on every active portal, so a disabled or deleted robot is unregistered (and an enabled one
registered again) right away.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.markup import escape

from b24robots.cli.common import cli_actor, console, fail, friendly
from b24robots.config import load_settings
from b24robots.loader import load_router
from b24robots.store.register import ACTIVE, DELETED, DISABLED

Yes = Annotated[bool, typer.Option("--yes", help="do it without asking (for scripts)")]

QUESTIONS = {
    DISABLED: "Disable {code}? It stays in the register, is unregistered from every portal, and calls that "
    "still arrive are answered with a log line saying it is disabled.",
    DELETED: "Delete {code}? It is unregistered from every portal; its versions are kept as history and the "
    "code can be used again.",
}
DONE = {ACTIVE: "enabled", DISABLED: "disabled", DELETED: "deleted"}


def _interactive() -> bool:
    return sys.stdin.isatty()


def _change(code: str, state: str, yes: bool) -> None:
    from b24robots.web.services import build_services

    settings = load_settings()
    svc = build_services(settings, load_router(settings.app))
    current = svc.register.state(code)
    if current is None or current == DELETED:
        fail(f"no stored robot with code {code!r}; see `b24robots robots list`")
    if current == state:
        console.print(f"{escape(code)} is {DONE[state]} already", highlight=False)
        return
    question = QUESTIONS.get(state)
    if question and not yes:
        if not _interactive():
            fail(f"{code} not {DONE[state]}: the input is not a terminal, so nobody can confirm; add --yes")
        if not typer.confirm(question.format(code=code), default=False):
            console.print("nothing changed", highlight=False)
            return
    svc.register.set_state(code, state, actor=cli_actor())
    console.print(f"{escape(code)} {DONE[state]}", highlight=False)

    async def resync() -> int:
        failed = 0
        try:
            for report in await svc.sync_robot(code):
                made = [f"{c.action} {c.code}" for c in report.changes if c.action in ("add", "update", "delete")]
                if report.error:
                    failed += 1
                    console.print(
                        f"[red]{escape(report.domain)}: not synced:[/red] {escape(report.error)}; "
                        "run `b24robots sync` when the portal answers",
                        highlight=False,
                        soft_wrap=True,
                    )
                else:
                    console.print(f"{escape(report.domain)}: {escape(', '.join(made) or 'in step')}", highlight=False)
        finally:
            await svc.rest.aclose()
            await svc.http.aclose()
        return failed

    if asyncio.run(resync()):
        raise typer.Exit(1)


@friendly
def disable(code: str, yes: Yes = False) -> None:
    """Disable stored robot CODE: kept in the register, unregistered from portals, calls answered."""
    _change(code, DISABLED, yes)


@friendly
def enable(code: str) -> None:
    """Enable stored robot CODE again and register it on portals."""
    _change(code, ACTIVE, True)


@friendly
def delete(code: str, yes: Yes = False) -> None:
    """Delete stored robot CODE: unregistered from portals; its versions stay as history."""
    _change(code, DELETED, yes)


def register(robots_app: typer.Typer) -> None:
    """Add these commands to `b24robots robots`."""
    robots_app.command("disable")(disable)
    robots_app.command("enable")(enable)
    robots_app.command("delete")(delete)
