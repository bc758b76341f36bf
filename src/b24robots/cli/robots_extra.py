"""More `b24robots robots ...` commands, the CLI twins of the admin UI: add, edit, diff, test-run, adopt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from b24robots import authoring
from b24robots.cli.common import Env, cli_actor, console, default_author, fail, friendly
from b24robots.cli.robots import AppOpt, save_document
from b24robots.errors import DeclarationError
from b24robots.sandbox import SandboxPool

Author = Annotated[str | None, typer.Option(help="version author; default: your user name")]
Comment = Annotated[str, typer.Option(help="version comment")]
SourceOpt = Annotated[
    Path | None, typer.Option("--source", help="Python file with run(inputs, ctx); overrides `source`")
]


def add(path: Path, author: Author = None, comment: Comment = "", source_file: SourceOpt = None) -> None:
    """Create a stored robot from a document (like `import`, but refuses an existing CODE)."""
    friendly(save_document)(path, author=author, comment=comment, source_file=source_file, must_exist=False)


def edit(code: str, path: Path, author: Author = None, comment: Comment = "", source_file: SourceOpt = None) -> None:
    """Save a new version of stored robot CODE from a document."""
    friendly(save_document)(
        path, author=author, comment=comment, source_file=source_file, must_exist=True, expect_code=code
    )


@friendly
def diff(code: str, a: int, b: int) -> None:
    """Show what changed from version A to version B of a stored robot."""
    register = Env().register
    lines = authoring.diff_versions(register.version(code, a), register.version(code, b))
    if not lines:
        console.print(f"versions {a} and {b} of {code} are the same")
        return
    console.print(Syntax("\n".join(line.text for line in lines), "diff", word_wrap=True))


def test_run(
    code: str,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="an input value as key=value; repeat for more")
    ] = None,
    document: Annotated[str, typer.Option(help="document id the robot sees, e.g. DEAL_7")] = "DEAL_1",
    app_: AppOpt = None,
) -> None:
    """Run a robot once with sample inputs; no portal is called (REST calls fail with a clear error)."""

    @friendly
    def go() -> None:
        env = Env(app_)
        resolved = env.registry.resolve(code)
        if resolved is None:
            fail(f"no robot with code {code!r}; see `b24robots robots list`")
            return
        given: dict[str, str] = {}
        for item in inputs or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise DeclarationError(f"--input {item!r} must look like key=value")
            given[key.strip()] = f"{given[key.strip()]}\n{value}" if key.strip() in given else value
        pool = SandboxPool(size=1) if resolved.stored is not None else None
        try:
            result = asyncio.run(authoring.test_run(resolved, given, pool, document_id=document))
        finally:
            if pool is not None:
                pool.close()
        table = Table(title=f"{code}: {'succeeded' if result.ok else 'failed'} in {result.duration_ms:.1f} ms")
        table.add_column("output")
        table.add_column("value")
        for key, value in result.outputs.items():
            table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
        console.print(table)
        for line in result.log:
            console.print(f"[dim]log:[/dim] {escape(line)}", highlight=False)
        if not result.ok:
            fail(result.error)

    go()


@friendly
def adopt(
    code: str,
    app_: AppOpt = None,
    author: Author = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write the code to this file instead of saving it")
    ] = None,
) -> None:
    """Copy module robot CODE into the register; the stored version then runs instead of the module code."""
    env = Env(app_)
    module = env.router.get(code)
    if module is None:
        fail(f"no module robot {code!r} in the app; pass --app module:router")
        return
    adoption = authoring.adopt_source(module)
    if output is not None:
        output.write_text(adoption.source, encoding="utf-8")
        console.print(f"wrote {output} ({adoption.note})")
        return
    if not adoption.converted:
        fail(
            f"robot {code} cannot be converted automatically ({adoption.note}); write a template with "
            f"`b24robots robots adopt {code} -o FILE`, finish it and save it with `b24robots robots add`"
        )
    if env.register.exists(code):
        fail(f"robot {code!r} is in the register already; edit it there")
    info = env.register.save(
        module.spec, adoption.source, author=author or default_author(), comment="adopted from the module robot",
        origin="adopted",
    )  # fmt: skip
    env.audit.record("robot.adopt", actor=cli_actor(), target=code, details={"version": info.number})
    console.print(f"adopted [bold]{code}[/bold]: stored version {info.number} now runs instead of the module code")


def register(robots_app: typer.Typer) -> None:
    """Add these commands to `b24robots robots`."""
    robots_app.command("add")(add)
    robots_app.command("edit")(edit)
    robots_app.command("diff")(diff)
    robots_app.command("test-run")(test_run)
    robots_app.command("adopt")(adopt)
