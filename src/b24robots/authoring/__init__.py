"""Authoring stored robots: the editor's form model, version diffs, test runs and adoption of module robots.

What the admin UI and the CLI share. Nothing here renders HTML or reads requests; the routes and the
CLI commands are thin skins over it.
"""

from __future__ import annotations

from b24robots.authoring.adopt import Adoption, adopt_source
from b24robots.authoring.diffs import DiffLine, DiffSection, diff_sections, diff_versions, version_text
from b24robots.authoring.form import (
    NEW_ROBOT_SOURCE,
    PARAM_TYPES,
    FormErrors,
    empty_form,
    form_from_document,
    form_from_fields,
    spec_from_form,
)
from b24robots.authoring.testrun import TEST_RUN_PORTAL, TestRun, raw_inputs, test_run

__all__ = [
    "NEW_ROBOT_SOURCE",
    "PARAM_TYPES",
    "TEST_RUN_PORTAL",
    "Adoption",
    "DiffLine",
    "DiffSection",
    "FormErrors",
    "TestRun",
    "adopt_source",
    "diff_sections",
    "diff_versions",
    "empty_form",
    "form_from_document",
    "form_from_fields",
    "raw_inputs",
    "spec_from_form",
    "test_run",
    "version_text",
]
