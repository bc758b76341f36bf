"""Running the server and operating it: serve, worker, sync, installations, journal, jobs."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

from b24robots.cli.common import Env, cli_actor, console, fail, friendly, iso, when
from b24robots.config import Settings, load_settings, public_url_known, remember_served_url
from b24robots.jobs.sync import Change
from b24robots.loader import load_router
from b24robots.logs import setup_logging
from b24robots.store.installations import Installations
from b24robots.store.journal import STATES, Invocation, Journal

AppArg = Annotated[str | None, typer.Argument(help="the robots' Router or App as module:attribute (like uvicorn)")]


def serve(
    app: AppArg = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[bool, typer.Option(help="run workers and the sender in this process")] = True,
) -> None:
    """Run the web app, workers and sender in one process (SQLite by default)."""

    from b24robots.web.app import create_app
    from b24robots.web.server import Server, server_config

    settings = load_settings(follow_served=False).listening_on(host, port)
    setup_logging(settings.log_level)
    try:
        router = load_router(app if app is not None else settings.app)
        web = create_app(settings, router, run_workers=workers)
    except Exception as exc:
        fail(str(exc))
        return
    remember_served_url(settings)
    console.print(
        f"b24robots on {settings.public_url}  database: {settings.masked()['database_url']}  "
        f"handler: {settings.handler_url}",
        highlight=False,
    )
    for line in start_notes(settings):
        console.print(line, highlight=False, soft_wrap=True)
    Server(server_config(web, settings, host=host, port=port)).run()


def start_notes(settings: Settings) -> list[str]:
    """What a fresh server still needs, said at start-up: credentials, then the next steps."""
    notes: list[str] = []
    if not settings.client_id or not settings.client_secret.get_secret_value():
        notes.append(
            "[yellow]![/yellow] B24R_CLIENT_ID / B24R_CLIENT_SECRET are not set: installs from Bitrix24 will be "
            "refused. Set them to your application's credentials (Bitrix24: Developer resources -> "
            "Other -> Local application, or your Marketplace app)."
        )
    if not settings.public_url_is_set:
        notes.append(
            f"  B24R_PUBLIC_URL is not set: using {settings.public_url}; a portal must reach the server at "
            "its public https address, so set it before installing."
        )
    notes += [
        "Next steps:",
        "  1. create an admin:   b24robots admin create-user NAME   (or: b24robots admin login-link NAME)",
        f"  2. open the admin UI: {settings.public_url}/admin/",
        f"  3. in Bitrix24 set the install URL {settings.public_url}/b24/install "
        f"and the event URL {settings.public_url}/b24/events",
    ]
    return notes


def worker(app: AppArg = None) -> None:
    """Run workers and the sender only (scale-out on PostgreSQL: start as many as you like)."""
    from b24robots.web.server import settle_heap
    from b24robots.web.services import build_services

    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        svc = build_services(settings, load_router(app if app is not None else settings.app))
    except Exception as exc:
        fail(str(exc))
        return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await svc.start(workers=True, role="worker")
        settle_heap()
        console.print(f"worker {svc.worker.owner if svc.worker else ''} running; Ctrl+C stops it gracefully")
        await stop.wait()
        await svc.stop()

    asyncio.run(main())


def sync(
    portal: Annotated[str | None, typer.Option(help="domain or member_id; default: every active portal")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the changes without making them")] = False,
    app: Annotated[str | None, typer.Option("--app", help="robots' Router, module:attribute")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="make the deletions without asking (for scripts)")] = False,
) -> None:
    """Register, update and delete robots on portals so they match this server.

    Deletions are listed apart and asked for (--yes for scripts); only robots this server registered
    are ever deleted, and module robots only when the robots module is loaded (B24R_APP or --app).
    """
    from b24robots.web.services import build_services

    @friendly
    def go() -> None:
        settings = load_settings()
        if not public_url_known(settings):
            # the handler URL is part of every registration: syncing with the default would re-point
            # each portal's robots at this machine's loopback address
            fail(
                f"B24R_PUBLIC_URL is not set (and no server ran from {settings.data_dir}), so sync would "
                f"point every portal's robots at {settings.handler_url}; set B24R_PUBLIC_URL to the URL "
                "Bitrix24 calls, e.g. B24R_PUBLIC_URL=https://robots.example.com, and run sync again"
            )
        svc = build_services(settings, load_router(app if app is not None else settings.app))

        async def run() -> int:
            targets = [svc.installations.get(portal)] if portal else [i for i in svc.installations.all() if i.active]
            if not targets:
                console.print("no active installations; install the application on a portal first")
                return 0
            failures = 0
            for inst in targets:
                planned = await svc.syncer.sync(inst.member_id, dry_run=True, origin="cli", record=dry_run)
                if planned.error:
                    failures += 1
                    console.print(f"[red]sync of {escape(inst.domain)} failed:[/red] {escape(planned.error)}")
                    continue
                _print_plan(inst.domain, planned.changes, dry_run)
                for warning in planned.warnings:
                    console.print(f"[yellow]{escape(inst.domain)}:[/yellow] {escape(warning)}", soft_wrap=True)
                if dry_run:
                    continue
                deletes = [c for c in planned.changes if c.action == "delete"]
                allowed = _confirm_deletes(inst.domain, deletes, yes)
                if deletes and not allowed:
                    failures += 1
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task(f"{inst.domain}", total=None)
                    report = await svc.syncer.sync(
                        inst.member_id,
                        on_plan=functools.partial(_planned, progress, task),
                        progress=functools.partial(_advance, progress, task),
                        confirm=_allowing(allowed),
                        origin="cli",
                    )
                if report.error:
                    failures += 1
                    console.print(f"[red]sync of {escape(inst.domain)} failed:[/red] {escape(report.error)}")
                    continue
                counts = {a: sum(1 for c in report.changes if c.action == a) for a in ("add", "update", "delete")}
                kept = sum(1 for c in report.changes if c.action == "keep")
                console.print(
                    f"{escape(inst.domain)}: {counts['add']} added, {counts['update']} updated, "
                    f"{counts['delete']} deleted" + (f", {kept} kept" if kept else ""),
                    highlight=False,
                )
            await svc.rest.aclose()
            await svc.http.aclose()
            return failures

        if asyncio.run(run()):
            raise typer.Exit(1)

    go()


def _print_plan(domain: str, changes: list[Change], dry_run: bool) -> None:
    """The plan, with the deletions in a table of their own (they are what breaks workflows)."""
    suffix = " (dry run)" if dry_run else ""
    others = [c for c in changes if c.action != "delete"]
    deletes = [c for c in changes if c.action == "delete"]
    if not changes:
        console.print(f"{escape(domain)}{suffix}: nothing to change", highlight=False)
        return
    if others:
        table = Table(title=f"{escape(domain)}{suffix}")
        for col in ("action", "kind", "code", "note"):
            table.add_column(col, overflow="fold")
        for change in others:
            table.add_row(change.action, change.kind, escape(change.code), escape(change.note))
        console.print(table)
    if deletes:
        table = Table(title=f"{escape(domain)}{suffix}: deletions", title_style="bold red")
        for col in ("kind", "code", "why"):
            table.add_column(col, overflow="fold")
        for change in deletes:
            table.add_row(change.kind, escape(change.code), escape(change.note))
        console.print(table)
        if dry_run:
            console.print("deleting asks first (or pass --yes)", highlight=False)


def _allowing(allowed: set[tuple[str, str]]) -> Callable[[list[Change]], bool]:
    """Confirm the sync's deletions only when each was shown and agreed to (the portal may have moved)."""
    return lambda deletes: {(c.kind, c.code) for c in deletes} <= allowed


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm_deletes(domain: str, deletes: list[Change], yes: bool) -> set[tuple[str, str]]:
    """The (kind, code) deletions allowed on `domain`: all with --yes or a yes at the prompt, else none."""
    if not deletes:
        return set()
    wanted = {(c.kind, c.code) for c in deletes}
    if yes:
        return wanted
    if not _interactive():
        console.print(
            f"[yellow]{escape(domain)}:[/yellow] {len(deletes)} deletion(s) not made: the input is not a "
            "terminal, so nobody can confirm them; run again with --yes to delete them",
            highlight=False,
            soft_wrap=True,
        )
        return set()
    if typer.confirm(f"Delete {len(deletes)} robot(s)/trigger(s) from {domain}?", default=False):
        return wanted
    console.print(f"{escape(domain)}: deletions skipped; the rest is synced", highlight=False)
    return set()


