"""A closed-loop HTTP load generator, run as its own process so it does not share a GIL with the server.

    python bench/load.py URL BODIES_FILE --concurrency 16 --warmup 50 --start-at UNIX_TIME --json OUT

BODIES_FILE holds one form-encoded body per line (form bodies never contain a raw newline). Each of
`concurrency` connections posts the next body as soon as its previous answer arrived. The first
`warmup` requests are sent but not measured. Writes latencies (seconds), HTTP status counts and the
measured window (unix times) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx


async def drive(url: str, bodies: list[bytes], concurrency: int, warmup: int, start_at: float) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    index = 0
    window: list[float] = []
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    # One client per connection: a single pool shared by many connections costs the generator more
    # CPU per request as concurrency grows (measured), which would be charged to the server.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(limits=limits, timeout=60.0) for _ in range(concurrency)]
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def one_connection(client: httpx.AsyncClient) -> None:
            nonlocal index
            while index < len(bodies):
                mine = index
                index += 1
                if mine == warmup:
                    window.append(time.time())
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=bodies[mine], headers=headers)
                    status = str(response.status_code)
                    if mine >= warmup:
                        try:
                            answers[str(response.json().get("status", ""))] += 1
                        except ValueError:
                            answers["(not json)"] += 1
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                if mine >= warmup:
                    latencies.append(elapsed)
                    statuses[status] += 1

        await asyncio.gather(*(one_connection(client) for client in clients))
    finally:
        for client in clients:
            await client.aclose()
    ended = time.time()
    started_at = window[0] if window else ended
    return {
        "latencies": latencies,
        "statuses": dict(statuses),
        "answers": dict(answers),
        "window": [started_at, ended],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("bodies", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--start-at", type=float, default=0.0, help="unix time to begin (several generators)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    bodies = [line for line in args.bodies.read_bytes().split(b"\n") if line]
    result = asyncio.run(drive(args.url, bodies, args.concurrency, args.warmup, args.start_at))
    args.json.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
