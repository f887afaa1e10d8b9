"""A link to AWS IoT Core through the AWS IoT Device SDK v2 (awsiotsdk): MQTT 5 with mutual TLS.

awscrt's MQTT5 client does the connection work: a clean session on every connect, keep-alive pings,
and reconnects with exponential backoff and full jitter (all set explicitly below). The shadow work
(gets, updates, the delta stream) is awsiot_shadow.py's, over the same client. Like the MQTT link it
keeps a retained `online`/`offline` on `facewatchd/<thing>/availability` (the will says `offline`),
refuses payloads over AWS IoT's 128 KB, and publishes at QoS 1 only.

awscrt calls back on its own threads: every callback is handed to the event loop with
`call_soon_threadsafe`, and the SDK's concurrent futures are awaited through `asyncio.wrap_future`.

When a connect fails, or is still pending after two seconds, the link runs one TLS handshake of its own
to name the cause (awsiot_diagnosis.py): `wait_online` then raises LinkAuthError at once on a refusal.

The SDK is imported inside the link, so this module (and its config class) loads without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from concurrent.futures import Future
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from facewatchd.link.awsiot_diagnosis import crt_error_text, describe_failure, tls_probe
from facewatchd.link.awsiot_shadow import AwsIotShadow, shadow_client
from facewatchd.link.base import MAX_PAYLOAD_BYTES, LinkAuthError, LinkDown, availability_topic
from facewatchd.messages import FaceQuery, MessageError, uplink_topic

T = TypeVar("T")

_PROBE_AFTER_S = 2.0  # a connect attempt still pending after this gets a TLS check
_PROBE_EVERY_S = 5.0  # at most one TLS check per this interval, however fast the reconnects
_STOP_TIMEOUT_S = 5.0

class AwsIotLinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["awsiot"] = "awsiot"
    endpoint: str = Field(min_length=1, description="AWS IoT data endpoint (xxxx-ats.iot.<region>.amazonaws.com)")
    port: int = Field(8883, ge=1, le=65535)
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None  # None: the system trust store (which holds Amazon's root CAs)
    client_id: str | None = Field(None, min_length=1, max_length=128)  # default: the thing name
    keep_alive_s: int = Field(30, ge=5, le=1200)  # AWS IoT accepts 30-1200 and raises lower values to 30
    shadow_name: str | None = Field(None, pattern=r"^[A-Za-z0-9:_-]{1,64}$")  # None: the classic shadow
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)  # TCP connect, and again CONNACK
    operation_timeout_s: int = Field(10, ge=1)  # puback, shadow get/update answers

    @model_validator(mode="after")
    def _consistent(self) -> "AwsIotLinkConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class AwsIotLink:
    """The Link protocol (facewatchd/link/base.py) over AWS IoT Core with the AWS IoT Device SDK v2."""

    def __init__(self, thing: str, config: AwsIotLinkConfig) -> None:
        self.thing = thing
        self.config = config
        self.client_id = config.client_id or thing
        self.availability_topic = availability_topic(thing)
        self._log = structlog.get_logger(__name__).bind(thing=thing, endpoint=f"{config.endpoint}:{config.port}")
        self._shadow = AwsIotShadow(thing, config.shadow_name, self._log, self._wait, config.reconnect_min_s,
                                    config.reconnect_max_s, on_halted=self._on_shadow_halted)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None  # awscrt.mqtt5.Client
        self._connected = False
        self._state_changed = asyncio.Event()
        self._stopped: asyncio.Future[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._attempt_watch: asyncio.TimerHandle | None = None
        self._last_probe = -math.inf
        self._connect_failure: str | None = None  # what awscrt said about the last failed connect
        self._tls_problem: str | None = None  # what the last TLS check found
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.last_error: str | None = None
        self.auth_failed = False

    # -- Link protocol ---------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._connected

    async def __aenter__(self) -> "AwsIotLink":
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        try:
            self._client, shadow = await asyncio.to_thread(self._build_clients)  # reads the key files
        except Exception as e:  # awscrt raises on a missing, unreadable or mismatched cert/key/CA file
            raise LinkAuthError(f"cannot set up the AWS IoT client for {self._where()}: {crt_error_text(e)} "
                                f"[{self._files()}]") from e
        self._shadow.open(shadow, self._threadsafe)
        self._client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connected:
            # A clean disconnect does not fire the will, so say `offline` ourselves.
            with contextlib.suppress(LinkDown):
                await self._publish(self.availability_topic, b"offline", retain=True)
        self._shadow.stop_sync()
        for task in (self._probe, *self._background):
            if task is not None:
                task.cancel()
        if self._attempt_watch is not None:
            self._attempt_watch.cancel()
        self._closing = True
        if self._client is not None and self._stopped is not None:
            from awscrt import mqtt5

            was_connected = self._connected
            self._client.stop(mqtt5.DisconnectPacket())
            if was_connected:  # let the DISCONNECT go out; a pending connect (e.g. TLS) is just abandoned
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._stopped), _STOP_TIMEOUT_S)
        self._connected = False
        self._shadow.close()
        self._client = None

    async def send_query(self, query: FaceQuery) -> None:
        await self._publish(uplink_topic(self.thing), query.to_json())

    def deltas(self) -> AsyncIterator[dict[str, Any]]:
        return self._shadow.deltas()

    async def update_shadow(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not set(state) <= {"desired", "reported"}:
            raise MessageError("a shadow update takes an object with `desired` and/or `reported` only")
        payload = json.dumps({"state": state}, separators=(",", ":")).encode()
        self._check_size(self._shadow.topic_update, payload)
        self._require_online()
        await self._shadow.update(state)

    # -- extras ----------------------------------------------------------------------------------

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until connected; raises LinkAuthError as soon as the broker/TLS refuses us,
        LinkDown (naming the last error) on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.online:
            if self.auth_failed and self.last_error:
                raise LinkAuthError(f"cannot connect to {self._where()}: {self.last_error} [{self._files()}]")
            self._state_changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise LinkDown(f"not connected to {self._where()} after {timeout}s: {self.last_error or 'no answer'}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)

    def _where(self) -> str:
        return f"{self.config.endpoint}:{self.config.port} as {self.client_id!r}"

    def _files(self) -> str:
        c = self.config
        return ", ".join(f"{k}={v}" for k, v in (("ca_file", c.ca_file), ("cert_file", c.cert_file),
                                                  ("key_file", c.key_file)) if v)

    # -- building the SDK clients (in a thread) ---------------------------------------------------

    def _build_clients(self) -> tuple[Any, Any]:
        from awscrt import io, mqtt5
        from awsiot import mqtt5_client_builder

        c = self.config
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = int(c.connect_timeout_s * 1000)
        client = mqtt5_client_builder.mtls_from_path(
            endpoint=c.endpoint, port=c.port, cert_filepath=str(c.cert_file), pri_key_filepath=str(c.key_file),
            ca_filepath=str(c.ca_file) if c.ca_file else None, client_id=self.client_id,
            keep_alive_interval_sec=c.keep_alive_s,
            ping_timeout_ms=min(30_000, c.keep_alive_s * 500),  # must stay under the keep-alive
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,  # the shadow client re-subscribes
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            min_reconnect_delay_ms=int(c.reconnect_min_s * 1000),
            max_reconnect_delay_ms=int(c.reconnect_max_s * 1000),
            connack_timeout_ms=int(c.connect_timeout_s * 1000),
            socket_options=socket_options,
            ack_timeout_sec=c.operation_timeout_s,
            # Fail what is in flight when the connection drops: the outbox resends, nothing waits forever.
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            will=mqtt5.PublishPacket(topic=self.availability_topic, payload=b"offline",
                                     qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True),
            enable_metrics_collection=False,
            on_lifecycle_attempting_connect=self._threadsafe(self._on_attempt),
            on_lifecycle_connection_success=self._threadsafe(self._on_connected),
            on_lifecycle_connection_failure=self._threadsafe(self._on_connect_failed),
            on_lifecycle_disconnection=self._threadsafe(self._on_disconnected),
            on_lifecycle_stopped=self._threadsafe(self._on_stopped))
        return client, shadow_client(client, c.operation_timeout_s)

    def _threadsafe(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """An awscrt callback (any thread) that runs `handler` on the event loop."""
        loop = self._loop
        assert loop is not None

        def callback(data: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(handler, data)

        return callback

    # -- awscrt events, on the event loop ---------------------------------------------------------

    def _on_attempt(self, _: Any) -> None:
        if self._attempt_watch is not None:
            self._attempt_watch.cancel()
        assert self._loop is not None
        self._attempt_watch = self._loop.call_later(_PROBE_AFTER_S, self._check_tls)

    def _on_connected(self, _: Any) -> None:
        if self._attempt_watch is not None:
            self._attempt_watch.cancel()
        self._connected, self.last_error, self.auth_failed = True, None, False
        self._connect_failure = self._tls_problem = None
        self._state_changed.set()
        self._log.info("aws iot link online")
        self._spawn(self._announce_online())

    def _on_connect_failed(self, data: Any) -> None:
        if self._attempt_watch is not None:
            self._attempt_watch.cancel()
        if self._closing:
            return  # our own stop ended the attempt
        text = crt_error_text(data.exception)
        connack = getattr(data, "connack_packet", None)
        if connack is not None and int(connack.reason_code) >= 0x80:
            text += f" (CONNACK {connack.reason_code.name})"
        self._connect_failure = text
        self._report_failure()
        self._check_tls()

    def _on_disconnected(self, data: Any) -> None:
        was_connected, self._connected = self._connected, False
        self._shadow.stop_sync()
        text = crt_error_text(data.exception)
        if was_connected and "USER_REQUESTED_STOP" not in text:
            self.last_error = text
            self._log.warning("aws iot link offline", error=text)
        self._state_changed.set()

    def _on_stopped(self, _: Any) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _on_shadow_halted(self, error: str) -> None:
        self.last_error = error

    # -- internals -------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce_online(self) -> None:
        try:
            await self._publish(self.availability_topic, b"online", retain=True)
        except LinkDown as e:
            self._log.warning("availability not published", error=str(e))

    def _check_size(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MessageError(f"payload for {topic} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte "
                               "MQTT limit (AWS IoT)")

    def _require_online(self) -> None:
        if not self._connected or self._shadow.client is None:
            raise LinkDown(f"not connected to {self._where()}: {self.last_error or 'connecting'}")

    async def _wait(self, future: Future[T]) -> T:
        """Await an SDK future without blocking the loop; the SDK times out first, this is a backstop."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.operation_timeout_s + 5)
        except asyncio.TimeoutError:
            raise LinkDown(f"no answer from {self._where()} within {self.config.operation_timeout_s + 5}s") from None

    async def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self._check_size(topic, payload)
        self._require_online()
        from awscrt import mqtt5

        try:
            result = await self._wait(self._client.publish(mqtt5.PublishPacket(
                topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain)))
        except LinkDown:
            raise
        except Exception as e:  # AwsCrtError: the connection dropped, the ack timed out…
            raise LinkDown(f"publish to {topic} failed: {crt_error_text(e)}") from e
        puback = getattr(result, "puback", None)
        if puback is not None and int(puback.reason_code) >= 0x80:
            reason = puback.reason_code.name
            error = LinkAuthError if reason == "NOT_AUTHORIZED" else LinkDown
            raise error(f"publish to {topic} refused by {self._where()}: {reason}"
                        + (" (the IoT policy must allow iot:Publish on it)" if error is LinkAuthError else ""))

    def _check_tls(self) -> None:
        """Start a TLS check unless connected, one is running, or one ran a moment ago."""
        assert self._loop is not None
        now = self._loop.time()
        if self._connected or self._closing or (self._probe is not None and not self._probe.done()) \
                or now - self._last_probe < _PROBE_EVERY_S or self._client is None:
            return
        self._last_probe = now
        self._probe = asyncio.create_task(self._run_tls_check(), name=f"awsiot-tls-check-{self.thing}")

    async def _run_tls_check(self) -> None:
        c = self.config
        problem = await asyncio.to_thread(tls_probe, c.endpoint, c.port, c.ca_file, c.cert_file, c.key_file,
                                          c.connect_timeout_s)
        if self._connected:
            return
        changed, self._tls_problem = problem != self._tls_problem, problem
        if changed:
            self._report_failure()

    def _report_failure(self) -> None:
        """last_error from awscrt's failure and the TLS check's finding, logged and signalled."""
        text = self._connect_failure or f"still connecting after {_PROBE_AFTER_S:g}s"
        if self._tls_problem:
            text += f"; TLS check: {self._tls_problem}"
        self.last_error, self.auth_failed = describe_failure(text)
        (self._log.error if self.auth_failed else self._log.warning)("aws iot link cannot connect",
                                                                     error=self.last_error)
        self._state_changed.set()
