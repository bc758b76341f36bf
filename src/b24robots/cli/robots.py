"""`b24robots robots ...`: the register from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from b24robots.cli.common import Env, cli_actor, console, default_author, fail, friendly, out, when
from b24robots.errors import DeclarationError
from b24robots.robots.params import localize
from b24robots.robots.spec import RobotSpec
from b24robots.sandbox import check_source

app = typer.Typer(help="List, show, export, import and version robots.", no_args_is_help=True)

AppOpt = Annotated[str | None, typer.Option("--app", help="robots' Router import string, module:attribute")]


@app.command("list")
@friendly
def list_robots(app_: AppOpt = None) -> None:
    """List module and stored robots with their active version."""
    env = Env(app_)
    stored = {r.code: r for r in env.register.robots()}
    table = Table(title="Robots")
    for col in ("code", "name", "kind", "source", "active version", "versions", "state"):
        table.add_column(col)
    rows = [(r.spec, "active") for r in env.registry.all()]
    rows += [
        (RobotSpec.from_document(env.register.version(info.code).document), info.state)
        for info in stored.values()
        if info.state != "active"
    ]
    for spec, state in sorted(rows, key=lambda row: row[0].code):
        info = stored.get(spec.code)
        table.add_row(
            escape(spec.code),
            escape(localize(spec.name)),
            spec.kind,
            info.origin if info else "module",
            str(info.active_version) if info else "-",
            str(info.versions) if info else "-",
            state,
        )
    console.print(table)


def _document(env: Env, code: str) -> dict[str, Any]:
    resolved = env.registry.resolve(code)
    trigger = env.registry.trigger(code) if resolved is None else None
    if trigger is not None:
        return {"kind": "trigger", **trigger.to_document()}
    if resolved is None:
        fail(f"no robot or trigger with code {code!r}; see `b24robots robots list` and `b24robots triggers list`")
        raise AssertionError  # unreachable
    doc = resolved.spec.to_document()
    if resolved.stored is not None:
        if resolved.stored.limits:
            doc["limits"] = dict(resolved.stored.limits)
        doc["source"] = resolved.stored.source
    return doc


@app.command()
@friendly
def show(code: str, app_: AppOpt = None) -> None:
    """Show a robot's definition and, for stored robots, its active code."""
    env = Env(app_)
    doc = _document(env, code)
    source = doc.pop("source", None)
    console.print(Syntax(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "yaml"))
    if source is not None:
        console.print(Syntax(source, "python", line_numbers=True))


