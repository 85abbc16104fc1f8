"""The connection to the gateway, its subscriptions and their tasks.

One reader task per connection reads every frame and sends it where it
belongs: an answer to the request waiting for it (matched by id), a
delivery to its subscription's queue, an expiry to the task it takes away.
Requests can therefore be made from many coroutines at once; the gateway
answers them in the order they were sent.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from ._version import __version__
from .errors import (
    ConnectionClosed,
    ErrorCode,
    GatewayError,
    ProtocolError,
    SluiceError,
    Unavailable,
)
from .keys import PROTOCOL, public_key_b64, sign_login

log = logging.getLogger("sluice_client")

#: What ``nack`` does with a task: requeue it at the end or the start of the
#: consumer's queue (an attempt; on the last one it is discarded), or
#: discard it at once (a dead letter).
NackAction = Literal["requeue_end", "requeue_start", "discard"]

_ANSWERS = frozenset({"published", "subscribed", "ok", "pong"})


@dataclass(frozen=True)
class Limits:
    """The server's limits, from its welcome."""

    max_frame_bytes: int
    max_batch: int
    max_connections_per_key: int
    max_credit: int
    #: How long a delivered task may stay unsettled (and not extended)
    #: before the gateway takes it back as a failed attempt.
    settle_timeout: timedelta


@dataclass(frozen=True)
class Welcome:
    """Who the server took this client for, and what it may do."""

    #: The name the key was registered under.
    key: str
    #: This connection's id, as the server's logs name it.
    connection: str
    #: The streams the key may publish to.
    publish: tuple[str, ...]
    #: The consumers the key may take tasks from, as ``STREAM/CONSUMER``.
    consume: tuple[str, ...]
    limits: Limits


@dataclass(frozen=True)
class Event:
    """An event to publish. Only ``subject`` and ``payload`` are required.

    ``payload`` is any JSON value. ``priority`` is 1 to 5 (5 the most
    urgent; the server's default is 1). ``deliver_at`` must be
    timezone-aware. An ``idempotency_key`` (1 to 200 characters) makes a
    retried publish safe: within 24 hours, the same key on the same stream
    from the same gateway key is stored once, and the retry is told the
    first event's id (another gateway key's idempotency keys are its own).
    """

    subject: str
    payload: Any
    metadata: Mapping[str, str] | None = None
    key: str | None = None
    priority: int | None = None
    deliver_at: datetime | None = None
    idempotency_key: str | None = None

    def to_frame(self) -> dict[str, Any]:
        """The event as a ``publish`` frame carries it: unset fields are left
        out, since the server refuses fields it does not know, and null for
        some it does."""
        frame: dict[str, Any] = {"subject": self.subject, "payload": self.payload}
        if self.metadata is not None:
            frame["metadata"] = dict(self.metadata)
        if self.key is not None:
            frame["key"] = self.key
        if self.priority is not None:
            frame["priority"] = self.priority
        if self.deliver_at is not None:
            frame["deliver_at"] = _rfc3339(self.deliver_at, "deliver_at")
        if self.idempotency_key is not None:
            frame["idempotency_key"] = self.idempotency_key
        return frame


@dataclass(frozen=True)
class Published:
    """One published event: its id, and whether its idempotency key had been
    used already (then ``id`` is the event stored the first time, and
    nothing new was stored)."""

    id: int
    duplicate: bool