def _planned(progress: Progress, task: TaskID, changes: list[Change]) -> None:
    progress.update(task, total=max(1, len(changes)))


def _advance(progress: Progress, task: TaskID, _change: object) -> None:
    progress.advance(task)


def portal(
    port: Annotated[int, typer.Option(help="port to listen on")] = 8800,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    rate: Annotated[float, typer.Option(help="REST requests per second each portal allows")] = 2.0,
    burst: Annotated[int, typer.Option(help="the leaky bucket's size")] = 50,
    portals: Annotated[int, typer.Option(help="how many portals to simulate")] = 1,
    client_id: Annotated[str | None, typer.Option(help="register a local app with this client_id")] = None,
    client_secret: Annotated[str | None, typer.Option(help="its client_secret (generated if omitted)")] = None,
    install_url: Annotated[
        str | None, typer.Option(help="the app's install URL, e.g. http://127.0.0.1:8000/b24/install")
    ] = None,
) -> None:
    """Run the Bitrix24 portal simulator (open /sim/ in a browser to click through robots)."""
    from b24robots.cli.portal_cmd import run_portal

    friendly(run_portal)(
        host,
        port,
        rate,
        burst,
        client_id,
        client_secret=client_secret,
        install_url=install_url,
        portals=portals,
    )


installations_app = typer.Typer(help="Portals that installed the application.", no_args_is_help=True)


