"""Sample module robots. Run them with: b24robots serve examples.demo_robots:router"""

from __future__ import annotations

from datetime import date, timedelta

from b24robots import Bool, Date, Double, Int, Params, RobotContext, RobotFailure, Router, Select, String

router = Router()


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
