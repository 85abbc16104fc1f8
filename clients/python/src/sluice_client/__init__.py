"""Python client of Sluice's WebSocket gateway (protocol ``sluice.v1``,
docs/GATEWAY.md in the Sluice repository): publish events to streams and
take tasks from consumers, from asyncio code.

Over the gateway a task is processed at least once: an ack runs in the
gateway's transaction, not in yours, so make handlers idempotent.
"""

from ._version import __version__
from .client import (
    Client,
    Event,
    Limits,
    NackAction,
    Published,
    Subscription,
    Task,
    Welcome,
)
from .errors import (
    ConnectionClosed,
    ErrorCode,
    GatewayError,
    LeaseLost,
    ProtocolError,
    SluiceError,
    Unavailable,
)
from .keys import generate_key, load_private_key, private_key_pem, public_key_b64

__all__ = [
    "Client",
    "ConnectionClosed",
    "ErrorCode",
    "Event",
    "GatewayError",
    "LeaseLost",
    "Limits",
    "NackAction",
    "ProtocolError",
    "Published",
    "SluiceError",
    "Subscription",
    "Task",
    "Unavailable",
    "Welcome",
    "__version__",
    "generate_key",
    "load_private_key",
    "private_key_pem",
    "public_key_b64",
]
