"""The dashboard, the admin's first page: calls, failures, dead letters and run time of the last hour, day
or week (per bucket, per robot, per portal) as SVG charts with a table each, the queue and the answers
owed per portal, token health, the database size and the sandbox's isolation level.

Every number comes from `store.stats.Stats`, the same code `/metrics` reads, so they cannot disagree.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from b24robots.errors import StoreUnavailable
from b24robots.store.retention import database_size
from b24robots.store.stats import PERIODS, Stats, Window
from b24robots.web.admin import charts
from b24robots.web.admin.base import Admin, Ctx

DEFAULT_PERIOD = "day"


def _label(ts: float, width: int) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%H:%M") if width < 6 * 3600 else moment.strftime("%d.%m %H:%M")


def _charts(ctx: Ctx, w: Window) -> dict[str, Any]:
    labels = [_label(w.bucket_start(i), w.width) for i in range(len(w.buckets))]
    ok = [max(0, b.calls - b.failures) for b in w.buckets]
    failed = [max(0, b.failures - b.dead) for b in w.buckets]
    dead = [b.dead for b in w.buckets]
    parts = (ctx._("answered"), ctx._("failures"), ctx._("dead letters"))
    minutes = w.width // 60
    per = ctx._("%(n)d min", n=minutes) if minutes < 60 else ctx._("%(n)d h", n=minutes // 60)
    calls = charts.stacked_bars(
        "chart-calls",
        ctx._("Calls per %(per)s (UTC)", per=per),
        ctx._(
            "%(calls)d calls, %(failures)d failures, %(dead)d dead letters",
            calls=w.total.calls,
            failures=w.total.failures,
            dead=w.total.dead,
        ),
        labels,
        [
            charts.Series("c-ok", parts[0], ok),
            charts.Series("c-fail", parts[1], failed),
            charts.Series("c-dead", parts[2], dead),
        ],
    )
    runtime = charts.lines(
        "chart-runtime",
        ctx._("Run time per %(per)s, seconds (UTC)", per=per),
        ctx._("p50 %(p50)s s, p95 %(p95)s s over the period", p50=_num(w.total.p50), p95=_num(w.total.p95)),
        labels,
        [("c-p50", "p50", [b.p50 for b in w.buckets]), ("c-p95", "p95", [b.p95 for b in w.buckets])],
    )

    def per_key(chart_id: str, title: str, rows: list[Any]) -> Any:
        return charts.hbars(
            chart_id,
            title,
            ctx._("%(n)d rows; the table below has the numbers", n=len(rows)),
            [r.key for r in rows],
            [
                charts.Series("c-ok", parts[0], [max(0, r.calls - r.failures) for r in rows]),
                charts.Series("c-fail", parts[1], [max(0, r.failures - r.dead) for r in rows]),
                charts.Series("c-dead", parts[2], [r.dead for r in rows]),
            ],
        )

    return {
        "chart_calls": calls,
        "chart_runtime": runtime,
        "chart_robots": per_key("chart-robots", ctx._("Calls per robot"), w.by_robot) if w.by_robot else None,
        "chart_portals": per_key("chart-portals", ctx._("Calls per portal"), w.by_portal) if w.by_portal else None,
        "labels": labels,
    }


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def add_dashboard_pages(admin: Admin) -> None:
    """Add /admin/dashboard to the admin router."""
    svc = admin.svc
    stats = Stats(svc.db)

    @admin.page("/admin/dashboard")
    async def dashboard(ctx: Ctx) -> Response:
        period = ctx.query("period", DEFAULT_PERIOD)
        if period not in PERIODS:
            return ctx.render(
                "error.html",
                400,
                title=ctx._("Unknown period"),
                message=ctx._("Choose the period hour, day or week."),
            )

        def load() -> dict[str, Any]:
            now = time.time()
            try:
                size = database_size(svc.db)
            except StoreUnavailable:
                size = None
            return {
                "now": now,
                "window": stats.window(period, now),
                "queues": stats.queues(),
                "tokens": stats.tokens(),
                "db_size": size,
            }

        values = await run_in_threadpool(load)
        pool = svc.sandbox
        return ctx.render(
            "dashboard.html",
            period=period,
            periods=list(PERIODS),
            sandbox=pool.health() if pool is not None else {},
            num=_num,
            **values,
            **_charts(ctx, values["window"]),
        )
