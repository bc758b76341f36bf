"""Module robots: handlers declared with a decorator on a `Router`.

    router = Router()

    @router.robot("send_sms", name="Send SMS", inputs=SmsIn, outputs=SmsOut)
    async def send_sms(inputs: SmsIn, ctx: RobotContext) -> SmsOut:
        ...

The handler signature is inspected once, at declaration. Its parameters are filled by name or
annotation: the inputs object (annotated with the inputs class, or named `inputs`), the context
(annotated `RobotContext`, or named `ctx` / `context`), or single input values by their key.
It may return the outputs object, a dict of outputs, or None.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_type_hints

from b24robots.errors import DeclarationError, InputError
from b24robots.robots.context import RobotContext
from b24robots.robots.params import LocalizedText, Param, Params
from b24robots.robots.spec import Kind, RobotSpec
from b24robots.robots.triggers import TriggerSpec

Handler = Callable[..., Any]
Source = Literal["inputs", "ctx", "value"]


def _param_list(decl: type[Params] | None, what: str) -> tuple[Param[Any], ...]:
    if decl is None:
        return ()
    if not (isinstance(decl, type) and issubclass(decl, Params)):
        raise DeclarationError(f"{what} must be a Params subclass (class {what.title()}(Params): ...)")
    return decl.params()


@dataclass(frozen=True)
class ModuleRobot:
    """A robot implemented by a Python function deployed with the server."""

    spec: RobotSpec
    handler: Handler
    inputs_class: type[Params] | None
    outputs_class: type[Params] | None
    plan: tuple[tuple[str, Source], ...]
    is_async: bool

    def arguments(self, values: Mapping[str, Any], ctx: RobotContext) -> dict[str, Any]:
        """Build the handler's keyword arguments from parsed input values and the context."""
        args: dict[str, Any] = {}
        for name, source in self.plan:
            if source == "ctx":
                args[name] = ctx
            elif source == "inputs":
                cls = self.inputs_class or Params
                args[name] = cls(**values) if self.inputs_class else dict(values)
            else:
                args[name] = values.get(name)
        return args

    def outputs_of(self, result: Any) -> dict[str, Any]:
        """Normalise a handler's return value into a dict of outputs."""
        if result is None:
            return {}
        if isinstance(result, Params):
            return result.as_dict()
        if isinstance(result, Mapping):
            return dict(result)
        raise InputError(
            "return",
            f"robot {self.spec.code!r} returned {type(result).__name__}; return a dict, the outputs object or None",
        )

    def call(self, values: Mapping[str, Any], ctx: RobotContext) -> Any | Awaitable[Any]:
        return self.handler(**self.arguments(values, ctx))


def _plan(
    handler: Handler, code: str, inputs_class: type[Params] | None, input_keys: set[str]
) -> tuple[tuple[str, Source], ...]:
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError) as exc:
        raise DeclarationError(f"robot {code!r}: cannot inspect the handler signature ({exc})") from None
    try:
        hints = get_type_hints(handler)
    except Exception:  # unresolved forward references: fall back to names only
        hints = {}
    plan: list[tuple[str, Source]] = []
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DeclarationError(f"robot {code!r}: *args/**kwargs are not supported in handlers; name them")
        if p.kind is p.POSITIONAL_ONLY:
            raise DeclarationError(f"robot {code!r}: positional-only parameter {name!r}; drop the '/'")
        hint = hints.get(name, p.annotation)
        if isinstance(hint, str):  # a string annotation we could not resolve (e.g. a class local to a function)
            hint = {"RobotContext": RobotContext, getattr(inputs_class, "__name__", ""): inputs_class}.get(hint)
        if hint is RobotContext or name in ("ctx", "context"):
            plan.append((name, "ctx"))
        elif (inputs_class is not None and hint is inputs_class) or name == "inputs":
            plan.append((name, "inputs"))
        elif name in input_keys:
            plan.append((name, "value"))
        elif p.default is not p.empty:
            continue  # has its own default; we leave it alone
        else:
            known = ", ".join(sorted(input_keys)) or "no inputs declared"
            raise DeclarationError(
                f"robot {code!r}: handler parameter {name!r} is neither the inputs ('inputs'), the context "
                f"('ctx') nor an input key ({known}); rename it or give it a default"
            )
    return tuple(plan)


