"""What every link offers the daemon: send an unknown face up, receive shadow deltas, update the shadow.

Kinds: local.py (in-process resolver and shadow, the embedded default), and, over the network,
mqtt.py (aiomqtt, any broker), awsiot.py (awsiotsdk MQTT5 + mutual TLS), greengrass.py (IPC).
A link is an async context manager; `deltas()` yields the shadow's delta state (the `state` object of
a `/delta` message) for as long as the link lives, across reconnects.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, runtime_checkable

from facewatchd.messages import FaceQuery


MAX_PAYLOAD_BYTES = 128 * 1024  # AWS IoT's MQTT payload limit; every link holds every broker to it


class LinkDown(ConnectionError):
    """The link cannot send now; the caller keeps the message (outbox) and retries later."""


class LinkAuthError(LinkDown):
    """The broker, TLS or IPC refused us; retrying will not help until the configuration changes."""


def availability_topic(thing: str) -> str:
    return f"facewatchd/{thing}/availability"


@runtime_checkable
class Link(Protocol):
    thing: str

    @property
    def online(self) -> bool: ...

    async def __aenter__(self) -> "Link": ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def send_query(self, query: FaceQuery) -> None:
        """Publish an unknown face to the resolver (at least once). Raises LinkDown when offline."""

    def deltas(self) -> AsyncIterator[dict[str, Any]]:
        """Shadow delta states, in order; after a reconnect, first the current delta from a shadow get."""

    async def update_shadow(self, state: dict[str, Any]) -> None:
        """Send `{"desired": ..., "reported": ...}` as a shadow update. Raises LinkDown when offline."""
