"""Refusals as typed errors, against a real ``sluice serve``: the code to
branch on, and whether the connection is still usable after it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from conftest import Setup, eventually

from sluice_client import (
    Client,
    ErrorCode,
    Event,
    GatewayError,
    LeaseLost,
    generate_key,
)


async def test_an_unknown_key_cannot_log_in(setup: Setup) -> None:
    with pytest.raises(GatewayError) as refused:
        await Client.connect(setup.url, generate_key())
    assert refused.value.code is ErrorCode.AUTH_FAILED
    assert "no gateway key is registered" in refused.value.message


async def test_a_revoked_key_cannot_log_in_and_its_connections_are_closed(
    setup: Setup,
) -> None:
    client = await Client.connect(setup.url, setup.key)
    sub = await client.subscribe(setup.stream, setup.consumer, credit=1)
    setup.sluice.cli("gateway", "key", "revoke", setup.key_name, "--yes")

    with pytest.raises(GatewayError) as refused:
        await Client.connect(setup.url, setup.key)
    assert refused.value.code is ErrorCode.AUTH_FAILED
    assert "revoked" in refused.value.message

    # The open connection is closed within the server's 5 s check: the
    # subscription stops with why, and so does every later request.
    with pytest.raises(GatewayError) as ended:
        await asyncio.wait_for(anext(sub), 20)
    assert ended.value.code is ErrorCode.REVOKED
    assert client.closed
    with pytest.raises(GatewayError) as later:
        await client.ping()
    assert later.value.code is ErrorCode.REVOKED
    assert (await client.wait_closed()) is ended.value
    await client.close()


async def test_what_a_key_may_not_do_is_forbidden_and_the_connection_stays(
    setup: Setup,
) -> None:
    setup.sluice.cli("stream", "create", f"{setup.stream}_audit")
    async with await Client.connect(setup.url, setup.key) as client:
        with pytest.raises(GatewayError) as refused:
            await client.publish_one(f"{setup.stream}_audit", "audit.x", 1)
        assert refused.value.code is ErrorCode.FORBIDDEN
        assert refused.value.request_id is not None
        with pytest.raises(GatewayError) as refused:
            await client.subscribe(setup.stream, "shipping", credit=1)
        assert refused.value.code is ErrorCode.FORBIDDEN
        await client.ping()
    assert setup.sluice.events(f"{setup.stream}_audit") == []


async def test_bad_requests_get_their_codes_and_change_nothing(setup: Setup) -> None:
    ghost = f"{setup.stream}/ghost"
    _, key = setup.add_key(
        "--publish",
        setup.stream,
        "--consume",
        f"{setup.stream}/billing",
        "--consume",
        ghost,
    )
    async with await Client.connect(setup.url, key) as client:
        refusals = {
            ErrorCode.BATCH_TOO_LARGE: client.publish(
                setup.stream, [Event("a.b", n) for n in range(501)]
            ),
            ErrorCode.INVALID: client.publish(setup.stream, [Event("a..b", 1)]),
            ErrorCode.NOT_FOUND: client.subscribe(setup.stream, "ghost", credit=1),
            ErrorCode.CREDIT_EXCEEDED: client.subscribe(
                setup.stream, "billing", credit=client.limits.max_credit + 1
            ),
            # Refused by the client: the server would close the connection.
            ErrorCode.FRAME_TOO_LARGE: client.publish_one(
                setup.stream, "a.b", "x" * client.limits.max_frame_bytes
            ),
        }
        for code, request in refusals.items():
            with pytest.raises(GatewayError) as refused:
                await request
            assert refused.value.code is code, refused.value

        await client.publish_one(setup.stream, "orders.eu.created", 1)
        sub = await client.subscribe(setup.stream, "billing", credit=1)
        with pytest.raises(GatewayError) as twice:
            await client.subscribe(setup.stream, "billing", credit=1)
        assert twice.value.code is ErrorCode.INVALID
        with pytest.raises(GatewayError) as too_much:
            await sub.add_credit(client.limits.max_credit)
        assert too_much.value.code is ErrorCode.CREDIT_EXCEEDED and sub.credit == 1

        task = await asyncio.wait_for(anext(sub), 15)
        for settle in (
            task.defer(timedelta(seconds=1), priority=9),
            task.nack("explode"),  # type: ignore[arg-type]
        ):
            with pytest.raises(GatewayError) as refused:
                await settle
            assert refused.value.code is ErrorCode.INVALID
        # Refused settles leave the task in the client's hands.
        assert sub.in_hand == [task]
        await task.ack()
    await eventually(
        lambda: setup.sluice.tasks(setup.stream, "billing") == {}, "the task done"
    )
    assert len(setup.sluice.events(setup.stream)) == 1, (
        "the refused publishes stored nothing"
    )


async def test_a_stale_lease_token_is_lease_lost(setup: Setup) -> None:
    async with await Client.connect(setup.url, setup.key) as client:
        await client.publish(
            setup.stream, [Event("orders.eu.created", n) for n in range(2)]
        )
        sub = await client.subscribe(setup.stream, setup.consumer, credit=1)
        task = await asyncio.wait_for(anext(sub), 15)
        await task.ack()
        for settle in (
            task.ack(),
            task.nack("discard"),
            task.defer(timedelta(seconds=5)),
            task.extend(),
        ):
            with pytest.raises(LeaseLost) as lost:
                await settle
            assert lost.value.code is ErrorCode.LEASE_LOST
        stale = task.lease_token

    # A token from an earlier connection holds nothing on this one, and
    # using it changes nothing.
    async with await Client.connect(setup.url, setup.key) as client:
        sub = await client.subscribe(setup.stream, setup.consumer, credit=1)
        held = await asyncio.wait_for(anext(sub), 15)
        with pytest.raises(LeaseLost):
            await dataclasses.replace(held, lease_token=stale).ack()
        assert (
            setup.sluice.tasks(setup.stream, setup.consumer)[held.event_id]["state"]
            == "running"
        )
        await held.ack()
