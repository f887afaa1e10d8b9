"""The thing's device shadow over AWS IoT, for the AWS IoT link (awsiot.py), which owns the connection.

`IotShadowClientV2` does the shadow work: `get`/`update` matched to their answers by clientToken, and the
delta stream of the classic or named shadow, which it subscribes again after every reconnect. Each time
that stream is (re)established this asks for the shadow (`get`), so a delta set while the device was
offline is recovered.

The SDK is imported inside the functions, so this module loads without it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any, AsyncIterator, Awaitable, Callable

from facewatchd.link.awsiot_diagnosis import crt_error_text
from facewatchd.link.base import LinkDown

GET_RETRY_MIN_S = 2.0  # an unanswered shadow get is asked again after this, doubling


def shadow_client(mqtt_client: Any, operation_timeout_s: int) -> Any:
    """The SDK's shadow client over the link's awscrt.mqtt5.Client (built with it, in a thread)."""
    from awscrt import mqtt_request_response
    from awsiot import iotshadow

    return iotshadow.IotShadowClientV2(mqtt_client, mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=3, max_streaming_subscriptions=1,
        operation_timeout_in_seconds=operation_timeout_s))


class AwsIotShadow:
    """One thing's classic (`shadow_name` None) or named shadow: its delta stream, gets and updates.

    `wait` awaits an SDK future (the link's, with its timeout backstop); `threadsafe` wraps a handler as
    an awscrt callback that runs it on the event loop; `on_halted` hears that the broker refused the
    delta subscription."""

    def __init__(self, thing: str, shadow_name: str | None, log: Any, wait: Callable[[Future[Any]], Awaitable[Any]],
                 retry_min_s: float, retry_max_s: float, on_halted: Callable[[str], None]) -> None:
        self.thing = thing
        self.name = shadow_name
        named = f"/name/{shadow_name}" if shadow_name else ""
        self.topic = f"$aws/things/{thing}/shadow{named}"
        self.topic_update = f"{self.topic}/update"
        self.client: Any = None  # awsiot.iotshadow.IotShadowClientV2
        self._log = log
        self._wait = wait
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._on_halted = on_halted
        self._stream: Any = None  # the delta stream; dropping it closes it
        self._sync: asyncio.Task[None] | None = None
        self._deltas: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: the link closed

    def open(self, client: Any, threadsafe: Callable[[Callable[[Any], None]], Callable[[Any], None]]) -> None:
        """Take the shadow client and open the delta stream (before the MQTT client starts)."""
        from awsiot import ServiceStreamOptions, iotshadow

        self.client = client
        options = ServiceStreamOptions(incoming_event_listener=threadsafe(self._on_delta),
                                       subscription_status_listener=threadsafe(self._on_stream_status),
                                       deserialization_failure_listener=threadsafe(self._on_bad_delta))
        if self.name:
            stream = client.create_named_shadow_delta_updated_stream(
                iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=self.thing, shadow_name=self.name),
                options)
        else:
            stream = client.create_shadow_delta_updated_stream(
                iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=self.thing), options)
        stream.open()
        self._stream = stream

    def stop_sync(self) -> None:
        """Stop asking for the shadow (the connection dropped, or the link closes)."""
        if self._sync is not None:
            self._sync.cancel()

    def close(self) -> None:
        """Drop the stream and the client, and end every reader of `deltas`."""
        self._stream = self.client = None
        self._deltas.put_nowait(None)

    async def deltas(self) -> AsyncIterator[dict[str, Any]]:
        while (state := await self._deltas.get()) is not None:
            yield state
        self._deltas.put_nowait(None)  # keep the link closed for any other reader

    async def update(self, state: dict[str, Any]) -> None:
        """Send a checked `desired`/`reported` state: a rejection is logged, no answer raises LinkDown."""
        from awsiot import V2ServiceException, iotshadow

        shadow = self.client
        shadow_state = iotshadow.ShadowState.from_payload(state)  # keeps nulls: a null deletes a key
        try:
            if self.name:
                await self._wait(shadow.update_named_shadow(iotshadow.UpdateNamedShadowRequest(
                    thing_name=self.thing, shadow_name=self.name, state=shadow_state)))
            else:
                await self._wait(shadow.update_shadow(iotshadow.UpdateShadowRequest(
                    thing_name=self.thing, state=shadow_state)))
        except V2ServiceException as e:
            if e.modeled_error is None:
                raise LinkDown(f"shadow update failed: {crt_error_text(e)}") from e
            # The service answered on /update/rejected: retrying the same update cannot help.
            self._log.warning("shadow request rejected", topic=f"{self.topic_update}/rejected",
                              code=e.modeled_error.code, message=e.modeled_error.message)

    # -- awscrt events, on the event loop ---------------------------------------------------------

    def _on_stream_status(self, event: Any) -> None:
        from awscrt.mqtt_request_response import SubscriptionStatusEventType as Status

        if event.type == Status.SUBSCRIPTION_ESTABLISHED:
            # (Re)subscribed: whatever changed while we were not subscribed is in the shadow's delta.
            if self._sync is not None:
                self._sync.cancel()
            self._sync = asyncio.create_task(self._sync_shadow(), name=f"awsiot-shadow-get-{self.thing}")
        elif event.type == Status.SUBSCRIPTION_LOST:
            self._log.info("shadow delta subscription lost, the SDK subscribes again on reconnect")
        else:  # HALTED: the broker refuses the subscription (e.g. the IoT policy lacks iot:Subscribe)
            error = f"shadow delta subscription halted: {crt_error_text(event.error)}"
            self._on_halted(error)
            self._log.error("shadow delta subscription halted", error=error)

    def _on_delta(self, event: Any) -> None:
        state = getattr(event, "state", None)
        if isinstance(state, dict):
            self._deltas.put_nowait(state)
        else:
            self._log.warning("skipped malformed message", topic=f"{self.topic_update}/delta",
                              error="delta without a `state` object")

    def _on_bad_delta(self, failure: Any) -> None:
        self._log.warning("skipped malformed message", topic=f"{self.topic_update}/delta",
                          error=str(getattr(failure, "inner_error", failure)))

    async def _sync_shadow(self) -> None:
        """Ask for the shadow until it answers; its delta covers whatever changed while we were away."""
        from awsiot import V2ServiceException, iotshadow

        delay = max(GET_RETRY_MIN_S, self._retry_min_s)
        while True:
            shadow = self.client
            if shadow is None:
                return
            try:
                if self.name:
                    response = await self._wait(shadow.get_named_shadow(
                        iotshadow.GetNamedShadowRequest(thing_name=self.thing, shadow_name=self.name)))
                else:
                    response = await self._wait(shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=self.thing)))
            except V2ServiceException as e:
                if e.modeled_error is not None:
                    if e.modeled_error.code == 404:
                        self._log.debug("no shadow yet", message=e.modeled_error.message)
                    else:
                        self._log.warning("shadow request rejected", topic=f"{self.topic}/get/rejected",
                                          code=e.modeled_error.code, message=e.modeled_error.message)
                    return
                self._log.info("shadow get unanswered, asking again", error=crt_error_text(e), after_s=delay)
            except LinkDown as e:
                self._log.info("shadow get unanswered, asking again", error=str(e), after_s=delay)
            else:
                delta = response.state.delta if response.state is not None else None
                if isinstance(delta, dict) and delta:
                    self._deltas.put_nowait(delta)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self._retry_max_s, delay))