@dataclass(eq=False)
class Task:
    """A task delivered to this client: one attempt at one event for one
    consumer. It is this client's until it is settled (:meth:`ack`,
    :meth:`nack`, :meth:`defer`), until the connection closes (then it is
    released at once), or until the settle timeout passes without
    :meth:`extend` (then it fails this attempt and ``expired`` turns true).
    """

    event_id: int
    #: 1 on the first delivery; a retry, a requeue or a release counts one more.
    attempt: int
    subject: str
    payload: Any
    metadata: dict[str, str]
    key: str | None
    priority: int
    created_at: datetime
    #: Names this attempt when settling it; a string of digits, new for every attempt.
    lease_token: str
    stream: str
    consumer: str
    subscription: Subscription = field(repr=False)
    #: Set when the gateway took the task back (settle timeout): settling it
    #: now raises :class:`LeaseLost`, and a handler may stop working on it.
    expired: bool = False

    async def ack(self) -> None:
        """Completes the task. It runs in the gateway's transaction, not in
        one of yours: the effect of a handler is at least once."""
        await self.subscription._settle(self, {"type": "ack"})

    async def nack(
        self, action: NackAction = "requeue_end", reason: str | None = None
    ) -> str:
        """Gives the task back: requeued at the end or the start (an attempt;
        on the last one it is discarded), or discarded at once. Returns the
        task's new state, ``"available"`` or ``"discarded"``."""
        frame: dict[str, Any] = {"type": "nack", "action": action}
        if reason is not None:
            frame["reason"] = reason
        answer = await self.subscription._settle(self, frame)
        return str(answer["state"])

    async def defer(
        self,
        delay: timedelta | None = None,
        *,
        until: datetime | None = None,
        priority: int | None = None,
        reason: str | None = None,
    ) -> datetime:
        """Puts the task off by ``delay`` or until ``until`` (exactly one;
        timezone-aware), optionally with a new priority (1 to 5). Not a
        failure, and never a discard, though the next delivery is a new
        attempt. Returns when it is due again."""
        if (delay is None) == (until is None):
            raise ValueError("defer takes exactly one of delay and until")
        frame: dict[str, Any] = {"type": "defer"}
        if delay is not None:
            if delay < timedelta(0):
                raise ValueError(f"a delay is not negative, {delay} is")
            frame["delay_ms"] = delay // timedelta(milliseconds=1)
        if until is not None:
            frame["until"] = _rfc3339(until, "until")
        if priority is not None:
            frame["priority"] = priority
        if reason is not None:
            frame["reason"] = reason
        answer = await self.subscription._settle(self, frame)
        return _parse_time(answer["due"])

    async def extend(self) -> None:
        """Keeps the task another settle timeout (see :attr:`Limits.settle_timeout`):
        for a handler that takes longer than that."""
        await self.subscription._settle(self, {"type": "extend"}, settles=False)


