"""The admin web UI: server-rendered pages (Jinja2 + htmx) under /admin, static files under /admin/static.

app.include_router(build_admin_router(services))
app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="admin-static")
"""

from __future__ import annotations

from b24robots.web.admin.i18n import WEB_DIR
from b24robots.web.admin.routes import build_admin
from b24robots.web.admin.routes import build_router as build_admin_router

STATIC_DIR = WEB_DIR / "static"
STATIC_URL = "/admin/static"

__all__ = ["STATIC_DIR", "STATIC_URL", "build_admin", "build_admin_router"]
