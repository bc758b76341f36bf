"""Languages of the admin UI: gettext catalogs (compiled .mo files ship in the package) and Jinja2.

The language is the `b24r_lang` cookie when set, else the best match of Accept-Language, else
English. Each language has its own Jinja2 environment with the catalog installed, so `_()` in a
template and `t._()` in Python give the same translation.
"""

from __future__ import annotations

import gettext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

WEB_DIR = Path(__file__).resolve().parent.parent
LOCALE_DIR = WEB_DIR / "locale"
TEMPLATE_DIR = WEB_DIR / "templates"
DOMAIN = "b24robots"
LANGUAGES = ("en", "ru")
LANGUAGE_NAMES = {"en": "English", "ru": "Русский"}
DEFAULT_LANGUAGE = "en"
COOKIE = "b24r_lang"


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The cookie wins; then the highest-weighted Accept-Language entry we have; then English."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the earlier entry wins
        if lang in LANGUAGES and q > best_q and q > 0:
            best, best_q = lang, q
    return best


@cache
def translations(lang: str) -> gettext.NullTranslations:
    if lang == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang], fallback=True)


def _when(ts: float | None) -> Markup | str:
    """A stored UTC time as `<time datetime="2026-12-03T06:35:00Z">`: its text is the server's zone with
    its offset (`2026-12-03 09:35:00 UTC+03:00`), and admin.js rewrites it in the browser's zone with
    that zone's offset, so no time on a page is ambiguous and each admin reads their own."""
    if not ts:
        return "—"
    moment = datetime.fromtimestamp(ts).astimezone()
    offset = moment.strftime("%z")
    utc = datetime.fromtimestamp(ts, UTC)
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        f"{utc:%Y-%m-%dT%H:%M:%S}Z", f"{moment:%Y-%m-%d %H:%M:%S} UTC{offset[:3]}:{offset[3:]}"
    )


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(["html", "xml"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.filters["when"] = _when
    # a heading's translation may carry soft hyphens where it may wrap; an accessible name does not need them
    env.filters["unhyphenated"] = lambda text: str(text).replace("\u00ad", "")
    env.globals["LANGUAGES"] = LANGUAGE_NAMES
    return env


@dataclass(frozen=True)
class Translator:
    """The request's language: `_()` for messages built in Python."""

    lang: str

    def _(self, message: str, **values: Any) -> str:
        text = translations(self.lang).gettext(message)
        return text % values if values else text


# Shown through `_(name)` with a value known only at run time, so extraction cannot see them.
DYNAMIC_MESSAGES = ("queued", "running", "answered", "delivered", "failed", "dead")


def extract_messages() -> dict[str, str]:
    """Every translatable message of the UI -> where it was first seen (templates and admin Python code)."""
    import ast

    found: dict[str, str] = {}
    env = environment(DEFAULT_LANGUAGE)
    for path in sorted(TEMPLATE_DIR.glob("*.html")):
        source = path.read_text(encoding="utf-8")
        for lineno, _func, message in env.extract_translations(source):  # type: ignore[attr-defined]
            if isinstance(message, tuple):  # a call with keyword arguments: (text, None, ...)
                message = message[0]
            if isinstance(message, str):
                found.setdefault(message, f"templates/{path.name}:{lineno}")
    for path in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if name == "_" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, f"admin/{path.name}:{node.lineno}")
    for message in DYNAMIC_MESSAGES:
        found.setdefault(message, "journal states")
    return found