@app.command()
@friendly
def export(
    codes: Annotated[list[str] | None, typer.Argument(help="robot and trigger CODEs; several give one file")] = None,
    every: Annotated[bool, typer.Option("--all", help="every robot and trigger declared")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or yaml")] = "yaml",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write; default stdout")] = None,
    app_: AppOpt = None,
) -> None:
    """Export robots and triggers as a JSON or YAML document: one CODE gives one document, several (or
    --all) a list of them (robots with bizproc.robot.add field names plus `source`; triggers as
    {kind: trigger, code, name})."""
    if fmt not in ("json", "yaml"):
        fail(f"--format {fmt!r} is unknown; use json or yaml")
    env = Env(app_)
    if every:
        codes = [r.spec.code for r in env.registry.all()] + [t.code for t in env.registry.triggers()]
    if not codes:
        fail("name the robots or triggers to export (CODE ...), or pass --all")
        return
    docs = [_document(env, code) for code in codes]
    body: Any = docs[0] if len(docs) == 1 else docs
    text = (
        json.dumps(body, ensure_ascii=False, indent=2) + "\n"
        if fmt == "json"
        else yaml.safe_dump(body, allow_unicode=True, sort_keys=False)
    )
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        out(text)


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The documents of a file: one mapping, a list of them, or (YAML) several separated by `---`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeclarationError(f"cannot read {path}: {exc.strerror}") from None
    is_json = path.suffix.lower() == ".json"
    try:
        loaded = [json.loads(text)] if is_json else [d for d in yaml.safe_load_all(text) if d is not None]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DeclarationError(f"{path} is not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
    docs = [d for item in loaded for d in (item if isinstance(item, list) else [item])]
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise DeclarationError(f"{path} must hold robot or trigger documents (mappings, or a list of them)")
    return docs


def read_document(path: Path) -> dict[str, Any]:
    docs = read_documents(path)
    if len(docs) != 1:
        raise DeclarationError(f"{path} holds {len(docs)} documents; give one robot document here")
    return docs[0]


@app.command("import")
@friendly
def import_(
    path: Path,
    author: Annotated[str | None, typer.Option(help="version author; default: your user name")] = None,
    comment: Annotated[str, typer.Option(help="version comment")] = "",
    source_file: Annotated[
        Path | None, typer.Option("--source", help="Python file with run(inputs, ctx); overrides `source`")
    ] = None,
    app_: AppOpt = None,
) -> None:
    """Import robot and trigger documents (one, a list, or YAML documents separated by ---); an existing
    CODE gets a new version. Everything is checked before anything is saved."""
    from b24robots.cli.documents import import_documents

    import_documents(path, author=author, comment=comment, source_file=source_file, app=app_)


def save_document(
    path: Path,
    *,
    author: str | None,
    comment: str,
    source_file: Path | None,
    must_exist: bool | None = None,
    expect_code: str | None = None,
) -> None:
    """Save the robot document of `path` (and its `source`, or `source_file`) as a new version.

    `must_exist` True/False refuses a missing/existing robot (edit/add); None accepts both (import).
    Code problems are listed with their lines and nothing is saved.
    """
    env = Env()
    robot = check_robot(env, read_document(path), str(path), source_file, must_exist, expect_code)
    save_robot(env, robot, author=author, comment=comment)


def check_robot(
    env: Env,
    doc: dict[str, Any],
    where: str,
    source_file: Path | None = None,
    must_exist: bool | None = None,
    expect_code: str | None = None,
) -> tuple[RobotSpec, str, Any]:
    """A robot document checked for saving: (spec, source, limits); exits with the problem otherwise."""
    doc = dict(doc)
    source = doc.pop("source", None)
    if source_file is not None:
        try:
            source = source_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {source_file}: {exc.strerror}")
    limits = doc.pop("limits", None)
    spec = RobotSpec.from_document(doc)
    if not isinstance(source, str) or not source.strip():
        fail(
            f"{where}: robot {spec.code} has no `source`; "
            "add the robot code (a run(inputs, ctx) function) or pass --source FILE"
        )
        raise AssertionError  # unreachable
    if expect_code is not None and spec.code != expect_code:
        fail(f"{where} declares robot {spec.code!r}, not {expect_code!r}; the code of a robot cannot change")
    existed = env.register.exists(spec.code)
    if must_exist is False and existed:
        fail(f"robot {spec.code!r} exists already; use `b24robots robots edit {spec.code} {where}`")
    if must_exist is True and not existed:
        fail(f"no stored robot {spec.code!r}; create it with `b24robots robots add {where}`")
    problems = check_source(source)
    if problems:
        for p in problems:
            console.print(f"[red]{escape(spec.code)} line {p.line}:{p.col}:[/red] {escape(p.message)}", highlight=False)
        fail(f"the code of {spec.code} was not saved; fix the problems above")
    return spec, source, limits


def save_robot(env: Env, robot: tuple[RobotSpec, str, Any], *, author: str | None, comment: str) -> None:
    spec, source, limits = robot
    existed = env.register.exists(spec.code)
    before = env.register.version(spec.code).number if existed else 0
    info = env.register.save(spec, source, author=author or default_author(), comment=comment, limits=limits)
    if info.number != before:
        env.audit.record("robot.save", actor=cli_actor(), target=spec.code, details={"version": info.number})
    verb = "updated" if existed else "created"
    console.print(f"{verb} robot [bold]{spec.code}[/bold]: version {info.number} is active")


@app.command()
@friendly
def versions(code: str) -> None:
    """List a stored robot's versions."""
    table = Table(title=f"Versions of {code}")
    for col in ("version", "active", "author", "time", "comment", "hash"):
        table.add_column(col)
    for v in Env().register.versions(code):
        table.add_row(
            str(v.number),
            "✓" if v.active else "",
            v.author,
            when(v.created_at),
            v.comment,
            v.content_hash[:12],
        )
    console.print(table)


@app.command()
@friendly
def activate(code: str, version: int) -> None:
    """Make VERSION the one that runs (use an older one to roll back)."""
    env = Env()
    info = env.register.activate(code, version)
    env.audit.record("robot.activate", actor=cli_actor(), target=code, details={"version": info.number})
    console.print(f"robot [bold]{code}[/bold]: version {info.number} is active")
