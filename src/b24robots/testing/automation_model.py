"""What CRM automation on a simulated portal knows: rules fired by triggers, templates, CRM items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AutomationRule:
    """An automation rule: when app trigger `trigger` fires on an entity of `owner_type_id`,
    move it to `stage` and/or start robot `robot` on it (with `properties`)."""

    trigger: str
    owner_type_id: int = 2
    stage: str | None = None
    robot: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    fired: int = 0


@dataclass
class SimTemplate:
    """A business-process template: for documents of `owner_type_id`; it runs `robot` when started."""

    id: int
    owner_type_id: int
    name: str = "Business process"
    robot: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class StartedWorkflow:
    """One `bizproc.workflow.start` the portal accepted."""

    id: str
    template_id: int
    document_id: list[str]
    parameters: dict[str, Any]
    at: float


@dataclass
class Automation:
    """Per portal: whether its plan has CRM automation, its rules, templates, starts and CRM items
    other than deals (leads, contacts, companies, quotes, smart invoices, smart-process items)."""

    enabled: bool = True
    rules: list[AutomationRule] = field(default_factory=list)
    templates: dict[int, SimTemplate] = field(default_factory=dict)
    started: list[StartedWorkflow] = field(default_factory=list)
    items: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)  # tasks.task.* shape (camelCase keys)
    next_template_id: int = 1