class Subscription:
    """Tasks of one consumer, delivered to this client at most ``credit`` at
    a time: the gateway claims a task for the client only while fewer are
    in its hands (delivered and not settled). Iterate it to take them::

        async for task in subscription:
            await handle(task.payload)
            await task.ack()

    Iteration ends when the client is closed, and raises the error that
    ended the connection otherwise (:class:`GatewayError`, e.g. ``revoked``,
    or :class:`ConnectionClosed`).
    """

    def __init__(
        self,
        client: Client,
        subscription_id: str,
        stream: str,
        consumer: str,
        credit: int,
        on_expired: Callable[[Task], None] | None,
    ) -> None:
        self._client = client
        self.id = subscription_id
        self.stream = stream
        self.consumer = consumer
        #: How many tasks may be in this client's hands at once.
        self.credit = credit
        self._on_expired = on_expired
        self._in_hand: dict[str, Task] = {}
        # Tasks not yet taken by the iterator; None once the connection ended.
        self._queue: asyncio.Queue[Task | None] = asyncio.Queue()
        self._ended: SluiceError | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.stream}/{self.consumer} credit={self.credit} in_hand={len(self._in_hand)}>"

    @property
    def in_hand(self) -> list[Task]:
        """The tasks delivered and not yet settled nor expired, oldest first."""
        return list(self._in_hand.values())

    async def add_credit(self, n: int) -> int:
        """Lets ``n`` more tasks be in this client's hands at once; returns the
        credit now. Over the server's ``max_credit`` in all raises
        :class:`GatewayError` ``credit_exceeded`` and changes nothing."""
        answer = await self._client._request(
            {"type": "credit", "subscription": self.id, "add": n}
        )
        self.credit = int(answer["credit"])
        return self.credit

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Task:
        while True:
            task = await self._queue.get()
            if task is None:
                self._queue.put_nowait(None)  # every later call ends too
                if self._ended is not None:
                    raise self._ended.with_traceback(None)
                raise StopAsyncIteration
            if not task.expired:
                return task

    def _deliver(self, task: Task) -> None:
        self._in_hand[task.lease_token] = task
        self._queue.put_nowait(task)

    def _expire(self, lease_token: str) -> None:
        task = self._in_hand.pop(lease_token, None)
        if task is None:
            return  # settled meanwhile: the settle's answer says lease_lost
        task.expired = True
        log.warning(
            "task of event %s (%s/%s) expired: not settled within the settle timeout",
            task.event_id,
            self.stream,
            self.consumer,
        )
        if self._on_expired is not None:
            try:
                self._on_expired(task)
            except Exception:
                log.exception("on_expired failed")

    async def _settle(
        self, task: Task, frame: dict[str, Any], settles: bool = True
    ) -> dict[str, Any]:
        """Sends a request about the task by its lease token; the task leaves
        this client's hands once settled, or when the server says it is not
        this client's any more."""
        try:
            answer = await self._client._request(
                {**frame, "lease_token": task.lease_token}
            )
        except GatewayError as e:
            if e.code is ErrorCode.LEASE_LOST:
                self._in_hand.pop(task.lease_token, None)
            raise
        if settles:
            self._in_hand.pop(task.lease_token, None)
        return answer

    def _end(self, error: SluiceError | None) -> None:
        """The connection ended: queued tasks are dropped (the gateway
        releases every task of a closed connection), and the iterator
        stops, with the error if there is one."""
        self._ended = error
        self._in_hand.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class Client:
    """A logged-in connection to the gateway. Make one with :meth:`connect`
    and close it when done, best with ``async with``::

        async with await Client.connect(url, key, client_name="billing/1.0") as client:
            await client.publish_one("orders", "orders.eu.created", {"id": 42})
    """

    def __init__(self, websocket: ClientConnection, welcome: Welcome) -> None:
        """Use :meth:`connect`: this wraps a socket that has logged in already."""
        self._ws = websocket
        self.welcome = welcome
        self._ids = itertools.count(1)
        # Requests sent and not answered, by id, in the order sent.
        self._pending: dict[int, _Waiting] = {}
        self._subscriptions: dict[str, Subscription] = {}
        # Why the connection ended, once it has.
        self._ended: SluiceError | None = None
        # An error frame that closes the connection: it, not the close, is why.
        self._refusal: GatewayError | None = None
        self._closing = False
        self._reader = asyncio.create_task(
            self._read(), name=f"sluice-gateway-reader-{welcome.connection}"
        )

    @classmethod
    async def connect(
        cls,
        url: str,
        private_key: Ed25519PrivateKey,
        *,
        client_name: str | None = None,
        open_timeout: float = 10.0,
    ) -> Client:
        """Opens a connection to ``url`` (``ws://HOST:PORT/gateway``) and logs
        in with ``private_key``. ``client_name`` (at most 100 characters)
        names this program in the server's logs.

        Raises :class:`GatewayError` when the server refuses the login
        (``auth_failed`` for a key that is unknown, revoked or does not
        verify; ``too_many_connections``), :class:`Unavailable` when the
        server refuses the connection for now (too many logging in),
        :class:`ConnectionClosed` when the connection ends first, and
        :class:`TimeoutError` when the login takes over ``open_timeout``
        seconds.
        """
        try:
            websocket = await ws_connect(
                url,
                subprotocols=[Subprotocol(PROTOCOL)],
                open_timeout=open_timeout,
                # Deliveries carry payloads published by anyone, also through
                # the Rust library, which has no frame limit: take them all.
                max_size=None,
            )
        except InvalidStatus as e:
            if e.response.status_code != 503:
                raise
            body = e.response.body.decode(errors="replace").strip()
            raise Unavailable(
                f"the server refused the connection for now (HTTP 503): {body}"
            ) from None
        try:
            async with asyncio.timeout(open_timeout):
                welcome = await _login(
                    websocket,
                    private_key,
                    client_name or f"sluice-client-py/{__version__}",
                )
        except BaseException:
            await websocket.close()
            raise
        log.debug(
            "logged in to %s as key %r, connection %s",
            url,
            welcome.key,
            welcome.connection,
        )
        return cls(websocket, welcome)

    @property
    def limits(self) -> Limits:
        """The server's limits, from its welcome."""
        return self.welcome.limits

    @property
    def closed(self) -> bool:
        """Whether the connection has ended, by :meth:`close` or otherwise."""
        return self._ended is not None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connection. The gateway releases the tasks still in this
        client's hands at once (their attempt counted, not as a failure);
        requests still waiting raise :class:`ConnectionClosed` and
        subscriptions stop iterating."""
        self._closing = True
        await self._ws.close()
        await self._reader

    async def wait_closed(self) -> SluiceError:
        """Waits until the connection ends, and returns why."""
        await asyncio.shield(self._reader)
        assert self._ended is not None
        return self._ended

    async def publish(self, stream: str, events: Sequence[Event]) -> list[Published]:
        """Publishes ``events`` (1 to ``max_batch``) to ``stream`` in one
        transaction: all or none. Returns one :class:`Published` per event,
        in order. When it raises :class:`ConnectionClosed` the events may or
        may not be stored: retry with the same idempotency keys."""
        frame = {
            "type": "publish",
            "stream": stream,
            "events": [event.to_frame() for event in events],
        }
        answer = await self._request(frame)
        return [
            Published(id=int(e["id"]), duplicate=bool(e["duplicate"]))
            for e in answer["events"]
        ]

    async def publish_one(
        self,
        stream: str,
        subject: str,
        payload: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        key: str | None = None,
        priority: int | None = None,
        deliver_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publishes one event; the fields are :class:`Event`'s."""
        event = Event(
            subject, payload, metadata, key, priority, deliver_at, idempotency_key
        )
        (published,) = await self.publish(stream, [event])
        return published

    async def subscribe(
        self,
        stream: str,
        consumer: str,
        credit: int = 1,
        *,
        on_expired: Callable[[Task], None] | None = None,
    ) -> Subscription:
        """Starts taking tasks from ``consumer`` of ``stream``, at most
        ``credit`` in this client's hands at once. ``on_expired`` is called
        with each task the gateway takes back for want of a settle in time.

        One connection subscribes to a consumer once (a second time is
        ``invalid``); several clients on one consumer share its tasks.
        """
        frame = {
            "type": "subscribe",
            "stream": stream,
            "consumer": consumer,
            "credit": credit,
        }
        answer = await self._request(frame, on_expired=on_expired)
        return self._subscriptions[answer["subscription"]]

    async def ping(self) -> float:
        """Asks the gateway for a pong; returns the round trip in seconds."""
        started = time.monotonic()
        await self._request({"type": "ping"})
        return time.monotonic() - started

    async def _request(
        self, frame: dict[str, Any], on_expired: Callable[[Task], None] | None = None
    ) -> dict[str, Any]:
        """Sends a request with a new id and returns its answer, or raises the
        error frame that answered it."""
        if self._ended is not None:
            raise self._ended.with_traceback(None)
        request_id = next(self._ids)
        text = json.dumps({**frame, "id": request_id})
        size = len(text.encode())
        if size > self.limits.max_frame_bytes:
            # The server would close the connection; refuse it here and keep it.
            raise GatewayError(
                ErrorCode.FRAME_TOO_LARGE,
                f"a {frame['type']} of {size} bytes, over max_frame_bytes ({self.limits.max_frame_bytes}); not sent",
            )
        waiting = _Waiting(
            frame, asyncio.get_running_loop().create_future(), on_expired
        )
        self._pending[request_id] = waiting
        try:
            await self._ws.send(text)
            return await waiting.answer
        except WebSocketClosed:
            # The reader ends every waiting request; this one raced it.
            await asyncio.shield(self._reader)
            assert self._ended is not None
            raise self._ended.with_traceback(None) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        """Reads every frame until the connection ends, then ends what still
        waits on it."""
        ended: SluiceError = ConnectionClosed("the connection closed")
        try:
            while True:
                message = await self._ws.recv()
                if isinstance(message, bytes):
                    raise ProtocolError("the server sent a binary frame")
                try:
                    frame = json.loads(message)
                    self._dispatch(frame)
                except (ValueError, KeyError, TypeError) as e:
                    raise ProtocolError(
                        f"a frame this client cannot read ({e!r}): {message[:200]}"
                    ) from e
        except WebSocketClosed as e:
            ended = ConnectionClosed(f"the connection closed ({e})")
        except ProtocolError as e:
            ended = e
            await self._ws.close(code=1002, reason="protocol error")
        finally:
            if self._closing:
                ended = ConnectionClosed("the client closed the connection")
            self._end(self._refusal or ended)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "deliver":
            subscription = self._subscriptions[frame["subscription"]]
            subscription._deliver(_task(subscription, frame))
        elif kind == "expired":
            self._subscriptions[frame["subscription"]]._expire(
                str(frame["lease_token"])
            )
        elif kind == "error":
            error = GatewayError.from_frame(frame)
            if error.code.closes:
                self._refusal = error
                log.warning("the gateway closes the connection: %s", error)
            # Without an id the server could not read the request that far;
            # answers come in order, so it is the oldest one waiting.
            request_id = error.request_id
            if request_id is None and not error.code.closes and self._pending:
                request_id = next(iter(self._pending))
            waiting = (
                self._pending.pop(request_id, None) if request_id is not None else None
            )
            if waiting is not None and not waiting.answer.done():
                waiting.answer.set_exception(error)
        elif kind in _ANSWERS:
            waiting = self._pending.pop(frame["id"], None)
            if waiting is None:
                return  # whoever asked stopped waiting
            if kind == "subscribed":
                # Registered here, before the next frame is read: deliveries
                # for it may follow the answer at once.
                request = waiting.request
                self._subscriptions[frame["subscription"]] = Subscription(
                    self,
                    frame["subscription"],
                    request["stream"],
                    request["consumer"],
                    request["credit"],
                    waiting.on_expired,
                )
            if not waiting.answer.done():
                waiting.answer.set_result(frame)
        else:
            raise ProtocolError(f"a frame of unknown type {kind!r}")

    def _end(self, error: SluiceError) -> None:
        self._ended = error
        for waiting in self._pending.values():
            if not waiting.answer.done():
                waiting.answer.set_exception(error)
        self._pending.clear()
        for subscription in self._subscriptions.values():
            subscription._end(None if self._closing else error)


