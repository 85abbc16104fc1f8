"""What the real server cannot be made to do within a test: a task expiring
(its settle timeout is 5 minutes in ``sluice serve``). A scripted server
plays the gateway's part, frame by frame as docs/GATEWAY.md has them, and
checks the client's login signature on its own."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from sluice_client import Client, ErrorCode, GatewayError, LeaseLost, Task, generate_key

WELCOME = {
    "type": "welcome",
    "key": "scripted",
    "connection": "c-1",
    "publish": [],
    "consume": ["orders/billing"],
    "limits": {
        "max_frame_bytes": 1048576,
        "max_batch": 500,
        "max_connections_per_key": 16,
        "max_credit": 1000,
        "settle_timeout_ms": 1500,
    },
}


def deliver(token: str, event_id: int) -> dict[str, Any]:
    return {
        "type": "deliver",
        "subscription": "s1",
        "lease_token": token,
        "stream": "orders",
        "consumer": "billing",
        "event_id": event_id,
        "attempt": 1,
        "subject": "orders.eu.created",
        "payload": {"n": event_id},
        "metadata": {"tenant": "eu"},
        "key": "customer-7",
        "priority": 3,
        "created_at": "2026-12-02T18:00:00.123456Z",
    }


async def gateway(ws: ServerConnection) -> None:
    nonce = os.urandom(32)
    await ws.send(
        json.dumps(
            {
                "type": "challenge",
                "protocol": "sluice.v1",
                "nonce": base64.b64encode(nonce).decode(),
            }
        )
    )
    hello = json.loads(await ws.recv())
    public_key = base64.b64decode(hello["public_key"])
    signed = b"sluice.v1 gateway authentication\x00" + nonce + public_key
    Ed25519PublicKey.from_public_bytes(public_key).verify(
        base64.b64decode(hello["signature"]), signed
    )
    await ws.send(json.dumps(WELCOME))

    subscribe = json.loads(await ws.recv())
    assert (subscribe["type"], subscribe["credit"]) == ("subscribe", 2)
    for frame in (
        {"type": "subscribed", "id": subscribe["id"], "subscription": "s1"},
        deliver("71", 1),
        deliver("72", 2),
        {"type": "expired", "subscription": "s1", "lease_token": "71"},
    ):
        await ws.send(json.dumps(frame))
    async for message in ws:
        request = json.loads(message)
        if request["lease_token"] == "71":
            answer = {
                "type": "error",
                "id": request["id"],
                "code": "lease_lost",
                "message": "expired",
            }
        else:
            answer = {"type": "ok", "id": request["id"]}
        await ws.send(json.dumps(answer))
        if request["type"] == "ack" and request["lease_token"] == "72":
            break
    await ws.send(
        json.dumps(
            {"type": "error", "id": None, "code": "revoked", "message": "key revoked"}
        )
    )
    await ws.close(1008)


@pytest.fixture
async def scripted_url() -> AsyncIterator[str]:
    async with serve(
        gateway, "127.0.0.1", 0, subprotocols=[Subprotocol("sluice.v1")]
    ) as server:
        host, port = server.sockets[0].getsockname()[:2]
        yield f"ws://{host}:{port}/gateway"


async def test_an_expired_task_is_marked_skipped_and_reported(
    scripted_url: str,
) -> None:
    expired: list[Task] = []
    client = await Client.connect(scripted_url, generate_key())
    assert client.limits.settle_timeout.total_seconds() == 1.5
    sub = await client.subscribe(
        "orders", "billing", credit=2, on_expired=expired.append
    )

    async with asyncio.timeout(5):
        while not expired:
            await asyncio.sleep(0.01)
    # Expired before the iteration came to it: not handed out.
    task = await asyncio.wait_for(anext(sub), 5)
    assert (
        task.lease_token,
        task.event_id,
        task.metadata,
        task.key,
        task.priority,
    ) == ("72", 2, {"tenant": "eu"}, "customer-7", 3)
    assert [t.lease_token for t in expired] == ["71"] and expired[0].expired
    assert sub.in_hand == [task]
    with pytest.raises(LeaseLost):
        await expired[0].ack()

    await task.extend()
    await task.ack()
    assert sub.in_hand == []
    # The server's closing error, without an id, ends the subscription.
    with pytest.raises(GatewayError) as ended:
        await asyncio.wait_for(anext(sub), 5)
    assert ended.value.code is ErrorCode.REVOKED
    await client.close()


async def test_a_server_with_too_many_connections_logging_in_is_unavailable() -> None:
    """HTTP 503 to the upgrade (``--gateway-max-unauthenticated``) is
    :class:`Unavailable`, a :class:`ConnectionClosed`: connect again later."""
    from http import HTTPStatus

    from sluice_client import ConnectionClosed, Unavailable

    def busy(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "256 connections are logging in already (max_unauthenticated)\n",
        )

    async with serve(gateway, "127.0.0.1", 0, process_request=busy) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(Unavailable) as refused:
            await Client.connect(f"ws://127.0.0.1:{port}/gateway", generate_key())
    assert isinstance(refused.value, ConnectionClosed)
    assert "max_unauthenticated" in str(refused.value)
