"""`b24robots api-keys ...`: keys for the inbound API (create — shown once —, list, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from b24robots.cli.common import Env, cli_actor, console, default_author, friendly, when
from b24robots.store.apikeys import ApiKeys
from b24robots.store.crypto import Vault
from b24robots.store.installations import Installations

app = typer.Typer(help="API keys for the inbound API (/api/v1/).", no_args_is_help=True)


def _installations(env: Env) -> Installations:
    s = env.settings
    return Installations(
        env.db, Vault.from_settings(s.secret_key.get_secret_value() if s.secret_key else None, s.data_dir)
    )


@app.command("create")
@friendly
def create(
    name: Annotated[str, typer.Argument(help="who uses the key, e.g. '1C accounting'")],
    portal: Annotated[str, typer.Option("--portal", help="domain or member_id of the installation it may fire on")],
    trigger: Annotated[
        list[str] | None, typer.Option(help="a trigger CODE it may fire ('*' = any; repeatable)")
    ] = None,
    template: Annotated[
        list[str] | None, typer.Option(help="a business-process template id it may start ('*' = any; repeatable)")
    ] = None,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    env = Env()
    inst = _installations(env).get(portal)
    key, plaintext = ApiKeys(env.db).create(
        name, inst.id, triggers=trigger or [], templates=template or [], created_by=default_author(), actor=cli_actor()
    )
    console.print(f"API key {key.id} for {inst.domain} ({key.name}); copy it now, it is not shown again:")
    console.print(plaintext, highlight=False, soft_wrap=True)


@app.command("list")
@friendly
def list_keys() -> None:
    """List keys: portal, scope, last use, revoked or not (never the keys themselves)."""
    env = Env()
    table = Table(title="API keys")
    for col in ("id", "name", "key", "portal", "triggers", "templates", "last used", "state"):
        table.add_column(col)
    for k in ApiKeys(env.db).all():
        table.add_row(
            str(k.id),
            k.name,
            k.shown,
            k.domain,
            ", ".join(k.triggers) or "-",
            ", ".join(k.templates) or "-",
            when(k.last_used_at),
            "active" if k.active else f"revoked {when(k.revoked_at)}",
        )
    console.print(table)


@app.command("revoke")
@friendly
def revoke(key_id: Annotated[int, typer.Argument(help="the key's id (see `b24robots api-keys list`)")]) -> None:
    """Revoke a key at once; requests with it are refused from now on."""
    env = Env()
    key = ApiKeys(env.db).revoke(key_id, actor=cli_actor())
    console.print(f"API key {key.id} ({key.name}) is revoked")
