"""The admin UI assembled: every resource's pages registered on one `Admin`, in the order the router
matches them.

Each resource is a module with its handlers and an `add_*_pages(admin)` that registers them: sign-in and
the audit log (`signin.py`), the dashboard, triggers and API keys, disabling and deleting robots and a
portal's re-sync (`removal.py`), robots, their versions, the journal, portals and connections. Every page
needs a signed-in admin and every POST the session's CSRF token; the wrapper that checks both, picks the
language and bounds the body is `Admin.page` in `base.py`.
"""

from __future__ import annotations

from fastapi import APIRouter

from b24robots.web.admin.base import Admin
from b24robots.web.admin.connections_view import add_connection_pages
from b24robots.web.admin.dashboard import add_dashboard_pages
from b24robots.web.admin.journal_view import add_journal_pages
from b24robots.web.admin.portals_view import add_portal_pages
from b24robots.web.admin.removal import add_removal_pages
from b24robots.web.admin.robots_view import add_robot_pages
from b24robots.web.admin.signin import add_signin_pages
from b24robots.web.admin.triggers import add_trigger_pages
from b24robots.web.admin.versions_view import add_version_pages
from b24robots.web.services import Services


def build_router(services: Services) -> APIRouter:
    """The admin UI's routes, all under /admin."""
    return build_admin(services).router


def build_admin(services: Services) -> Admin:
    """The admin UI with its pages registered on `.router`."""
    admin = Admin(services)
    add_signin_pages(admin)
    add_dashboard_pages(admin)
    add_trigger_pages(admin)
    add_removal_pages(admin)
    add_robot_pages(admin)
    add_version_pages(admin)
    add_journal_pages(admin)
    add_portal_pages(admin)
    add_connection_pages(admin)
    return admin