@installations_app.command("list")
@friendly
def installations_list() -> None:
    """List installations with status, token health, limits and last sync."""
    env = Env()
    from b24robots.store.crypto import Vault

    vault = Vault.from_settings(
        env.settings.secret_key.get_secret_value() if env.settings.secret_key else None, env.settings.data_dir
    )
    table = Table(title="Installations")
    for col in ("domain", "member_id", "status", "token", "rate limit", "last sync", "sync result"):
        table.add_column(col)
    now = time.time()
    for inst in Installations(env.db, vault).all():
        token = "expired (refreshed on next call)" if inst.expires_at < now else f"valid until {when(inst.expires_at)}"
        status = inst.status if not inst.status_message else f"{inst.status}: {inst.status_message}"
        table.add_row(
            inst.domain,
            inst.member_id[:8] + "…",
            status,
            token,
            f"{inst.rate:g}/s burst {inst.burst}",
            when(inst.synced_at),
            inst.sync_status + (f" ({inst.sync_error})" if inst.sync_error else ""),
        )
    console.print(table)


@installations_app.command("limits")
@friendly
def installations_limits(portal: str, rate: float, burst: int) -> None:
    """Set a portal's REST rate limit (e.g. Enterprise: 5 50→250)."""
    env = Env()
    from b24robots.store.crypto import Vault

    vault = Vault.from_settings(
        env.settings.secret_key.get_secret_value() if env.settings.secret_key else None, env.settings.data_dir
    )
    inst = Installations(env.db, vault).set_limits(portal, rate, burst)
    console.print(f"{inst.domain}: {inst.rate:g} requests/s, burst {inst.burst}")


@installations_app.command("culture")
@friendly
def installations_culture(
    portal: Annotated[str, typer.Argument(help="portal domain or member_id")],
    culture: Annotated[str, typer.Argument(help="ru, de, en, fr, es, br, la, it, or auto (the portal's language)")],
) -> None:
    """Set how a portal's dates are read (e.g. `de` for DD.MM.YYYY, `en` for MM/DD/YYYY, `auto`)."""
    env = Env()
    from b24robots.store.crypto import Vault

    vault = Vault.from_settings(
        env.settings.secret_key.get_secret_value() if env.settings.secret_key else None, env.settings.data_dir
    )
    inst = Installations(env.db, vault).set_culture(portal, culture)
    source = "override" if inst.culture else f"portal language {inst.language or 'not known yet'}"
    console.print(f"{inst.domain}: dates read as {inst.date_culture.describe()} ({source})")


