"""`b24robots connections ...`: list, add, change, test and remove connections (global or per portal)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from b24robots.cli.common import Env, cli_actor, console, fail, friendly, when
from b24robots.connections.config import DEFAULTS, HELP, SECRETS
from b24robots.connections.hub import ConnectionHub
from b24robots.store.connections import ConnectionStore
from b24robots.store.crypto import Vault
from b24robots.store.installations import Installations

app = typer.Typer(help="Connections robots use by name: HTTP APIs, 1C (OData) and SQL databases.", no_args_is_help=True)

PortalOpt = Annotated[
    str, typer.Option("--portal", help="a portal's domain or member_id: values for that installation only")
]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="a setting as key=value (repeatable)")]
SecretOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--secret",
        help="a secret: KEY reads its value from standard input (one line per key), KEY=VALUE takes it inline",
    ),
]


class _Parts:
    def __init__(self, env: Env) -> None:
        s = env.settings
        self.vault = Vault.from_settings(s.secret_key.get_secret_value() if s.secret_key else None, s.data_dir)
        self.store = ConnectionStore(env.db, self.vault)
        self.installations = Installations(env.db, self.vault)
        self.env = env

    def member(self, portal: str) -> tuple[str, str]:
        """(member_id, domain) of --portal; ('', '') for the global values."""
        if not portal:
            return "", ""
        inst = self.installations.get(portal)
        return inst.member_id, inst.domain

    def domains(self) -> dict[str, str]:
        return {i.member_id: i.domain for i in self.installations.all()}

    def users(self, name: str) -> list[str]:
        return [r.spec.code for r in self.env.registry.all() if name in r.spec.connections]


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{what} {item!r} must be key=value")
        out[key.strip()] = value
    return out


def _secrets(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            line = sys.stdin.readline()
            if not line:
                fail(f"--secret {key}: no value on standard input; pipe it in (echo ... | b24robots connections ...)")
            value = line.rstrip("\n")
        out[key.strip()] = value
    return out


@app.command("list")
@friendly
def list_connections(portal: PortalOpt = "") -> None:
    """List connections: kind, where the values apply, settings (secrets masked) and which robots use them."""
    parts = _Parts(Env())
    member, _ = parts.member(portal)
    domains = parts.domains()
    table = Table(title="Connections")
    for col in ("name", "kind", "values for", "settings", "secrets", "used by", "changed"):
        table.add_column(col)
    for info in parts.store.all():
        if member and info.member_id not in ("", member):
            continue
        shown = ", ".join(f"{k}={v}" for k, v in info.shown.items() if k not in info.secrets_set)
        table.add_row(
            info.name,
            info.kind,
            domains.get(info.member_id, info.member_id) if info.member_id else "all portals",
            shown or "-",
            ", ".join(f"{k}=********" for k in info.secrets_set) or "-",
            ", ".join(parts.users(info.name)) if not info.member_id else "",
            when(info.updated_at),
        )
    console.print(table)


@app.command("add")
@friendly
def add(
    name: str,
    kind: Annotated[str, typer.Option("--kind", help="http, 1c or sql")],
    settings: SetOpt = None,
    secret: SecretOpt = None,
    portal: PortalOpt = "",
) -> None:
    """Add a connection (or a portal's first values for an existing one).

    Settings per kind: http base_url, auth, username, headers, verify, ca_bundle, max_bytes ...;
    1c base_url (…/odata/standard.odata/), username; sql url, read_only, row_limit. Every kind: timeout,
    concurrency, rate, burst, log_bodies. See docs/connections.md.
    """
    parts = _Parts(Env())
    member, domain = parts.member(portal)
    info = parts.store.add(name, kind, _pairs(settings, "--set"), _secrets(secret), member_id=member, actor=cli_actor())
    console.print(f"added {info.kind} connection {info.name}" + (f" for {domain}" if domain else ""))


@app.command("set")
@friendly
def set_values(
    name: str,
    settings: SetOpt = None,
    secret: SecretOpt = None,
    clear: Annotated[list[str] | None, typer.Option("--clear", help="remove a setting or secret (repeatable)")] = None,
    portal: PortalOpt = "",
) -> None:
    """Change a connection's values; with --portal, that installation's overriding values."""
    parts = _Parts(Env())
    member, domain = parts.member(portal)
    info = parts.store.set(
        name, _pairs(settings, "--set"), _secrets(secret), member_id=member, clear=clear or [], actor=cli_actor()
    )
    console.print(f"changed connection {info.name}" + (f" for {domain}" if domain else ""))


@app.command("test")
@friendly
def test(name: str, portal: PortalOpt = "") -> None:
    """Check a connection works: base URL reachable, 1C `$metadata`, SQL `select 1`."""
    parts = _Parts(Env())
    member, domain = parts.member(portal)
    config = parts.store.resolve(name, member)
    if config is None:
        fail(f"no connection named {name!r}; see `b24robots connections list`")
        return
    hub = ConnectionHub(parts.store)
    try:
        console.print(f"{name}: ok, {hub.test(config)}" + (f" (values for {domain})" if domain else ""))
    finally:
        hub.close()


@app.command("remove")
@friendly
def remove(
    name: str,
    portal: PortalOpt = "",
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Remove a connection (refused while a robot declares it), or with --portal only that portal's values."""
    parts = _Parts(Env())
    member, domain = parts.member(portal)
    what = f"the values of {name} for {domain}" if domain else f"connection {name}"
    if not yes and not typer.confirm(f"remove {what}?"):
        raise typer.Exit(1)
    parts.store.remove(name, member_id=member, users=parts.users(name), actor=cli_actor())
    console.print(f"removed {what}")


@app.command("kinds")
def kinds() -> None:
    """Show the settings and secrets of each kind."""
    for kind, defaults in DEFAULTS.items():
        console.print(f"[bold]{kind}[/bold]")
        for key, default in defaults.items():
            shown = "required" if default is None else f"default {default!r}"
            console.print(f"  {key:<12} {HELP.get(key, '')} ({shown})", highlight=False)
        for key in SECRETS[kind]:
            console.print(f"  {key:<12} {HELP.get(key, '')}", highlight=False)
