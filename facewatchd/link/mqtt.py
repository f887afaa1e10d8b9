"""A link over any MQTT broker (aiomqtt 2.x), speaking the AWS IoT shadow topics.

aiomqtt has no reconnect of its own, so `MqttLink` runs one loop: connect, subscribe to the shadow's
delta and response topics, announce `online` (retained; the will says `offline`), ask the shadow for
its current state (`/get`, so a delta missed while offline is recovered), then read messages until the
connection drops, and reconnect after an exponential backoff with jitter.

The connection helpers here (`Backoff`, `connect_client`) are also used by the shadow service.
paho reports why a TLS peer hung up (e.g. a rejected client certificate) only in its log, and aiomqtt
then waits for its connect timeout; `connect_client` reads that log so the cause surfaces at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any, AsyncIterator, Literal

import aiomqtt
import structlog

from facewatchd.aio import cancel_and_wait
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from facewatchd.link.base import MAX_PAYLOAD_BYTES, LinkAuthError, LinkDown, availability_topic
from facewatchd.messages import FaceQuery, MessageError, json_object, uplink_topic
_GET_RETRY_MIN_S = 2.0  # a /get nobody answered (e.g. the shadow service reconnects after us) is asked again

_AUTH_HINTS = (
    ("certificate verify failed", "the broker's certificate is not trusted by ca_file (or names another host)"),
    ("unknown ca", "the broker rejected the client certificate: it does not trust the CA that signed cert_file"),
    ("bad certificate", "the broker rejected the client certificate (cert_file/key_file)"),
    ("certificate required", "the broker requires a client certificate: set cert_file and key_file"),
    ("certificate expired", "the client certificate has expired"),
    ("certificate unknown", "the broker rejected the client certificate (cert_file/key_file)"),
    ("wrong version number", "TLS mismatch: is the port a plain-MQTT port, or is tls off for a TLS port?"),
    ("not author", "the broker refused this client (not authorized)"),
    ("bad user", "the broker refused the username/password"),
)


class BrokerConfig(BaseModel):
    """Where an MQTT client connects. The device link, the on-prem services and the plugins share these
    keys and their checks; each extends them with its own."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    tls: bool | None = None  # None: TLS when any of ca_file/cert_file is set
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(30, ge=5, le=65535)
    client_id: str | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> "BrokerConfig":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        if self.tls is False and (self.ca_file or self.cert_file):
            raise ValueError("tls is false but ca_file/cert_file are set")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self

    @property
    def use_tls(self) -> bool:
        return self.tls if self.tls is not None else bool(self.ca_file or self.cert_file)


class MqttLinkConfig(BrokerConfig):
    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1)  # no default: a device must be told where its broker is
    client_id: str | None = None  # default: the thing name


class Backoff:
    """Exponential backoff with jitter (each delay uniform in [cap/2, cap]), so a fleet does not reconnect in step."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._min, self._max = min_s, max_s
        self._rng = rng or random.Random()
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        cap = min(self._max, self._min * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return self._rng.uniform(cap / 2, cap)


def describe_failure(error: BaseException | str) -> tuple[str, bool]:
    """The failure's text with a hint, and whether it is an authentication/TLS refusal."""
    text = str(error)
    lowered = text.lower()
    for needle, hint in _AUTH_HINTS:
        if needle in lowered:
            return f"{text} ({hint})", True
    return text, False


class PahoLog(logging.Handler):
    """One client's paho/aiomqtt log: forwarded to structlog, and its errors kept as the failure cause.

    The logger is built directly (not through logging.getLogger), so nothing global is registered.
    """

    def __init__(self, log: Any) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self._loop = asyncio.get_running_loop()
        self.error: str | None = None
        self.failed = asyncio.Event()
        self.logger = logging.Logger("facewatchd.mqtt.paho", logging.WARNING)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.error = message
            self._loop.call_soon_threadsafe(self.failed.set)  # paho may log from aiomqtt's connect thread
        self._log.warning("mqtt client", detail=message)


