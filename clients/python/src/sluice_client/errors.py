"""The errors of the client: the gateway's refusals (error frames), a
connection that ended, and a server that broke the protocol."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """An error frame's `code` (docs/GATEWAY.md, "Errors"): what a caller
    branches on. The message is for people; the code is for programs."""

    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    NOT_AUTHENTICATED = "not_authenticated"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    FRAME_TOO_LARGE = "frame_too_large"
    REVOKED = "revoked"
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    BATCH_TOO_LARGE = "batch_too_large"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CREDIT_EXCEEDED = "credit_exceeded"
    LEASE_LOST = "lease_lost"
    INTERNAL = "internal"

    @property
    def closes(self) -> bool:
        """Whether the server closes the connection after this error."""
        return self in _CLOSING


_CLOSING = frozenset(
    {
        ErrorCode.AUTH_FAILED,
        ErrorCode.AUTH_TIMEOUT,
        ErrorCode.NOT_AUTHENTICATED,
        ErrorCode.TOO_MANY_CONNECTIONS,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.REVOKED,
    }
)


class SluiceError(Exception):
    """The base of every error this package raises."""


class GatewayError(SluiceError):
    """The gateway refused a request, or the login, with an error frame.

    Unless ``code.closes``, the connection stays open and nothing of the
    refused request was stored, so the caller may carry on (and, for
    ``internal``, retry).
    """

    def __init__(self, code: ErrorCode, message: str, request_id: Any = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id

    @staticmethod
    def from_frame(frame: dict[str, Any]) -> GatewayError:
        """The error an error frame stands for, as its most specific class."""
        try:
            code = ErrorCode(frame["code"])
        except (KeyError, ValueError):
            raise ProtocolError(
                f"an error frame without a known code: {frame!r}"
            ) from None
        cls = LeaseLost if code is ErrorCode.LEASE_LOST else GatewayError
        return cls(code, str(frame.get("message", "")), frame.get("id"))


class LeaseLost(GatewayError):
    """The task is no longer this client's (settled already, expired,
    released or never delivered on this connection); nothing changed.

    Its own class because a handler settling a task it held too long is
    the one refusal most programs catch and carry on from.
    """


class ConnectionClosed(SluiceError):
    """The connection ended before the answer came, without an error frame
    saying why (the network, the server stopping, or :meth:`Client.close`).

    A publish that got this may or may not have been stored: retry it with
    the same idempotency keys.
    """


class Unavailable(ConnectionClosed):
    """The server refused the connection for now, before the login (HTTP
    503 to the WebSocket upgrade: too many connections are logging in,
    ``--gateway-max-unauthenticated``). Nothing happened; connect again
    shortly. A :class:`ConnectionClosed`, so code that reconnects on one
    reconnects on this too."""


class ProtocolError(SluiceError):
    """The server sent something that is not protocol ``sluice.v1``; the
    client closes the connection, as it can no longer trust what it reads."""
