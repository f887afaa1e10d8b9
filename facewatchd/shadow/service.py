"""The AWS IoT Device Shadow service over any MQTT broker (aiomqtt 2.x), backed by a ShadowStore.

It answers on the same topics as AWS IoT, classic and named shadows:
  $aws/things/<thing>/shadow[/name/<shadow>]/{update,get,delete}
    -> …/{update,get,delete}/{accepted,rejected}, …/update/delta, …/update/documents   (QoS 1)

Requests are handled one at a time, in arrival order, under one lock shared with the in-process API
(`update`), so versions and published messages stay in order. A request that cannot be parsed gets a
400 on /rejected; nothing a client sends can stop the service. The broker connection is re-established
with exponential backoff and jitter; while it is down, in-process updates are still stored (devices
fetch them with /get when they are back) and the messages that could not be published are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiomqtt
import structlog

from facewatchd.aio import cancel_and_wait

from facewatchd.link.base import MAX_PAYLOAD_BYTES
from facewatchd.link.mqtt_client import Backoff, PahoLog, connect_client, describe_failure, tls_params
from facewatchd.messages import strict_json
from facewatchd.shadow.document import ShadowError, client_token_of, validate_client_token
from facewatchd.shadow.store import ShadowStore, shadow_label

# Wait until this service leads, await the callback (it subscribes), and return or raise once it no longer leads.
Lead = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # AWS thing/shadow names, plus "." as our thing names allow
_OPERATIONS = ("update", "get", "delete")
REQUEST_TOPICS = tuple(f"$aws/things/+/shadow/{op}" for op in _OPERATIONS) + tuple(
    f"$aws/things/+/shadow/name/+/{op}" for op in _OPERATIONS)


def shadow_prefix(thing: str, shadow_name: str | None = None) -> str:
    base = f"$aws/things/{thing}/shadow"
    return f"{base}/name/{shadow_name}" if shadow_name else base


def parse_request_topic(topic: str) -> tuple[str, str | None, str] | None:
    """(thing, shadow name or None, operation) for a shadow request topic, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == ["$aws", "things"] and parts[3] == "shadow":
        thing, name, op = parts[2], None, parts[4]
    elif len(parts) == 7 and parts[:2] == ["$aws", "things"] and parts[3:5] == ["shadow", "name"]:
        thing, name, op = parts[2], parts[5], parts[6]
    else:
        return None
    if op not in _OPERATIONS or not _NAME.match(thing) or (name is not None and not _NAME.match(name)):
        return None
    return thing, name, op


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _request_body(payload: Any, *, empty_ok: bool) -> dict[str, Any]:
    """Decode a request payload into a JSON object; ShadowError 400/413 otherwise."""
    if payload is None:
        payload = b""
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, (bytes, bytearray)):
        raise ShadowError(400, "Invalid JSON: unsupported payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ShadowError(413, f"Payload too large: {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        if empty_ok:
            return {}
        raise ShadowError(400, "Invalid JSON: empty payload")
    try:
        body = strict_json(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise ShadowError(415, "Unsupported documented encoding; supported encoding is UTF-8") from None
    except ValueError as e:
        raise ShadowError(400, f"Invalid JSON: {e}") from None
    except RecursionError:
        raise ShadowError(400, "Invalid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise ShadowError(400, "Invalid JSON: the request must be a JSON object")
    return body


class ShadowService:
    """`async with ShadowService(store, host, port) as svc: await svc.ready()`."""

    def __init__(self, store: ShadowStore, host: str = "127.0.0.1", port: int = 1883, *,
                 ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None, username: str | None = None, password: str | None = None,
                 client_id: str = "facewatchd-shadow", keepalive: int = 30,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._host, self._port = host, port
        self._tls = (tls_params(Path(ca_file) if ca_file else None, Path(cert_file) if cert_file else None,
                                Path(key_file) if key_file else None)
                     if (ca_file or cert_file) else None)
        self._username, self._password = username, password
        self._client_id, self._keepalive = client_id, keepalive
        self._reconnect = (reconnect_min_s, reconnect_max_s)
        self._clock = clock
        self._lead: Lead | None = None
        self._log = structlog.get_logger(__name__).bind(broker=f"{host}:{port}")
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()  # one request at a time: versions and publishes stay in order
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def follow(self, lead: Lead) -> None:
        """Before it starts: one of several services over one shared store (PostgreSQL). Each publishes what
        its own process updates, but only the one holding the lead subscribes to the devices' requests.
        (Not a shared subscription: mosquitto 2.0.11 delivers nothing to $share/<group>/$aws/…, checked; and
        every service answering every request would answer each one several times.)"""
        self._lead = lead

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> "ShadowService":
        self._task = asyncio.create_task(self._run(), name="shadow-service")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until connected and subscribed; TimeoutError names the last connection error."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"shadow service not connected to {self._host}:{self._port}: "
                               f"{self.last_error or 'no answer'}") from None

    # -- in-process API --------------------------------------------------------------------------

    async def update(self, thing: str, request: dict[str, Any], shadow_name: str | None = None) -> dict[str, Any]:
        """Apply an update as if it came over MQTT and publish accepted/delta/documents.

        Returns the /update/accepted payload; raises ShadowError when AWS would reject it.
        """
        async with self._lock:
            return await self._update(thing, shadow_name, request)

    async def get(self, thing: str, shadow_name: str | None = None) -> dict[str, Any] | None:
        """The /get/accepted payload, or None if the shadow does not exist."""
        doc = await asyncio.to_thread(self._store.get, thing, shadow_name)
        return None if doc is None else doc.get_response(now=self._now())

    # -- internals -------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    async def _run(self) -> None:
        backoff = Backoff(*self._reconnect)
        while True:
            paho = PahoLog(self._log)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = aiomqtt.Client(self._host, self._port, identifier=self._client_id,
                                            username=self._username, password=self._password,
                                            keepalive=self._keepalive, tls_params=self._tls, logger=paho.logger)
                    await connect_client(client, stack, paho)
                    if self._lead is None:
                        await self._subscribe(client)
                    else:
                        leading = asyncio.create_task(self._follow(client, self._lead), name="shadow-lead")
                        stack.push_async_callback(cancel_and_wait, leading)
                    self._client, self.last_error = client, None
                    self._ready.set()
                    backoff.reset()
                    self._log.info("shadow service connected")
                    async for message in client.messages:
                        await self._handle(str(message.topic), message.payload)
                    raise aiomqtt.MqttError("message stream ended")
            except aiomqtt.MqttError as e:
                detail = f"{e}: {paho.error}" if paho.error and paho.error not in str(e) else str(e)
                self.last_error, refused = describe_failure(detail)
                (self._log.error if refused else self._log.warning)("shadow service disconnected",
                                                                    error=self.last_error)
            except Exception as e:  # a bug must not end the service: log it and reconnect
                self.last_error = f"{type(e).__name__}: {e}"
                self._log.exception("shadow service failed")
            finally:
                self._client = None
                self._ready.clear()
            await asyncio.sleep(backoff.next())

    @staticmethod
    async def _subscribe(client: aiomqtt.Client) -> None:
        await client.subscribe([(topic, 1) for topic in REQUEST_TOPICS])

    async def _follow(self, client: aiomqtt.Client, lead: Lead) -> None:
        """Take the requests whenever this service holds the lead; let them go when it loses it."""
        backoff = Backoff(1.0, 30.0)

        async def subscribe() -> None:
            await self._subscribe(client)
            backoff.reset()
            self._log.info("shadow_service_leading")

        while True:
            try:
                await lead(subscribe)
                reason = "lead ended"
            except Exception as e:  # the store went away (another service may lead now), or the broker did
                reason = f"{type(e).__name__}: {e}"
            self._log.warning("shadow_service_lead_lost", error=reason)
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(list(REQUEST_TOPICS))
            await asyncio.sleep(backoff.next())  # a store that is down is not asked every second

    async def _handle(self, topic: str, payload: Any) -> None:
        route = parse_request_topic(topic)
        if route is None:
            self._log.warning("ignored message on an unexpected topic", topic=topic)
            return
        thing, name, op = route
        prefix = f"{shadow_prefix(thing, name)}/{op}"
        token: str | None = None
        async with self._lock:
            try:
                request = _request_body(payload, empty_ok=op != "update")
                token = client_token_of(request)
                if op == "update":
                    await self._update(thing, name, request)
                elif op == "get":
                    validate_client_token(request)
                    doc = await asyncio.to_thread(self._store.get, thing, name)
                    if doc is None:
                        raise ShadowError(404, f"No shadow exists with name: '{shadow_label(thing, name)}'")
                    await self._publish(f"{prefix}/accepted", doc.get_response(token, self._now()))
                else:
                    body = await asyncio.to_thread(self._store.delete, thing, name, request, self._now())
                    await self._publish(f"{prefix}/accepted", body)
            except ShadowError as e:
                self._log.info("shadow request rejected", topic=topic, code=e.code, reason=e.message)
                await self._publish(f"{prefix}/rejected", e.to_rejected(token, self._now()))
            except Exception:
                self._log.exception("shadow request failed", topic=topic)
                await self._publish(f"{prefix}/rejected",
                                    ShadowError(500, "Internal service failure").to_rejected(token, self._now()))

    async def _update(self, thing: str, name: str | None, request: Any) -> dict[str, Any]:
        result = await asyncio.to_thread(self._store.update, thing, request, name, self._now())
        prefix = f"{shadow_prefix(thing, name)}/update"
        await self._publish(f"{prefix}/accepted", result.accepted)
        if result.delta is not None:
            await self._publish(f"{prefix}/delta", result.delta)
        await self._publish(f"{prefix}/documents", result.documents)
        return result.accepted

    async def _publish(self, topic: str, body: dict[str, Any]) -> None:
        client = self._client
        if client is None:
            self._log.warning("not connected, message not published", topic=topic)
            return
        try:
            await client.publish(topic, _dumps(body), qos=1)
        except aiomqtt.MqttError as e:
            self._log.warning("publish failed", topic=topic, error=str(e))
