"""`b24robots admin ...`: the admin users of the web UI."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from b24robots.cli.common import Env, cli_actor, console, fail, friendly, when
from b24robots.store.users import Users

app = typer.Typer(help="Admin users of the web UI (sign-in at /admin).", no_args_is_help=True)

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from the first line of standard input")
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("create-user")
@friendly
def create_user(name: str, password_stdin: PasswordStdin = False) -> None:
    """Create an admin user; asks for the password twice unless --password-stdin."""
    user = Users(Env().db).create(name, _password(password_stdin), actor=cli_actor())
    console.print(f"created admin user [bold]{user.username}[/bold]; sign in at /admin")


@app.command("list-users")
@friendly
def list_users() -> None:
    """List admin users with their last sign-in."""
    table = Table(title="Admin users")
    for col in ("user", "created", "last sign-in"):
        table.add_column(col)
    for u in Users(Env().db).all():
        table.add_row(u.username, when(u.created_at), when(u.last_login_at))
    console.print(table)


@app.command("delete-user")
@friendly
def delete_user(
    name: str, yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False
) -> None:
    """Delete an admin user; their open sessions end at once."""
    if not yes and not typer.confirm(f"Delete admin user {name}?"):
        fail("nothing deleted")
    Users(Env().db).delete(name, actor=cli_actor())
    console.print(f"deleted admin user {name}")


@app.command("set-password")
@friendly
def set_password(name: str, password_stdin: PasswordStdin = False) -> None:
    """Set a new password for an admin user; their open sessions end."""
    Users(Env().db).set_password(name, _password(password_stdin), actor=cli_actor())
    console.print(f"password of {name} changed; their sessions ended")


@app.command("sign-out")
@friendly
def sign_out(name: str) -> None:
    """End every session of NAME on every browser (e.g. after a lost laptop)."""
    ended = Users(Env().db).end_all_sessions(name, actor=cli_actor())
    console.print(f"ended {ended} session(s) of {name}")


@app.command("login-link")
@friendly
def login_link(name: str) -> None:
    """Print a one-time login link for NAME (valid 10 minutes, works once)."""
    env = Env()
    token = Users(env.db).issue_link_token(name, actor=cli_actor())
    console.print(f"{env.settings.public_url}/admin/login/link/{token}", highlight=False, soft_wrap=True)
