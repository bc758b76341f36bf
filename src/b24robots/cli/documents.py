"""`b24robots robots import` of a file holding robots and triggers together.

A file holds one document, a list of them, or (YAML) several separated by `---`. A document with
`kind: trigger` is a register trigger ({kind: trigger, code, name}); any other is a stored robot. Every
document is checked first (robot code, trigger CODE and NAME, a trigger CODE the robots module declares
too), so a bad one saves nothing; then each is saved as a new version where it changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from b24robots.cli.common import Env, cli_actor, console, default_author, fail
from b24robots.cli.robots import check_robot, read_documents, save_robot
from b24robots.robots.spec import RobotSpec
from b24robots.robots.triggers import TriggerSpec
from b24robots.store.trigger_register import trigger_from_document


def import_documents(
    path: Path, *, author: str | None, comment: str, source_file: Path | None, app: str | None = None
) -> None:
    env = Env(app)
    docs = read_documents(path)
    robots_docs = [d for d in docs if d.get("kind") != "trigger"]
    if source_file is not None and len(robots_docs) != 1:
        fail(
            f"--source is for a file with one robot; {path} has {len(robots_docs)}: "
            "put each robot's code in its `source`"
        )
    robots: list[tuple[RobotSpec, str, Any]] = []
    triggers: list[TriggerSpec] = []
    for doc in docs:
        if doc.get("kind") == "trigger":
            spec = trigger_from_document(doc)
            env.registry.check_register_trigger(spec.code)
            triggers.append(spec)
        else:
            robots.append(check_robot(env, doc, str(path), source_file))
    codes = [t.code.lower() for t in triggers]
    twice = sorted({c for c in codes if codes.count(c) > 1})
    if twice:
        fail(f"{path} declares trigger(s) {', '.join(twice)} more than once; keep one document per CODE")
    for robot in robots:
        save_robot(env, robot, author=author, comment=comment)
    for trig in triggers:
        saved = env.trigger_register.save(trig, author=author or default_author(), actor=cli_actor(), comment=comment)
        verb = {"add": "created", "change": "updated", "same": "unchanged"}[saved.action]
        console.print(
            f"{verb} trigger [bold]{escape(trig.code)}[/bold]: version {saved.version.number} is active",
            highlight=False,
        )
