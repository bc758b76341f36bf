"""The robots of `b24robots demo`: a module robot and two stored robots (shipped in the wheel).

The module robot is also the example of `examples/demo_robots.py`; the stored robot is the one of
`examples/deal_total.yaml`. Written with the public API only, as a robot author would.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from b24robots import Bool, Date, Double, Int, Params, RobotContext, RobotFailure, Router, Select, String

router = Router("demo")
# fired by the back office when a payment arrives; the simulated portal's automation rule moves the
# deal to WON and runs demo.discount on it
PAYMENT = router.trigger("demo.payment", name={"en": "Payment received", "ru": "Оплата получена"})


class DiscountIn(Params):
    amount = Double({"en": "Amount", "ru": "Сумма"}, required=True)
    segment = Select(
        {"en": "Customer segment", "ru": "Сегмент клиента"},
        options={"retail": "Retail", "wholesale": "Wholesale", "vip": "VIP"},
        default="retail",
    )
    days = Int({"en": "Payment terms, days", "ru": "Отсрочка, дней"}, default=0)


class DiscountOut(Params):
    discount = Double({"en": "Discount", "ru": "Скидка"})
    total = Double({"en": "Total", "ru": "Итого"})
    pay_by = Date({"en": "Pay by", "ru": "Оплатить до"})
    approved = Bool({"en": "Approved", "ru": "Одобрено"})
    note = String({"en": "Note", "ru": "Примечание"})


RATES = {"retail": 0.0, "wholesale": 0.05, "vip": 0.1}


@router.robot(
    "demo.discount",
    name={"en": "Calculate discount", "ru": "Рассчитать скидку"},
    description={"en": "Discount by customer segment", "ru": "Скидка по сегменту клиента"},
    inputs=DiscountIn,
    outputs=DiscountOut,
)
def discount(inputs: DiscountIn, ctx: RobotContext) -> DiscountOut:
    if inputs.amount < 0:
        raise RobotFailure("the amount is negative", outputs={"approved": False})
    rate = RATES[inputs.segment]
    ctx.log(f"segment {inputs.segment}: rate {rate:.0%}")
    value = round(inputs.amount * rate, 2)
    return DiscountOut(
        discount=value,
        total=round(inputs.amount - value, 2),
        pay_by=date.today() + timedelta(days=inputs.days),
        approved=inputs.amount < 1_000_000,
        note=f"{ctx.document_id[2]}: {rate:.0%}",
    )


DEAL_TOTAL: dict[str, Any] = {
    "code": "demo.deal_total",
    "kind": "robot",
    "name": {"en": "Deal total with VAT", "ru": "Сумма сделки с НДС"},
    "use_subscription": "Y",
    "auth_user_id": 1,
    "properties": {
        "amount": {"name": {"en": "Amount", "ru": "Сумма"}, "type": "double", "required": True},
        "vat_rate": {
            "name": {"en": "VAT rate", "ru": "Ставка НДС"},
            "type": "select",
            "options": {"0": "0%", "10": "10%", "20": "20%"},
            "default": "20",
        },
    },
    "return_properties": {
        "total": {"name": {"en": "Total", "ru": "Итого"}, "type": "double"},
        "vat": {"name": {"en": "VAT", "ru": "НДС"}, "type": "double"},
    },
}

DEAL_TOTAL_SOURCE = """from decimal import Decimal, ROUND_HALF_UP


def run(inputs, ctx):
    amount = Decimal(str(inputs["amount"]))
    rate = Decimal(inputs["vat_rate"]) / 100
    vat = (amount * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    ctx.log(f"VAT {inputs['vat_rate']}% on {amount}")
    return {"total": float(amount + vat), "vat": float(vat)}
"""

# The stored robot of the connections demo: finds the deal's counterparty in 1C (the demo runs the
# fake 1C of b24robots.testing) by INN through the `buh` connection and writes what it found back to
# the deal. The code never sees the 1C password: the server makes the call.
INN_LOOKUP: dict[str, Any] = {
    "code": "demo.inn_lookup",
    "kind": "robot",
    "name": {"en": "Counterparty from 1C by INN", "ru": "Контрагент из 1С по ИНН"},
    "use_subscription": "Y",
    "auth_user_id": 1,
    "connections": ["buh"],
    "methods": ["crm.deal.get", "crm.deal.update"],
    "properties": {"inn": {"name": {"en": "INN", "ru": "ИНН"}, "type": "string", "required": True}},
    "return_properties": {
        "name": {"name": {"en": "Counterparty", "ru": "Контрагент"}, "type": "string"},
        "found": {"name": {"en": "Found", "ru": "Найден"}, "type": "bool"},
    },
}

INN_LOOKUP_SOURCE = """def run(inputs, ctx):
    inn = inputs["inn"].strip()
    row = ctx.onec("buh").first(
        "Catalog_Контрагенты", filter={"ИНН": inn}, select=["Ref_Key", "Description", "ИНН"]
    )
    if row is None:
        ctx.log(f"1C has no counterparty with INN {inn}")
        return {"name": "", "found": False}
    deal_id = ctx.document_id[2].split("_")[-1]
    ctx.call("crm.deal.update", {"id": deal_id, "fields": {"COMMENTS": f"1C: {row['Description']} (INN {inn})"}})
    ctx.log(f"1C: {row['Description']} written to deal {deal_id}")
    return {"name": row["Description"], "found": True}
"""
