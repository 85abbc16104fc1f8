"""Publishes orders to Sluice over the gateway, as a shop's Python service would.

    python producer.py --url ws://127.0.0.1:9187/gateway --key producer.pem --count 200

Each order is published with an idempotency key, in batches: run it twice
and the second run stores nothing new (every event comes back a duplicate),
which is how a producer that lost its connection retries safely.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from sluice_client import Client, Event, load_private_key


def order_event(n: int) -> Event:
    region = ("eu", "us", "apac")[n % 3]
    return Event(
        subject=f"orders.{region}.created",
        payload={"order": n, "amount_cents": 1000 + 37 * n, "currency": "EUR"},
        metadata={"region": region},
        key=f"customer-{n % 17}",
        idempotency_key=f"order-{n}-created",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SLUICE_GATEWAY_URL"),
        help="the gateway (env SLUICE_GATEWAY_URL)",
    )
    parser.add_argument(
        "--key", type=Path, required=True, help="the private key file (PEM)"
    )
    parser.add_argument("--stream", default="orders")
    parser.add_argument("--count", type=int, default=200, help="how many orders")
    parser.add_argument(
        "--batch",
        type=int,
        default=50,
        help="orders per publish (one transaction each)",
    )
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or SLUICE_GATEWAY_URL is required")

    key = load_private_key(args.key.read_bytes())
    published = duplicates = 0
    async with await Client.connect(
        args.url, key, client_name="example-producer/1"
    ) as client:
        batch = min(args.batch, client.limits.max_batch)
        for start in range(0, args.count, batch):
            events = [
                order_event(n) for n in range(start, min(start + batch, args.count))
            ]
            for result in await client.publish(args.stream, events):
                published += 1
                duplicates += result.duplicate
    print(
        f"producer: published {published} orders to {args.stream!r} ({duplicates} already there)"
    )


if __name__ == "__main__":
    asyncio.run(main())
