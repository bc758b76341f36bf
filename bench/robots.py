"""The robots the benchmarks run: one module robot and the source of an equivalent stored robot.

Serve them with ``b24robots serve bench.robots:router`` (the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import Any

from b24robots import Double, Params, RobotContext, Router, String
from b24robots.robots.spec import RobotSpec

router = Router()

MODULE_CODE = "bench.echo"
STORED_CODE = "bench.stored"
PROPERTIES: dict[str, Any] = {"amount": 125.5, "note": "benchmark"}


class EchoIn(Params):
    amount = Double("Amount", required=True)
    note = String("Note")


class EchoOut(Params):
    total = Double("Total")
    note = String("Note")


@router.robot(MODULE_CODE, name="Benchmark echo", inputs=EchoIn, outputs=EchoOut)
def echo(inputs: EchoIn, ctx: RobotContext) -> EchoOut:
    return EchoOut(total=round(inputs.amount * 1.2, 2), note=f"{inputs.note} {ctx.document_id[2]}")


STORED_SOURCE = """
def run(inputs, ctx):
    return {"total": round(inputs["amount"] * 1.2, 2), "note": inputs["note"] + " " + ctx.document_id[2]}
"""


def stored_spec() -> RobotSpec:
    """The stored twin of `bench.echo` (same inputs and outputs, code kept in the register)."""
    return RobotSpec.from_document(
        {
            "code": STORED_CODE,
            "name": "Benchmark stored echo",
            "properties": {
                "amount": {"name": "Amount", "type": "double", "required": True},
                "note": {"name": "Note", "type": "string"},
            },
            "return_properties": {"total": {"name": "Total", "type": "double"}, "note": {"name": "Note"}},
        }
    )