class Router:
    """Collects module robots; routers can include other routers."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._robots: dict[str, ModuleRobot] = {}
        self._triggers: dict[str, TriggerSpec] = {}

    def _decorator(
        self,
        kind: Kind,
        code: str,
        *,
        name: LocalizedText,
        description: LocalizedText | None,
        inputs: type[Params] | None,
        outputs: type[Params] | None,
        use_subscription: bool | None,
        auth_user_id: int,
        document_type: tuple[str, str, str] | list[str] | str | None,
        filter: Mapping[str, Any] | None,
        connections: Sequence[str] = (),
    ) -> Callable[[Handler], Handler]:
        spec = RobotSpec(
            code=code,
            kind=kind,
            name=name,
            description=description,
            inputs=_param_list(inputs, "inputs"),
            outputs=_param_list(outputs, "outputs"),
            use_subscription=use_subscription,
            auth_user_id=auth_user_id,
            document_type=document_type or None,  # type: ignore[arg-type]  # checked and expanded by RobotSpec
            filter=filter,
            connections=tuple(connections),
        )

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise DeclarationError(f"robot {code!r}: the decorated object is not callable")
            plan = _plan(handler, code, inputs, {p.key for p in spec.inputs})
            self.add(
                ModuleRobot(
                    spec=spec,
                    handler=handler,
                    inputs_class=inputs,
                    outputs_class=outputs,
                    plan=plan,
                    is_async=inspect.iscoroutinefunction(handler),
                )
            )
            return handler

        return register

    def robot(
        self,
        code: str,
        *,
        name: LocalizedText,
        description: LocalizedText | None = None,
        inputs: type[Params] | None = None,
        outputs: type[Params] | None = None,
        use_subscription: bool | None = None,
        auth_user_id: int = 1,
        document_type: tuple[str, str, str] | list[str] | str | None = None,
        filter: Mapping[str, Any] | None = None,
        connections: Sequence[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Declare an automation-rule robot (registered with bizproc.robot.add)."""
        return self._decorator(
            "robot",
            code,
            name=name,
            description=description,
            inputs=inputs,
            outputs=outputs,
            use_subscription=use_subscription,
            auth_user_id=auth_user_id,
            document_type=document_type,
            filter=filter,
            connections=connections,
        )

    def activity(
        self,
        code: str,
        *,
        name: LocalizedText,
        description: LocalizedText | None = None,
        inputs: type[Params] | None = None,
        outputs: type[Params] | None = None,
        use_subscription: bool | None = None,
        auth_user_id: int = 1,
        document_type: tuple[str, str, str] | list[str] | str | None = None,
        filter: Mapping[str, Any] | None = None,
        connections: Sequence[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Declare a business-process activity (registered with bizproc.activity.add)."""
        return self._decorator(
            "activity",
            code,
            name=name,
            description=description,
            inputs=inputs,
            outputs=outputs,
            use_subscription=use_subscription,
            auth_user_id=auth_user_id,
            document_type=document_type,
            filter=filter,
            connections=connections,
        )

    def add(self, robot: ModuleRobot) -> None:
        code = robot.spec.code
        if code in self._robots:
            raise DeclarationError(f"robot code {code!r} is declared twice; codes must be unique per application")
        self._robots[code] = robot

    def include_router(self, other: Router) -> None:
        for robot in other:
            self.add(robot)
        for trig in other.triggers():
            self.add_trigger(trig)

    def trigger(self, code: str, *, name: LocalizedText) -> TriggerSpec:
        """Declare a CRM automation trigger (registered with crm.automation.trigger.add); returns it."""
        spec = TriggerSpec(code=code, name=name)
        self.add_trigger(spec)
        return spec

    def add_trigger(self, spec: TriggerSpec) -> None:
        if spec.code.lower() in {c.lower() for c in self._triggers}:
            raise DeclarationError(f"trigger code {spec.code!r} is declared twice; codes must be unique")
        self._triggers[spec.code] = spec

    def triggers(self) -> list[TriggerSpec]:
        return [self._triggers[k] for k in sorted(self._triggers)]

    def get(self, code: str) -> ModuleRobot | None:
        return self._robots.get(code)

    def __iter__(self) -> Iterator[ModuleRobot]:
        return iter(self._robots.values())

    def __len__(self) -> int:
        return len(self._robots)

    def __contains__(self, code: object) -> bool:
        return code in self._robots
