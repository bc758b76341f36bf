"""What the admin UI and the CLI share: the robot editor's form model, diffs, test runs, adoption.

Nothing here renders HTML or reads requests; the routes and the CLI are thin skins over it.
"""

from __future__ import annotations

import builtins
import difflib
import inspect
import re
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from b24robots.connections.hub import ConnectionHub, RunConnections
from b24robots.errors import B24RobotsError, DeclarationError, InputError, RestError, StoredCodeError
from b24robots.jobs.runner import Runner
from b24robots.robots.context import RobotContext
from b24robots.robots.params import Param, check_text, dump_values, parse_values
from b24robots.robots.registry import Registry, Resolved
from b24robots.robots.router import ModuleRobot
from b24robots.robots.signals import Retry, RobotFailure
from b24robots.robots.spec import CONNECTION_NAME_RE, KINDS, RobotSpec, check_code
from b24robots.robots.types import ParamType
from b24robots.sandbox import SandboxPool, SourceProblem, check_source
from b24robots.store.register import VersionInfo

PARAM_TYPES = tuple(t.value for t in ParamType)
ROW_RE = re.compile(r"^(in|out)\.(\d{1,4})\.([a-z_]+)$")
ROW_FIELDS = ("key", "name", "name_ru", "type", "required", "multiple", "default", "options")

NEW_ROBOT_SOURCE = '''def run(inputs, ctx):
    """inputs: a dict of the input parameters; return a dict of the output parameters."""
    ctx.log("started")
    return {}
'''


# --- the editor's form model ------------------------------------------------------------------


def _split_text(text: Any) -> tuple[str, str, str]:
    """(main, en, ru) fields of a plain or per-language text: English (or the first language) goes into
    the main field, which saves back as "en" when a Russian text is given."""
    if isinstance(text, Mapping):
        main = str(text.get("en") or next(iter(text.values()), ""))
        return main, "", str(text.get("ru", ""))
    return str(text or ""), "", ""


def _param_row(key: str, doc: Mapping[str, Any]) -> dict[str, str]:
    name = doc.get("name", "")
    if isinstance(name, Mapping):
        first = next(iter(name.values()), "")
        plain, ru = str(name.get("en", first)), str(name.get("ru", ""))
    else:
        plain, ru = str(name), ""
    default = doc.get("default", "")
    if isinstance(default, list):
        default = ", ".join(str(d) for d in default)
    options = doc.get("options") or {}
    return {
        "key": key,
        "name": plain,
        "name_ru": ru,
        "type": str(doc.get("type", "string")),
        "required": "Y" if doc.get("required") in (True, "Y") else "",
        "default": str(default or ""),
        "multiple": "Y" if doc.get("multiple") in (True, "Y") else "",
        "options": "; ".join(f"{k}={v}" for k, v in options.items()),
    }


