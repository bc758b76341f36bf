"""Adopting a module robot: stored code made from its handler's source, or a template when it cannot be converted."""

from __future__ import annotations

import builtins
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

from b24robots.robots.router import ModuleRobot
from b24robots.sandbox import check_source

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
