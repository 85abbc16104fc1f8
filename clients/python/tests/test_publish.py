"""Logging in and publishing, against a real ``sluice serve``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

from conftest import Setup

from sluice_client import Client, Event, Published


async def test_a_client_logs_in_and_publishes_one_event_or_a_batch(
    setup: Setup,
) -> None:
    async with await Client.connect(
        setup.url, setup.key, client_name="tests/1"
    ) as client:
        assert client.welcome.key == setup.key_name
        assert client.welcome.publish == (setup.stream,)
        assert client.welcome.consume == (f"{setup.stream}/billing",)
        assert client.limits.max_batch == 500
        assert client.limits.settle_timeout == timedelta(minutes=5)

        one = await client.publish_one(setup.stream, "orders.eu.created", {"id": 42})
        assert one.duplicate is False
        later = datetime(2030, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
        batch = await client.publish(
            setup.stream,
            [
                Event(
                    "orders.eu.paid",
                    [1, 2],
                    metadata={"tenant": "eu"},
                    key="customer-7",
                    priority=4,
                    deliver_at=later,
                ),
                Event("orders.us.paid", "plain"),
            ],
        )
        assert [p.duplicate for p in batch] == [False, False]
        assert one.id < batch[0].id < batch[1].id
        assert await client.ping() >= 0

    first, paid, plain = setup.sluice.events(setup.stream)
    assert first == {
        "id": one.id,
        "subject": "orders.eu.created",
        "payload": {"id": 42},
        "metadata": {},
        "key": None,
        "priority": 1,
        "deliver_at": None,
    }
    assert (
        paid["id"],
        paid["payload"],
        paid["metadata"],
        paid["key"],
        paid["priority"],
    ) == (batch[0].id, [1, 2], {"tenant": "eu"}, "customer-7", 4)
    assert datetime.fromisoformat(str(paid["deliver_at"])) == datetime(
        2030, 1, 1, tzinfo=UTC
    )
    assert (plain["id"], plain["subject"], plain["payload"]) == (
        batch[1].id,
        "orders.us.paid",
        "plain",
    )


async def test_requests_from_many_coroutines_each_get_their_own_answer(
    setup: Setup,
) -> None:
    async with await Client.connect(setup.url, setup.key) as client:
        published = await asyncio.gather(
            *(
                client.publish_one(setup.stream, "orders.eu.created", {"n": n})
                for n in range(30)
            )
        )
    by_id = {
        event["id"]: event["payload"]["n"]
        for event in setup.sluice.events(setup.stream)
    }
    assert [by_id[p.id] for p in published] == list(range(30))


async def test_a_retried_publish_with_idempotency_keys_is_stored_once(
    setup: Setup,
) -> None:
    events = [
        Event("orders.eu.created", 1, idempotency_key="order-1"),
        Event("orders.eu.created", 2),
    ]
    async with await Client.connect(setup.url, setup.key) as client:
        first = await client.publish(setup.stream, events)
        retried = await client.publish(setup.stream, events)
    assert first[0].duplicate is False
    assert retried[0] == Published(id=first[0].id, duplicate=True)
    assert retried[1].duplicate is False and retried[1].id != first[1].id, (
        "an event without a key is new"
    )

    # As a client that lost its connection would retry: on a new one.
    async with await Client.connect(setup.url, setup.key) as again:
        once_more = await again.publish_one(
            setup.stream, "orders.eu.created", 1, idempotency_key="order-1"
        )
    assert once_more == Published(id=first[0].id, duplicate=True)
    assert [e["payload"] for e in setup.sluice.events(setup.stream)] == [1, 2, 2]
