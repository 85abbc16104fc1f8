"""Takes order tasks from a Sluice consumer over the gateway and "bills" them.

    python consumer.py --url ws://127.0.0.1:9187/gateway --key consumer.pem --expect 200

It stops once it has billed ``--expect`` distinct orders (exit 0), or when
``--timeout`` passes first (exit 1). Over the gateway a task may come more
than once (a connection lost after the work and before the ack), so billing
is idempotent: an order billed already is acked and not billed again. Some
orders hit a "busy payment service" on their first attempt and are nacked
back to the end of the queue, to show a retry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from sluice_client import Client, Task, load_private_key


class Billing:
    """The business side: bills each order once, whatever the deliveries."""

    def __init__(self) -> None:
        self.billed: set[int] = set()
        self.retried = 0

    async def handle(self, task: Task) -> None:
        order = task.payload["order"]
        if order % 7 == 0 and task.attempt == 1:
            self.retried += 1
            await task.nack("requeue_end", reason="payment service busy")
            return
        self.billed.add(order)  # a set: billing twice is a no-op
        await task.ack()


async def main() -> int:
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
    parser.add_argument("--consumer", default="billing")
    parser.add_argument(
        "--expect",
        type=int,
        required=True,
        help="stop after billing this many distinct orders",
    )
    parser.add_argument("--credit", type=int, default=20, help="tasks in hand at once")
    parser.add_argument(
        "--timeout", type=float, default=120, help="give up after this many seconds"
    )
    args = parser.parse_args()
    if not args.url:
        parser.error("--url or SLUICE_GATEWAY_URL is required")

    billing = Billing()
    key = load_private_key(args.key.read_bytes())
    async with await Client.connect(
        args.url, key, client_name="example-consumer/1"
    ) as client:
        subscription = await client.subscribe(
            args.stream, args.consumer, credit=args.credit
        )
        try:
            async with asyncio.timeout(args.timeout):
                async for task in subscription:
                    await billing.handle(task)
                    if len(billing.billed) >= args.expect:
                        break
        except TimeoutError:
            pass
    done = len(billing.billed)
    print(
        f"consumer: billed {done} of {args.expect} orders ({billing.retried} retried after a nack)"
    )
    return 0 if done >= args.expect else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
