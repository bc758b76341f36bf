"""`b24robots syncs list`: the journal of syncs (what each sync planned, made and skipped)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from b24robots.cli.common import Env, console, fail, friendly, when
from b24robots.store.crypto import Vault
from b24robots.store.installations import Installations
from b24robots.store.syncs import SyncLog

app = typer.Typer(
    help="The journal of syncs: what each sync of a portal planned, made and skipped.", no_args_is_help=True
)


@app.command("list")
@friendly
def syncs_list(
    portal: Annotated[str | None, typer.Option(help="only this portal (domain or member_id)")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    changes: Annotated[bool, typer.Option("--changes", help="list each change under its sync")] = False,
) -> None:
    """The recent syncs, newest first: when, who started it, the outcome and the changes."""
    if limit < 1:
        fail("--limit must be at least 1")
    env = Env()
    installation_id = None
    if portal:
        secret = env.settings.secret_key.get_secret_value() if env.settings.secret_key else None
        installation_id = Installations(env.db, Vault.from_settings(secret, env.settings.data_dir)).get(portal).id
    entries = SyncLog(env.db).recent(installation_id, limit)
    if not entries:
        console.print("no syncs recorded yet; b24robots sync registers the robots on every portal")
        return
    table = Table(title="Syncs")
    for col in ("started", "portal", "by", "result", "changes"):
        table.add_column(col)
    for e in entries:
        result = f"error: {e.error}" if e.error else ("dry run" if e.dry_run else "ok")
        detail = e.summary
        if changes:
            lines = [
                f"{c['action']} {c['kind']} {c['code']}"
                + ("" if c.get("done") or c["action"] in ("keep", "skip") or e.dry_run else " (not made)")
                + (f" - {c['note']}" if c.get("note") else "")
                for c in e.changes
            ]
            detail = "\n".join([detail, *lines, *e.warnings])
        table.add_row(when(e.started_at), e.domain, e.origin, escape(result), escape(detail))
    console.print(table)