journal_app = typer.Typer(help="Show the journal of robot calls (newest first), or prune it.")


@journal_app.callback(invoke_without_command=True)
def journal(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help=f"one of: {', '.join(STATES)}")] = None,
    robot: Annotated[str | None, typer.Option(help="robot code")] = None,
    portal: Annotated[str | None, typer.Option(help="portal domain or member_id")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Show the journal of robot calls, newest first."""
    if ctx.invoked_subcommand is not None:
        return

    @friendly
    def go() -> None:
        if status and status not in STATES:
            fail(f"--status {status!r} is unknown; use one of: {', '.join(STATES)}")
        env = Env()
        installation_id = None
        if portal:
            from b24robots.store.models import InstallationRow

            with env.db.read() as s:
                from sqlalchemy import or_, select

                installation_id = s.scalar(
                    select(InstallationRow.id).where(
                        or_(InstallationRow.domain == portal, InstallationRow.member_id == portal)
                    )
                )
            if installation_id is None:
                fail(f"no installation for {portal!r}; see `b24robots installations list`")
        rows = Journal(env.db).recent(state=status, robot=robot, installation_id=installation_id, limit=limit)
        if as_json:  # one object per line; every time twice: `<name>_epoch` (unix seconds) and `<name>_utc`
            for inv in rows:
                doc = {k: v for k, v in inv.__dict__.items() if k != "properties"}
                print(json.dumps(_epoch_and_utc(doc), ensure_ascii=False, default=str))
            return
        if console.is_terminal and console.width >= WIDE:
            console.print(_journal_table(rows))
        elif console.is_terminal:
            _journal_lines(rows)
        else:  # piped: one tab-separated line per entry, whole texts, times with their zone
            print("\t".join(("id", "received", "robot", "document", "state", "attempts", "run_ms", "error")))
            for inv in rows:
                first = inv.error.splitlines()[0] if inv.error else ""
                cells = (str(inv.id), iso(inv.received_at), inv.robot_code, _document(inv), inv.state)
                print("\t".join((*cells, str(inv.attempts), _run_ms(inv), first)))

    go()


def utc(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. 2026-12-03T08:01:08.123Z."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_and_utc(doc: dict[str, Any]) -> dict[str, Any]:
    """Each `*_at` time as `*_at_epoch` (unix seconds, null when unset) and `*_at_utc` (ISO 8601 UTC),
    in the attempts too."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if k.endswith("_at") and (v is None or isinstance(v, int | float)):
            out[f"{k}_epoch"] = v
            out[f"{k}_utc"] = utc(v) if v is not None else None
        elif k == "attempt_log" and isinstance(v, list):
            out[k] = [_epoch_and_utc(a) if isinstance(a, dict) else a for a in v]
        else:
            out[k] = v
    return out


def _local_times(doc: dict[str, Any]) -> dict[str, Any]:
    """Each `*_at` time as ISO 8601 with the local zone's offset (`iso`), in the attempts and calls too."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if (k.endswith("_at") or k == "at") and isinstance(v, int | float):
            out[k] = iso(v)
        elif k in ("attempt_log", "calls") and isinstance(v, list):
            out[k] = [_local_times(a) if isinstance(a, dict) else a for a in v]
        else:
            out[k] = v
    return out


def _document(inv: Invocation) -> str:
    return inv.document_id[2] if inv.document_id[2:] else ""


def _run_ms(inv: Invocation) -> str:
    return f"{(inv.finished_at - inv.started_at) * 1000:.0f}" if inv.finished_at and inv.started_at else "-"


WIDE = 120  # narrower terminals get the journal as lines instead of a table


def _journal_lines(rows: list[Invocation]) -> None:
    """The journal for a narrow terminal: one line per entry, its error on an indented line below, each
    cut to the width instead of wrapped."""
    width = max(20, console.width)
    for inv in rows:
        head = (
            f"{inv.id:>6}  {datetime.fromtimestamp(inv.received_at):%m-%d %H:%M:%S}  {inv.state:<9} "
            f"{_run_ms(inv):>6} ms  {inv.robot_code} {_document(inv)}"
        )
        console.print(Text(_cut(head, width), no_wrap=True), highlight=False)
        if inv.error:
            console.print(Text(_cut("        " + inv.error.splitlines()[0], width), style="red", no_wrap=True))
    zone = datetime.now().astimezone().tzname()
    console.print(Text(_cut(f"times in {zone}; `b24robots jobs show ID` for one entry", width), style="dim"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _journal_table(rows: list[Invocation]) -> Table:
    """The journal for a wide terminal: short times, no borders, the error cut to the space left."""
    table = Table(title="Journal", box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("received", no_wrap=True)
    table.add_column("robot", overflow="fold", max_width=24)
    table.add_column("doc", overflow="fold", max_width=12)
    table.add_column("state", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("error", overflow="ellipsis", no_wrap=True, ratio=1, min_width=10)
    for inv in rows:
        table.add_row(
            str(inv.id),
            datetime.fromtimestamp(inv.received_at).strftime("%m-%d %H:%M:%S"),
            escape(inv.robot_code),
            escape(_document(inv)),
            inv.state + (f" ×{inv.attempts}" if inv.attempts > 1 else ""),
            _run_ms(inv),
            escape(inv.error.splitlines()[0]) if inv.error else "",
        )
    table.caption = f"times in {datetime.now().astimezone().tzname()}; `b24robots jobs show ID` for one entry"
    return table


@journal_app.command("prune")
@friendly
def journal_prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be deleted")] = False,
) -> None:
    """Delete finished entries past their retention (B24R_RETENTION_*_DAYS) now, in small batches."""
    from b24robots.store.retention import database_size
    from b24robots.web.services import retention_from

    env = Env()
    retention = retention_from(env.settings, env.db)
    report = retention.prune(now=time.time(), batch=env.settings.prune_batch, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    periods = retention.periods
    console.print(
        f"{verb} {report.deleted['delivered']} delivered (older than {periods.delivered_days:g} days), "
        f"{report.deleted['failed']} failed ({periods.failed_days:g} days), "
        f"{report.deleted['dead']} dead ({periods.dead_days:g} days)",
        highlight=False,
    )
    size = database_size(env.db)
    if size is not None:
        console.print(f"database size: {size / 1_000_000:.1f} MB", highlight=False)


jobs_app = typer.Typer(help="Act on journal entries.", no_args_is_help=True)


@jobs_app.command("retry")
@friendly
def jobs_retry(invocation_id: int) -> None:
    """Run a failed or dead invocation again."""
    env = Env()
    inv = Journal(env.db).retry(invocation_id)
    env.audit.record("journal.retry", actor=cli_actor(), target=str(inv.id), details={"robot": inv.robot_code})
    console.print(f"invocation {inv.id} is queued again")


@jobs_app.command("replay")
@friendly
def jobs_replay(invocation_id: int) -> None:
    """Run an invocation again as a new journal entry with the same inputs."""
    env = Env()
    inv = Journal(env.db).replay(invocation_id)
    details = {"robot": inv.robot_code, "new_entry": inv.id}
    env.audit.record("journal.replay", actor=cli_actor(), target=str(invocation_id), details=details)
    console.print(f"invocation {invocation_id} replayed as {inv.id}")


@jobs_app.command("show")
@friendly
def jobs_show(invocation_id: int) -> None:
    """Show one invocation: what ran, inputs, outputs, each attempt's log lines and error, the outbound
    calls (REST and connections, with their attempt and duration), timings (ISO 8601 with the zone)."""
    from b24robots.store.connections import calls_of

    env = Env()
    inv = Journal(env.db).get(invocation_id)
    doc = dict(inv.__dict__)
    doc["calls"] = [c.as_dict() for c in calls_of(env.db, inv.id)]
    console.print_json(json.dumps(_local_times(doc), ensure_ascii=False, default=str))