async def connect_client(client: aiomqtt.Client, stack: contextlib.AsyncExitStack, paho: PahoLog) -> None:
    """Enter `client` on `stack`; fail at once when paho logs that the connection died (TLS alert…)."""
    entering = asyncio.ensure_future(stack.enter_async_context(client))
    failed = asyncio.ensure_future(paho.failed.wait())
    try:
        await asyncio.wait({entering, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failed.cancel()
        if not entering.done():
            entering.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await entering
    if entering.cancelled():
        raise aiomqtt.MqttError(paho.error or "connection lost during connect")
    error = entering.exception()
    if error is not None:
        if paho.error and isinstance(error, aiomqtt.MqttError):
            raise aiomqtt.MqttError(f"{error}: {paho.error}") from error
        raise error


def tls_params(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> aiomqtt.TLSParameters:
    return aiomqtt.TLSParameters(ca_certs=str(ca_file) if ca_file else None,
                                 certfile=str(cert_file) if cert_file else None,
                                 keyfile=str(key_file) if key_file else None)


class MqttLink:
    """The Link protocol (facewatchd/link/base.py) over an MQTT broker."""

    def __init__(self, thing: str, config: MqttLinkConfig) -> None:
        self.thing = thing
        self.config = config
        self.client_id = config.client_id or thing
        shadow = f"$aws/things/{thing}/shadow"
        self._topic_update = f"{shadow}/update"
        self._topic_delta = f"{shadow}/update/delta"
        self._topic_update_rejected = f"{shadow}/update/rejected"
        self._topic_get = f"{shadow}/get"
        self._topic_get_accepted = f"{shadow}/get/accepted"
        self._topic_get_rejected = f"{shadow}/get/rejected"
        self.availability_topic = availability_topic(thing)
        self._log = structlog.get_logger(__name__).bind(thing=thing, broker=f"{config.host}:{config.port}")
        self._client: aiomqtt.Client | None = None
        self._deltas: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: the link closed
        self._state_changed = asyncio.Event()
        self._get_answered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.auth_failed = False

    # -- Link protocol ---------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._client is not None

    async def __aenter__(self) -> "MqttLink":
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self.thing}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        client = self._client
        if client is not None:
            # A clean disconnect does not fire the will, so say `offline` ourselves.
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                async with asyncio.timeout(5):
                    await client.publish(self.availability_topic, b"offline", qos=1, retain=True)
        if self._task is not None:
            await cancel_and_wait(self._task)
        self._deltas.put_nowait(None)

    async def send_query(self, query: FaceQuery) -> None:
        await self._publish(uplink_topic(self.thing), query.to_json())

    def deltas(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter_deltas()

    async def update_shadow(self, state: dict[str, Any]) -> None:
        payload = json.dumps({"state": state}, separators=(",", ":")).encode()
        await self._publish(self._topic_update, payload)

    # -- extras ----------------------------------------------------------------------------------

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until connected; raises LinkAuthError as soon as the broker/TLS refuses us,
        LinkDown (naming the last error) on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.online:
            if self.auth_failed and self.last_error:
                c = self.config
                files = ", ".join(f"{k}={v}" for k, v in (("ca_file", c.ca_file), ("cert_file", c.cert_file),
                                                          ("key_file", c.key_file)) if v)
                raise LinkAuthError(f"cannot connect to {self._where()}: {self.last_error}"
                                    + (f" [{files}]" if files else ""))
            self._state_changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise LinkDown(f"not connected to {self._where()} after {timeout}s: {self.last_error or 'no answer'}")
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._state_changed.wait()

    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port} as {self.client_id!r}"

    # -- internals -------------------------------------------------------------------------------

    async def _iter_deltas(self) -> AsyncIterator[dict[str, Any]]:
        while (state := await self._deltas.get()) is not None:
            yield state
        self._deltas.put_nowait(None)  # keep the link closed for any other reader

    async def _publish(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MessageError(f"payload for {topic} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte "
                               "MQTT limit (AWS IoT)")
        client = self._client
        if client is None:
            raise LinkDown(f"not connected to {self._where()}: {self.last_error or 'connecting'}")
        try:
            await client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as e:
            raise LinkDown(f"publish to {topic} failed: {e}") from e

    def _new_client(self, paho: PahoLog) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, identifier=self.client_id, username=c.username,
            password=c.password.get_secret_value() if c.password else None, keepalive=c.keepalive,
            will=aiomqtt.Will(self.availability_topic, b"offline", qos=1, retain=True),
            tls_params=tls_params(c.ca_file, c.cert_file, c.key_file) if c.use_tls else None,
            logger=paho.logger)

    def _set_client(self, client: aiomqtt.Client | None) -> None:
        self._client = client
        self._state_changed.set()

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            paho = PahoLog(self._log)
            sync: asyncio.Task[None] | None = None
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = self._new_client(paho)
                    await connect_client(client, stack, paho)
                    await client.subscribe([(t, 1) for t in (self._topic_delta, self._topic_get_accepted,
                                                             self._topic_get_rejected, self._topic_update_rejected)])
                    await client.publish(self.availability_topic, b"online", qos=1, retain=True)
                    self.last_error, self.auth_failed = None, False
                    self._set_client(client)
                    backoff.reset()
                    self._log.info("mqtt link online")
                    sync = asyncio.create_task(self._sync_shadow(client))
                    async for message in client.messages:
                        self._dispatch(str(message.topic), message.payload)
                    raise aiomqtt.MqttError("message stream ended")
            except aiomqtt.MqttError as e:
                detail = f"{e}: {paho.error}" if paho.error and paho.error not in str(e) else str(e)
                self.last_error, self.auth_failed = describe_failure(detail)
                log = self._log.error if self.auth_failed else self._log.warning
                log("mqtt link offline", error=self.last_error)
            except Exception as e:  # a bug must not end the loop: log it and reconnect
                self.last_error, self.auth_failed = f"{type(e).__name__}: {e}", False
                self._log.exception("mqtt link failed")
            finally:
                if sync is not None:
                    sync.cancel()
                self._set_client(None)
            await asyncio.sleep(backoff.next())

    async def _sync_shadow(self, client: aiomqtt.Client) -> None:
        """Ask for the shadow until it answers: its delta covers whatever changed while we were away."""
        self._get_answered.clear()
        delay = max(_GET_RETRY_MIN_S, self.config.reconnect_min_s)
        try:
            while True:
                await client.publish(self._topic_get, b"", qos=1)
                try:
                    async with asyncio.timeout(delay):
                        await self._get_answered.wait()
                    return
                except asyncio.TimeoutError:
                    self._log.info("shadow get unanswered, asking again", after_s=delay)
                    delay = min(delay * 2, max(self.config.reconnect_max_s, delay))
        except aiomqtt.MqttError as e:
            self._log.warning("shadow get failed", error=str(e))  # the read loop sees the drop and reconnects

    def _dispatch(self, topic: str, payload: Any) -> None:
        try:
            body = json_object(payload)
            if topic == self._topic_delta:
                state = body.get("state")
                if not isinstance(state, dict):
                    raise MessageError("delta without a `state` object")
                self._deltas.put_nowait(state)
            elif topic == self._topic_get_accepted:
                if body.get("clientToken") is not None:
                    return  # another client's get on this thing; ours carries no token
                self._get_answered.set()
                state = body.get("state")
                if not isinstance(state, dict):
                    raise MessageError("get/accepted without a `state` object")
                delta = state.get("delta")
                if isinstance(delta, dict) and delta:
                    self._deltas.put_nowait(delta)
            elif topic in (self._topic_get_rejected, self._topic_update_rejected):
                if topic == self._topic_get_rejected and body.get("clientToken") is None:
                    self._get_answered.set()
                if body.get("code") == 404 and topic == self._topic_get_rejected:
                    self._log.debug("no shadow yet", message=body.get("message"))
                else:
                    self._log.warning("shadow request rejected", topic=topic, code=body.get("code"),
                                      message=body.get("message"))
            else:
                self._log.warning("message on an unexpected topic", topic=topic)
        except MessageError as e:
            self._log.warning("skipped malformed message", topic=topic, error=str(e))