@dataclass
class _Waiting:
    """A request sent and not answered yet."""

    request: dict[str, Any]
    answer: asyncio.Future[dict[str, Any]]
    # For a subscribe: the callback of the subscription it makes.
    on_expired: Callable[[Task], None] | None = None


async def _login(
    websocket: ClientConnection, key: Ed25519PrivateKey, client_name: str
) -> Welcome:
    """The challenge, the hello, the welcome."""
    challenge = await _login_frame(websocket)
    if challenge.get("type") != "challenge" or challenge.get("protocol") != PROTOCOL:
        raise ProtocolError(f"expected a {PROTOCOL} challenge, got {challenge!r}")
    signature = sign_login(key, base64.b64decode(challenge["nonce"]))
    hello = {
        "type": "hello",
        "public_key": public_key_b64(key),
        "signature": base64.b64encode(signature).decode("ascii"),
        "client": client_name,
    }
    await websocket.send(json.dumps(hello))
    welcome = await _login_frame(websocket)
    if welcome.get("type") != "welcome":
        raise ProtocolError(f"expected a welcome, got {welcome!r}")
    limits = welcome["limits"]
    return Welcome(
        key=welcome["key"],
        connection=welcome["connection"],
        publish=tuple(welcome["publish"]),
        consume=tuple(welcome["consume"]),
        limits=Limits(
            max_frame_bytes=limits["max_frame_bytes"],
            max_batch=limits["max_batch"],
            max_connections_per_key=limits["max_connections_per_key"],
            max_credit=limits["max_credit"],
            settle_timeout=timedelta(milliseconds=limits["settle_timeout_ms"]),
        ),
    )


