"""Helpers shared by the admin UI tests: sign in over HTTP, read CSRF tokens, a robot editor form."""

from __future__ import annotations

import re
from typing import Any

import httpx

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, username: str = "anna", password: str = PASSWORD) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    page = await client.get("/admin/login")
    resp = await client.post(
        "/admin/login", data={"csrf": csrf_of(page.text), "username": username, "password": password}
    )
    assert resp.status_code == 303, resp.text
    page = await client.get("/admin/robots")
    assert page.status_code == 200
    return csrf_of(page.text)


def robot_form(csrf: str, **overrides: Any) -> dict[str, str]:
    """A valid editor form for robot `ui.total` with two inputs and one output."""
    form = {
        "csrf": csrf,
        "code": "ui.total",
        "kind": "robot",
        "name": "Order total",
        "name_en": "",
        "name_ru": "Сумма заказа",
        "description": "Adds VAT",
        "use_subscription": "",
        "auth_user_id": "1",
        "in.0.key": "amount",
        "in.0.name": "Amount",
        "in.0.type": "double",
        "in.0.required": "Y",
        "in.1.key": "rate",
        "in.1.name": "VAT rate",
        "in.1.type": "select",
        "in.1.options": "0=0%; 20=20%",
        "in.1.default": "20",
        "out.0.key": "total",
        "out.0.name": "Total",
        "out.0.type": "double",
        "source": (
            "def run(inputs, ctx):\n"
            "    ctx.log('rate ' + inputs['rate'])\n"
            "    return {'total': round(inputs['amount'] * (1 + int(inputs['rate']) / 100), 2)}\n"
        ),
        "comment": "first",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}
