"""The `b24robots` command line: a thin skin over the library."""

from __future__ import annotations

import typer

from b24robots import __version__
from b24robots.cli import (
    admin,
    apikeys,
    connections_cmd,
    demo,
    ops,
    robot_state,
    robots,
    robots_extra,
    syncs_cmd,
    triggers,
)

app = typer.Typer(
    help="b24robots: custom Bitrix24 robots whose logic runs in Python.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
robots_extra.register(robots.app)
robot_state.register(robots.app)
app.add_typer(robots.app, name="robots")
app.add_typer(admin.app, name="admin")
app.add_typer(connections_cmd.app, name="connections")
app.add_typer(triggers.app, name="triggers")
app.add_typer(apikeys.app, name="api-keys")
app.command()(demo.demo)
app.command()(ops.serve)
app.command()(ops.worker)
app.command()(ops.sync)
app.add_typer(ops.journal_app, name="journal")
app.command()(ops.portal)
app.add_typer(ops.installations_app, name="installations")
app.add_typer(ops.jobs_app, name="jobs")
app.add_typer(syncs_cmd.app, name="syncs")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