async def _login_frame(websocket: ClientConnection) -> dict[str, Any]:
    """The next frame of the login, raising the error frame if it is one."""
    try:
        message = await websocket.recv()
    except WebSocketClosed as e:
        raise ConnectionClosed(
            f"the connection closed during the login ({e})"
        ) from None
    if isinstance(message, bytes):
        raise ProtocolError("the server sent a binary frame")
    frame = json.loads(message)
    if not isinstance(frame, dict):
        raise ProtocolError(f"a frame is a JSON object, not {message[:200]}")
    if frame.get("type") == "error":
        raise GatewayError.from_frame(frame)
    return frame


def _task(subscription: Subscription, frame: dict[str, Any]) -> Task:
    return Task(
        event_id=int(frame["event_id"]),
        attempt=int(frame["attempt"]),
        subject=frame["subject"],
        payload=frame["payload"],
        metadata=dict(frame["metadata"]),
        key=frame["key"],
        priority=int(frame["priority"]),
        created_at=_parse_time(frame["created_at"]),
        lease_token=str(frame["lease_token"]),
        stream=frame["stream"],
        consumer=frame["consumer"],
        subscription=subscription,
    )


def _rfc3339(moment: datetime, name: str) -> str:
    """A time as the server reads it. Naive times are refused: whose local
    time they mean is a guess this client does not make."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware, e.g. datetime.now(timezone.utc)"
        )
    return moment.isoformat()


def _parse_time(text: str) -> datetime:
    # Python 3.11's fromisoformat reads RFC 3339, `Z` and any fraction included.
    return datetime.fromisoformat(text)