def form_from_document(doc: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The editor's field values for a stored robot document."""
    name, name_en, name_ru = _split_text(doc.get("name"))
    desc, desc_en, desc_ru = _split_text(doc.get("description"))
    us = doc.get("use_subscription", "")
    return {
        "code": doc.get("code", ""),
        "kind": doc.get("kind", "robot"),
        "name": name,
        "name_en": name_en,
        "name_ru": name_ru,
        "description": desc,
        "description_en": desc_en,
        "description_ru": desc_ru,
        "use_subscription": "Y" if us in (True, "Y") else "N" if us in (False, "N") else "",
        "auth_user_id": str(doc.get("auth_user_id", 1)),
        "connections": ", ".join(doc.get("connections") or []),
        "source": source,
        "comment": "",
        "inputs": [_param_row(k, v) for k, v in (doc.get("properties") or {}).items()],
        "outputs": [_param_row(k, v) for k, v in (doc.get("return_properties") or {}).items()],
    }


def empty_form() -> dict[str, Any]:
    return form_from_document({"kind": "robot", "auth_user_id": 1}, NEW_ROBOT_SOURCE)


def form_from_fields(fields: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The editor's field values from a submitted form (rows `in.N.key`, `out.N.name`, ...), as typed."""
    flat: dict[str, str] = {}
    rows: dict[str, dict[int, dict[str, str]]] = {"in": {}, "out": {}}
    for name, value in fields:
        m = ROW_RE.match(name)
        if m:
            if m.group(3) in ROW_FIELDS:
                rows[m.group(1)].setdefault(int(m.group(2)), {})[m.group(3)] = value
        else:
            flat[name] = value
    form = empty_form()
    for key in (
        "code",
        "kind",
        "name",
        "name_en",
        "name_ru",
        "description",
        "description_en",
        "description_ru",
        "use_subscription",
        "auth_user_id",
        "connections",
        "source",
        "comment",
    ):
        form[key] = flat.get(key, "").replace("\r\n", "\n") if key == "source" else flat.get(key, "").strip()
    for group, target in (("in", "inputs"), ("out", "outputs")):
        form[target] = [
            {f: rows[group][i].get(f, "").strip() for f in ROW_FIELDS}
            for i in sorted(rows[group])
            if any(rows[group][i].get(f, "").strip() for f in ("key", "name", "name_ru", "default", "options"))
        ]
    return form


def _text_value(plain: str, en: str, ru: str) -> str | dict[str, str]:
    if en or ru:
        out = {"en": en or plain} if (en or plain) else {}
        if ru:
            out["ru"] = ru
        return out
    return plain


def _options(text: str, where: str) -> dict[str, str] | None:
    if not text.strip():
        return None
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, title = part.partition("=")
        if not sep or not key.strip():
            raise DeclarationError(f"{where}: write options as key=Title; key2=Title2")
        out[key.strip()] = title.strip() or key.strip()
    return out


@dataclass
class FormErrors:
    """Problems of a submitted editor form, each attached to the field it concerns."""

    fields: dict[str, str] = field(default_factory=dict)  # "code", "name", "in.2", "source", "general"
    source: list[SourceProblem] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.source)

    @property
    def source_list(self) -> list[dict[str, Any]]:
        return [{"line": p.line, "col": p.col, "message": p.message} for p in self.source]


def spec_from_form(
    form: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> tuple[RobotSpec | None, FormErrors]:
    """Validate the editor form. `base` is the current document (keeps fields the editor does not show)."""
    errors = FormErrors()
    try:
        check_code(form["code"])
    except DeclarationError as exc:
        errors.fields["code"] = str(exc)
    if form["kind"] not in KINDS:
        errors.fields["kind"] = "choose robot or activity"
    name = _text_value(form["name"], form["name_en"], form["name_ru"])
    try:
        check_text(name, "the robot name", required=True)
    except DeclarationError as exc:
        errors.fields["name"] = str(exc)
    description = _text_value(form["description"], form["description_en"], form["description_ru"])
    auth_user_id = form.get("auth_user_id") or "1"
    if not str(auth_user_id).isdigit():
        errors.fields["auth_user_id"] = "give a user id (a whole number, 1 is usually the portal admin)"
    connections = [n for n in re.split(r"[,\s]+", form.get("connections") or "") if n]
    bad = [n for n in connections if not CONNECTION_NAME_RE.match(n)]
    if bad:
        errors.fields["connections"] = (
            f"connection name {bad[0]!r} is invalid; use lower-case latin letters, digits, '_' or '-', "
            "separated by commas"
        )
    docs: dict[str, dict[str, Any]] = {"in": {}, "out": {}}
    for group, rows in (("in", form["inputs"]), ("out", form["outputs"])):
        for i, row in enumerate(rows):
            where = f"{group}.{i}"
            key = row["key"]
            try:
                Param._check_key(key)
                if key in docs[group]:
                    raise DeclarationError(f"parameter key {key!r} is used twice")
                ptype = row["type"] or "string"
                pdoc: dict[str, Any] = {
                    "name": _text_value(row["name"], "", row["name_ru"])
                    if not row["name_ru"]
                    else {"en": row["name"] or row["name_ru"], "ru": row["name_ru"]},
                    "type": ptype,
                    "required": row["required"] == "Y",
                    "multiple": row["multiple"] == "Y",
                }
                options = _options(row["options"], f"parameter {key!r}")
                if options:
                    pdoc["options"] = options
                if row["default"]:
                    pdoc["default"] = (
                        [d.strip() for d in row["default"].split(",")] if row["multiple"] == "Y" else row["default"]
                    )
                Param.from_document(key, pdoc)
                docs[group][key] = pdoc
            except DeclarationError as exc:
                errors.fields[where] = str(exc)
    source = form["source"]
    if not source.strip():
        errors.fields["source"] = "the code is empty; define def run(inputs, ctx): ... and return a dict of outputs"
    else:
        errors.source = check_source(source)
    if errors:
        return None, errors
    doc: dict[str, Any] = {
        "code": form["code"],
        "kind": form["kind"],
        "name": name,
        "auth_user_id": int(auth_user_id),
        "properties": docs["in"],
        "return_properties": docs["out"],
    }
    if description:
        doc["description"] = description
    if form["use_subscription"] in ("Y", "N"):
        doc["use_subscription"] = form["use_subscription"]
    if connections:
        doc["connections"] = connections
    for carried in ("document_type", "filter"):
        if base and base.get(carried):
            doc[carried] = base[carried]
    try:
        return RobotSpec.from_document(doc), errors
    except DeclarationError as exc:
        errors.fields["general"] = str(exc)
        return None, errors


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


# --- test runs --------------------------------------------------------------------------------

TEST_RUN_PORTAL = "test-run.invalid"


class _NoRest:
    """REST is not available in a test run: the portal is never called."""

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        raise RestError("NOT_AVAILABLE_IN_TEST_RUN", "REST calls are not available in a test run", method=method)

    async def batch(self, commands: Any, halt: bool = False) -> Any:
        raise RestError("NOT_AVAILABLE_IN_TEST_RUN", "REST calls are not available in a test run", method="batch")


@dataclass
class TestRun:
    """The result of a test run: typed outputs (as the portal would get them), log lines, timing, error."""

    __test__ = False  # not a pytest class

    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    error: str = ""
    origin: str = ""
    version: int | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)


def raw_inputs(spec: RobotSpec, given: Mapping[str, str]) -> dict[str, Any]:
    """Turn text inputs (as typed in a form or `--input key=value`) into `properties` as a portal sends them;
    multiple parameters take one value per line or comma-separated values."""
    props: dict[str, Any] = {}
    for p in spec.inputs:
        text = given.get(p.key, "")
        if p.multiple:
            parts = [x.strip() for x in re.split(r"[\n,]", text) if x.strip()]
            props[p.key] = parts
        else:
            props[p.key] = text.strip()
    unknown = sorted(set(given) - {p.key for p in spec.inputs})
    if unknown:
        raise InputError(
            unknown[0],
            f"is not an input of robot {spec.code!r} (inputs: {', '.join(p.key for p in spec.inputs) or 'none'})",
        )
    return props


async def test_run(
    resolved: Resolved,
    given: Mapping[str, str],
    sandbox: SandboxPool | None,
    document_id: str = "DEAL_1",
    connections: ConnectionHub | None = None,
) -> TestRun:
    """Run a robot with sample inputs, without a portal: `ctx.call` raises a RestError saying so.

    The robot's connections are real (their values for all portals): a test run reaches them."""
    spec = resolved.spec
    result = TestRun(ok=False, origin=resolved.origin, version=resolved.stored.version if resolved.stored else None)
    try:
        values = parse_values(spec.inputs, raw_inputs(spec, given))
    except InputError as exc:
        result.error = f"bad input: {exc}"
        return result
    ctx = RobotContext(
        portal=TEST_RUN_PORTAL,
        member_id="",
        code=spec.code,
        workflow_id="test-run",
        document_id=["crm", "CCrmDocumentDeal", document_id],
        document_type=["crm", "CCrmDocumentDeal", "DEAL"],
        event_token="test-run",  # noqa: S106 - not a secret: test runs have no portal event
        rest=_NoRest(),
    )
    started = time.perf_counter()
    try:
        raw = await Runner(registry=Registry(), sandbox=sandbox, connections=connections).call(resolved, values, ctx)
        result.outputs = dict(dump_values(spec.outputs, raw))
        result.ok = True
    except RobotFailure as fail:
        result.error = f"the robot reported a failure: {fail.message}"
        try:
            result.outputs = dict(dump_values(spec.outputs, fail.outputs))
        except InputError:
            result.outputs = {}
    except Retry as sig:
        result.error = f"the robot asked to be retried later: {sig}"
    except StoredCodeError as exc:
        result.error = f"{exc}\n{exc.traceback}".strip()
        result.log = list(getattr(exc, "log", ()) or ())
    except B24RobotsError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.log = list(getattr(exc, "log", ()) or ())
    except Exception as exc:  # module robot code is user code
        result.error = f"{type(exc).__name__}: {exc}"
    result.duration_ms = (time.perf_counter() - started) * 1000
    result.log = result.log or list(ctx.logs)
    scope = ctx.connections
    if isinstance(scope, RunConnections):
        result.calls = [r.as_dict() for r in scope.records]
    return result


# --- adopting a module robot ------------------------------------------------------------------


@dataclass(frozen=True)
class Adoption:
    """Stored code for a module robot. `converted` is False when it is a template the admin must finish."""

    source: str
    converted: bool
    note: str


class _Rewrite:
    """Rewrite a handler's body for the sandbox: `inputs.x` -> `inputs["x"]`, `Out(a=1)` -> `dict(a=1)`."""

    def __init__(self, inputs_name: str, outputs_class: str, keys: set[str]) -> None:
        self.inputs_name, self.outputs_class, self.keys = inputs_name, outputs_class, keys

    def apply(self, tree: Any) -> Any:
        import ast

        rw = self

        class T(ast.NodeTransformer):
            def visit_Attribute(self, node: ast.Attribute) -> Any:
                self.generic_visit(node)
                if isinstance(node.value, ast.Name) and node.value.id == rw.inputs_name and node.attr in rw.keys:
                    return ast.copy_location(
                        ast.Subscript(
                            value=ast.Name(rw.inputs_name, ast.Load()), slice=ast.Constant(node.attr), ctx=node.ctx
                        ),
                        node,
                    )
                return node

            def visit_Call(self, node: ast.Call) -> Any:
                self.generic_visit(node)
                if isinstance(node.func, ast.Name) and rw.outputs_class and node.func.id == rw.outputs_class:
                    node.func = ast.Name("dict", ast.Load())
                return node

        return ast.fix_missing_locations(T().visit(tree))


def adopt_source(robot: ModuleRobot) -> Adoption:
    """Stored code equivalent to a module robot's handler, when it can be derived.

    The handler's own source is rewritten (inputs become a dict, the outputs class becomes a dict) and
    the module-level constants and allowed imports it uses are copied. If anything it needs cannot be
    brought along, or the result fails `check_source`, a template is returned instead with the original
    handler in a comment, for the admin to finish.
    """
    import ast

    spec = robot.spec
    try:
        handler_src = textwrap.dedent(inspect.getsource(robot.handler))
        module = inspect.getmodule(robot.handler)
        module_src = inspect.getsource(module) if module else ""
        tree = ast.parse(handler_src)
        module_tree = ast.parse(module_src) if module_src else ast.Module(body=[], type_ignores=[])
    except (OSError, TypeError, SyntaxError):
        return _template(robot, "the handler's source code is not available")
    func = tree.body[0] if tree.body else None
    if not isinstance(func, ast.FunctionDef):
        return _template(robot, "only plain (not async) handler functions can be converted")
    func.decorator_list = []
    func.returns = None
    inputs_name = next((n for n, src in robot.plan if src == "inputs"), "")
    ctx_name = next((n for n, src in robot.plan if src == "ctx"), "")
    value_names = [n for n, src in robot.plan if src == "value"]
    for arg in func.args.args:
        arg.annotation = None
    out_cls = robot.outputs_class.__name__ if robot.outputs_class else ""
    func = _Rewrite(inputs_name or "inputs", out_cls, {p.key for p in spec.inputs}).apply(func)
    func.name = "_handler"
    # what the handler needs from its module: constants and imports of allowed modules
    defined_here = {a.arg for a in func.args.args} | {
        n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    needed = {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    needed -= defined_here | set(dir(builtins)) | {"dict"}
    prelude: list[str] = []
    for node in module_tree.body:
        names: set[str] = set()
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = {(a.asname or a.name).split(".")[0] for a in node.names}
            if names & needed:
                prelude.append(ast.unparse(node))
                needed -= names
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if names & needed and _is_literal(node.value):
                prelude.append(ast.unparse(node))
                needed -= names
    if needed:
        return _template(robot, f"it uses {', '.join(sorted(needed))}, which stored code cannot import")
    call_args = []
    for arg in func.args.args:
        if arg.arg == inputs_name:
            call_args.append(f"{arg.arg}=inputs")
        elif arg.arg == ctx_name:
            call_args.append(f"{arg.arg}=ctx")
        elif arg.arg in value_names:
            call_args.append(f"{arg.arg}=inputs.get({arg.arg!r})")
    header = (
        f"# Adopted from the module robot {spec.code} ({robot.handler.__module__}.{robot.handler.__qualname__}).\n"
        "# inputs is a dict of the input values; return a dict of the output values.\n"
    )
    body = "\n".join(prelude)
    source = (
        f"{header}{body}{chr(10) * 3 if body else chr(10)}{ast.unparse(func)}\n\n\n"
        f"def run(inputs, ctx):\n    result = _handler({', '.join(call_args)})\n"
        "    return dict(result) if result is not None else {}\n"
    )
    problems = check_source(source)
    if problems:
        return _template(robot, f"the converted code is refused: {problems[0]}")
    return Adoption(source=source, converted=True, note="converted from the handler's source")


def _is_literal(node: Any) -> bool:
    import ast

    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False


def _template(robot: ModuleRobot, why: str) -> Adoption:
    spec = robot.spec
    try:
        original = textwrap.dedent(inspect.getsource(robot.handler))
    except (OSError, TypeError):
        original = "(source not available)"
    lines = [
        f"# Adopted from the module robot {spec.code}: {why}.",
        "# Finish this code before saving. The original handler, for reference:",
        "#",
    ]
    lines += [f"#   {line}" if line else "#" for line in original.splitlines()]
    lines += ["", "", "def run(inputs, ctx):"]
    for p in spec.inputs:
        lines.append(f"    {p.key} = inputs[{p.key!r}]")
    lines.append("    return {")
    for p in spec.outputs:
        lines.append(f"        {p.key!r}: None,")
    lines.append("    }")
    return Adoption(source="\n".join(lines) + "\n", converted=False, note=why)
