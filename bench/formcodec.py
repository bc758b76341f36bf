"""Decoding speed of the PHP-style form codec on a 1 MiB robot call, against the standard library.

    python bench/formcodec.py [--runs N]

Rows: our `decode_form` on a 1 MiB, 5,000-key body of nested `properties[...]` (the largest body the
intake accepts), and `urllib.parse.parse_qsl` on the same bytes as the same-run baseline (it only splits
pairs, it builds no nesting, so it is a floor, not a rival). Target: our decode within 50 ms, best of N.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from rich.console import Console
from rich.table import Table

from b24robots.inbound.formcodec import decode_form, encode_form

TEXT = "Сделка №42: клиент ждёт звонка, deal is hot & urgent; "


def body() -> bytes:
    data = {
        "properties": {f"field_{i}": (TEXT * 4)[: 40 + i % 40] for i in range(4000)},
        "tags": [f"tag-{i}" for i in range(999)],
        "code": "x",
    }
    return encode_form(data)


def timings(runs: int, fn: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    raw = body()
    ours = timings(args.runs, lambda: decode_form(raw))
    base = timings(args.runs, lambda: parse_qsl(raw.decode(), keep_blank_values=True))
    table = Table(title=f"form decode, {len(raw):,} bytes, {raw.count(b'&') + 1:,} keys, {args.runs} runs")
    for col in ("decoder", "best ms", "median ms", "× baseline (median)"):
        table.add_column(col, justify="right")
    for name, samples in (("decode_form", ours), ("parse_qsl (baseline)", base)):
        ratio = statistics.median(samples) / statistics.median(base)
        table.add_row(name, f"{min(samples):.1f}", f"{statistics.median(samples):.1f}", f"{ratio:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
