"""Diffs between two versions of a stored robot: the definition (as YAML) and the code, numbered as in the editor."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import yaml

from b24robots.store.register import VersionInfo

# --- diffs ------------------------------------------------------------------------------------


@dataclass
class DiffLine:
    kind: str  # "add" | "del" | "ctx" | "gap" (unchanged lines left out)
    text: str
    old: int | None = None  # the line's number in version a (None for an added line or a gap)
    new: int | None = None  # ... in version b


@dataclass
class DiffSection:
    part: str  # "definition" (the document as YAML) | "code" (numbered as in the editor)
    lines: list[DiffLine]


def version_text(v: VersionInfo) -> list[str]:
    """A version as text: the document in YAML, then the code (what `b24robots robots diff` compares)."""
    return ["# definition", *_definition(v), "", "# code", *v.source.splitlines()]


def _definition(v: VersionInfo) -> list[str]:
    return yaml.safe_dump(v.document, allow_unicode=True, sort_keys=False).splitlines()


def diff_versions(a: VersionInfo, b: VersionInfo, context: int = 3) -> list[DiffLine]:
    """A unified diff from version `a` to version `b` as text lines; an empty list when they are equal."""
    lines = difflib.unified_diff(
        version_text(a), version_text(b), fromfile=f"version {a.number}", tofile=f"version {b.number}", lineterm=""
    )
    kinds = {"+": "add", "-": "del", "@": "gap"}
    return [DiffLine(kinds.get(line[:1], "ctx"), line) for line in lines]


def diff_sections(a: VersionInfo, b: VersionInfo, context: int = 3) -> list[DiffSection]:
    """The definition and the code compared on their own, each line with its numbers in both versions
    (the code's are the editor's line numbers); only the parts that changed, `context` lines around."""
    out = []
    for part, old, new in (
        ("definition", _definition(a), _definition(b)),
        ("code", a.source.splitlines(), b.source.splitlines()),
    ):
        if old == new:
            continue
        lines: list[DiffLine] = []
        for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(context):
            if lines or group[0][1] > 0 or group[0][3] > 0:
                lines.append(DiffLine("gap", "…"))
            for tag, i1, i2, j1, j2 in group:
                if tag == "equal":
                    lines += [DiffLine("ctx", old[i], i + 1, j1 + i - i1 + 1) for i in range(i1, i2)]
                    continue
                lines += [DiffLine("del", old[i], old=i + 1) for i in range(i1, i2)]
                lines += [DiffLine("add", new[j], new=j + 1) for j in range(j1, j2)]
        if group and (group[-1][2] < len(old) or group[-1][4] < len(new)):
            lines.append(DiffLine("gap", "…"))
        out.append(DiffSection(part, lines))
    return out
