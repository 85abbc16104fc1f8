"""Taking tasks and settling them, against a real ``sluice serve``, with the
database's view of each task checked through ``sluice tasks``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from conftest import Setup, eventually

from sluice_client import Client, ConnectionClosed, Event, Subscription, Task


async def next_task(subscription: Subscription, timeout: float = 15.0) -> Task:
    return await asyncio.wait_for(anext(subscription), timeout)


async def publish(client: Client, setup: Setup, n: int) -> list[int]:
    published = await client.publish(
        setup.stream, [Event("orders.eu.created", {"n": i}) for i in range(n)]
    )
    return [p.id for p in published]


def states(setup: Setup) -> dict[int, str]:
    """The state of each task of the test's consumer, by event id."""
    return {
        event_id: task["state"]
        for event_id, task in setup.sluice.tasks(setup.stream, setup.consumer).items()
    }


async def test_a_client_takes_tasks_and_acks_nacks_defers_and_extends_them(
    setup: Setup,
) -> None:
    async with await Client.connect(setup.url, setup.key) as client:
        ids = await publish(client, setup, 4)
        sub = await client.subscribe(setup.stream, setup.consumer, credit=4)
        tasks = {
            task.event_id: task for task in [await next_task(sub) for _ in range(4)]
        }
        assert sorted(tasks) == ids
        a, b, c, d = (tasks[i] for i in ids)
        assert (a.stream, a.consumer, a.subject, a.payload, a.attempt) == (
            setup.stream,
            "billing",
            "orders.eu.created",
            {"n": 0},
            1,
        )
        assert (a.metadata, a.key, a.priority, a.expired) == ({}, None, 1, False)
        assert abs(a.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert a.lease_token.isdigit()
        assert {t.lease_token for t in sub.in_hand} == {
            t.lease_token for t in tasks.values()
        }
        await eventually(
            lambda: states(setup) == dict.fromkeys(ids, "running"), "all four running"
        )

        await a.ack()
        assert await b.nack("requeue_end", reason="not yet") == "available"
        due = await c.defer(timedelta(hours=1), priority=5, reason="after the batch")
        assert abs(due - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(
            minutes=1
        )
        await d.extend()
        # Settled ones left the client's hands (the requeued one may be back already, as a new task).
        in_hand = [t.lease_token for t in sub.in_hand]
        assert d.lease_token in in_hand and not {
            a.lease_token,
            b.lease_token,
            c.lease_token,
        } & set(in_hand)

        # The requeued task comes back as its next attempt, with a new token.
        again = await next_task(sub)
        assert (again.event_id, again.attempt) == (b.event_id, 2)
        assert again.lease_token != b.lease_token
        assert await again.nack("discard", reason="poison") == "discarded"
        await d.ack()

    await eventually(
        lambda: states(setup) == {b.event_id: "discarded", c.event_id: "scheduled"},
        "acked tasks gone, the discarded and the deferred kept",
    )
    deferred = setup.sluice.cli_json(
        "tasks", "show", setup.stream, setup.consumer, str(c.event_id)
    )
    assert deferred["task"]["priority"] == 5
    assert any(
        e["action"] == "deferred" and e["reason"] == "after the batch"
        for e in deferred["log"]
    ), deferred
    discarded = setup.sluice.cli_json(
        "tasks", "show", setup.stream, setup.consumer, str(b.event_id)
    )
    assert [e["action"] for e in discarded["log"]] == ["requeued_end", "discarded"], (
        discarded
    )


async def test_no_more_tasks_than_the_credit_are_in_the_clients_hands(
    setup: Setup,
) -> None:
    async with await Client.connect(setup.url, setup.key) as client:
        ids = await publish(client, setup, 5)
        sub = await client.subscribe(setup.stream, setup.consumer, credit=2)
        first = await next_task(sub)
        second = await next_task(sub)

        def running() -> list[int]:
            return [i for i, s in states(setup).items() if s == "running"]

        await eventually(lambda: len(running()) == 2, "two tasks running")
        with pytest.raises(TimeoutError):
            await next_task(sub, timeout=1.5)
        assert sorted(running()) == sorted([first.event_id, second.event_id]), (
            "no third claimed meanwhile"
        )

        # Settling one makes room for one more.
        await first.ack()
        third = await next_task(sub)
        with pytest.raises(TimeoutError):
            await next_task(sub, timeout=1.0)

        # More credit, more at once.
        assert await sub.add_credit(3) == 5
        assert sub.credit == 5
        rest = [await next_task(sub), await next_task(sub)]
        held = [second, third, *rest]
        assert sorted([first.event_id] + [t.event_id for t in held]) == ids
        for task in held:
            await task.ack()
    await eventually(lambda: states(setup) == {}, "every task done")


async def test_a_closed_clients_tasks_are_released_at_once_to_the_next_client(
    setup: Setup,
) -> None:
    async with await Client.connect(setup.url, setup.key) as client:
        ids = await publish(client, setup, 2)
        sub = await client.subscribe(setup.stream, setup.consumer, credit=2)
        held = [await next_task(sub), await next_task(sub)]
    # Closed: the iteration ends, and settling is refused by the client itself.
    with pytest.raises(StopAsyncIteration):
        await next_task(sub)
    assert client.closed and sub.in_hand == []
    with pytest.raises(ConnectionClosed):
        await held[0].ack()

    # Released, well before the consumer's 30 s lease would bring them back.
    await eventually(
        lambda: states(setup) == dict.fromkeys(ids, "available"),
        "both available again",
        timeout=10,
    )
    async with await Client.connect(setup.url, setup.key) as client:
        sub = await client.subscribe(setup.stream, setup.consumer, credit=2)
        again = [await next_task(sub), await next_task(sub)]
        assert sorted(t.event_id for t in again) == ids
        assert [t.attempt for t in again] == [2, 2], "a release counts the attempt"
        for task in again:
            await task.ack()
