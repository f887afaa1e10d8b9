"""The resolver's MQTT adapter: the resolver core over the local adapters, fed by device uplinks over MQTT.
`facewatchd.app.resolver_service` runs it (with the control socket, the review page and systemd).

Devices publish unknown faces (FaceQuery JSON) on `facewatchd/<thing>/faces/unknown`. The service
subscribes to `facewatchd/+/faces/unknown` (QoS 1, persistent session, so what arrives while it
restarts waits in the broker), takes the thing name from the topic (the part a broker ACL can bind to
the client's identity), never from the payload, resolves the face against one collection shared by
every device, and answers through the device shadow: by default an in-process ShadowService, so the
label reaches the device as a real `/update/delta` and `facewatchd resolver` is the whole on-prem
server; with `run_shadow_service = false`, as shadow `/update` requests to a shadow service elsewhere.

Messages are resolved one at a time, in arrival order: two messages showing the same new person must
not both miss the search and index two persons. A message that can never succeed (not JSON, wrong
schema, not a JPEG, too large, no face) is logged with its reason and skipped. Anything else that fails
is logged too; the device's outbox resends what goes unanswered and the core is idempotent by face id,
so a redelivery changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiomqtt
import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import structlog

from facewatchd.aio import cancel_and_wait
from pydantic import Field, model_validator

from facewatchd.identity import IdentityConfig
from facewatchd.link.base import MAX_PAYLOAD_BYTES
from facewatchd.link.mqtt_client import Backoff, BrokerConfig, PahoLog, connect_client, describe_failure, tls_params
from facewatchd.messages import FaceQuery, MessageError, Resolution, face_id_of, thing_from_uplink_topic
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.ports import NoFaceError
from facewatchd.resolver.workers import LocalWorkerStores, ShadowDocuments, WorkerStores, share_group_name
from facewatchd.shadow.service import ShadowService, shadow_prefix
from facewatchd.shadow.store import ShadowStore
from facewatchd.vision.analyzer import FaceAnalyzer, ImageError, decode_image
from facewatchd.vision.detector import DetectorConfig
from facewatchd.vision.embedding import EmbedderConfig

log = structlog.get_logger("facewatchd.resolver.service")

UPLINK_SUBSCRIPTION = "facewatchd/+/faces/unknown"


def shared(topic: str, group: str | None) -> str:
    """The MQTT 5 shared subscription of `topic` for a worker group (the topic itself without one)."""
    return f"$share/{group}/{topic}" if group else topic
_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class ResolverServiceConfig(BrokerConfig):
    """The `[server]` table: the broker the service listens on, its data and its threshold."""

    client_id: str = Field("facewatchd-resolver", pattern=_ID_PATTERN,  # type: ignore[assignment]
                           description="MQTT client id; the in-process shadow service uses <client_id>-shadow")
    data_dir: Path | None = Field(None, description="default: the [resolver] data dir, so `facewatchd faces` "
                                  "commands with the same config see the same persons")
    templates_per_person: int = Field(5, ge=1, le=100, description="faces kept per person in the collection")
    shadow_cert_file: Path | None = Field(None, description="the in-process shadow service's own client "
                                          "certificate (default: cert_file); its own identity is needed where "
                                          "the broker makes the certificate's CN the client id "
                                          "(deploy/mosquitto: CN facewatchd-shadow)")
    shadow_key_file: Path | None = None
    run_shadow_service: bool = Field(True, description="serve the device shadows in the same process")
    share_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="several workers: each "
                                    "subscribes through the MQTT 5 shared subscription $share/<group>-<the "
                                    "database's share key>/…, so the "
                                    "broker gives each device request to one of them (needs [resolver] type = "
                                    "\"postgresql\"; each worker its own client_id)")

    @model_validator(mode="after")
    def _shadow_tls(self) -> "ResolverServiceConfig":
        if self.tls and not (self.ca_file or self.cert_file) and self.run_shadow_service:
            raise ValueError("tls is true: set ca_file (the in-process shadow service needs it to use TLS)")
        return self


class Skipped(Exception):
    """A message that can never be resolved: logged with its reason, never retried by us."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _reason(e: MessageError) -> str:
    text = str(e)
    if text.startswith("not JSON"):
        return "not_json"
    if text.startswith("crop: not a JPEG"):
        return "not_jpeg"
    if text.startswith("crop:") and "more than" in text:
        return "too_large"
    return "schema"


def parse_uplink(topic: str, payload: object) -> FaceQuery:
    """The FaceQuery in an uplink message, its thing taken from the topic; raises Skipped."""
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, (bytes, bytearray)):
        raise Skipped("schema", f"unexpected payload type {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Skipped("too_large", f"payload: {len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        thing = thing_from_uplink_topic(topic)
    except MessageError as e:
        raise Skipped("topic", str(e)) from None
    try:
        return FaceQuery.from_json(bytes(payload), thing=thing)
    except MessageError as e:
        raise Skipped(_reason(e), str(e)) from None


class CropEmbedder:
    """Embeds the largest face in a device's crop (the resolver never takes a device's embedding). The models
    load on first use. Called from worker threads."""

    def __init__(self, detector: DetectorConfig | None = None, embedder: EmbedderConfig | None = None) -> None:
        self._configs = (detector, embedder)
        self._analyzer: FaceAnalyzer | None = None
        self._lock = threading.Lock()

    def __call__(self, jpeg: bytes) -> np.ndarray | None:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = FaceAnalyzer(*self._configs)
        return self._analyzer.embed_crop(jpeg)


class InProcessShadowPort:
    """Answers through the ShadowService in this process: stored, then published as /delta."""

    def __init__(self, shadow: ShadowService) -> None:
        self._shadow = shadow

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        await self._shadow.update(thing, {"state": {"desired": desired}})


class MqttShadowPort:
    """Answers with shadow /update requests over the service's own connection (a shadow service elsewhere,
    or any broker that implements AWS shadows). Raises ConnectionError while disconnected."""

    def __init__(self, client: Callable[[], aiomqtt.Client | None]) -> None:
        self._client = client

    async def update_desired(self, thing: str, desired: dict[str, Any]) -> None:
        client = self._client()
        if client is None:
            raise ConnectionError("not connected to the broker")
        body = json.dumps({"state": {"desired": desired}}, separators=(",", ":")).encode()
        await client.publish(f"{shadow_prefix(thing)}/update", body, qos=1)


@dataclass
class ServiceStats:
    received: int = 0
    resolved: int = 0
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason → messages


class ResolverService:
    """`async with ResolverService(config, data_dir) as svc: await svc.ready()`."""

    def __init__(self, config: ResolverServiceConfig, data_dir: Path, detector: DetectorConfig | None = None,
                 embedder: EmbedderConfig | None = None, identity: IdentityConfig | None = None,
                 stores: WorkerStores | None = None, templates_per_person: int | None = None) -> None:
        """`stores`: opened by the caller and left open (PostgreSQL); by default SQLite and files in
        `data_dir`, opened and closed here."""
        self.config = config
        self.data_dir = data_dir
        self.stats = ServiceStats()
        self.last_error: str | None = None
        self._log = log.bind(broker=f"{config.host}:{config.port}")
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._group: str | None = None  # the shared subscription's group, with the share key (at start)
        self._owned = None if stores else LocalWorkerStores(data_dir, CropEmbedder(detector, embedder))
        self.stores: WorkerStores = stores or self._owned  # type: ignore[assignment]
        self._shadow_store: ShadowDocuments | None = None
        self.shadow: ShadowService | None = None
        port: InProcessShadowPort | MqttShadowPort
        if config.run_shadow_service:
            self._shadow_store = self.stores.open_shadow_store(data_dir)
            self.shadow = shadow_service(config, self._shadow_store)
            port = InProcessShadowPort(self.shadow)
        else:
            port = MqttShadowPort(lambda: self._client)
        self.resolver = Resolver(self.stores.crops, self.stores.collection, self.stores.names, port,
                                 identity or IdentityConfig(), templates_per_person or config.templates_per_person,
                                 deciding=self.stores.deciding)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> "ResolverService":
        if self.config.share_group:  # the group's name as the broker sees it: not one a device can name
            self._group = share_group_name(self.config.share_group, await self.stores.share_key())
            if self.shadow is not None:
                self.shadow.follow(self.stores.lead_shadows)
        if self.shadow is not None:
            await self.shadow.__aenter__()
        self._task = asyncio.create_task(self._run(), name="resolver-service")
        self._log.info("resolver_service_started", data_dir=str(self.data_dir),
                       shadow="in-process" if self.shadow else "over mqtt")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self.shadow is not None:
            await self.shadow.__aexit__(None, None, None)
        if self._owned is not None:
            self._owned.close()
        if self._shadow_store is not None:
            self._shadow_store.close()
        self._log.info("resolver_service_stopped", received=self.stats.received, resolved=self.stats.resolved,
                       failed=self.stats.failed, skipped=dict(self.stats.skipped))

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and (self.shadow is None or self.shadow.connected)

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until subscribed (and the in-process shadow service too); TimeoutError names the cause."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
                if self.shadow is not None:
                    await self.shadow.ready()
        except TimeoutError:
            raise TimeoutError(f"resolver service not connected to {self.config.host}:{self.config.port}: "
                               f"{self.last_error or (self.shadow and self.shadow.last_error) or 'no answer'}"
                               ) from None

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        s = self.stats
        return (f"{'connected' if self.connected else 'disconnected'}, {s.resolved} resolved, "
                f"{sum(s.skipped.values())} skipped, {s.failed} failed")

    # -- messages --------------------------------------------------------------------------------

    async def handle(self, topic: str, payload: object) -> Resolution | None:
        """Resolve one uplink message; never raises (but for cancellation)."""
        self.stats.received += 1
        try:
            query = parse_uplink(topic, payload)
            try:
                await asyncio.to_thread(decode_image, query.crop_jpeg)
            except ImageError as e:
                raise Skipped("bad_image", f"crop: {e}") from None
            await self.stores.prepare(dataclasses.replace(query, embedding=None))  # never the device's numbers
            resolution = await self.resolver.resolve(query)
        except (Skipped, NoFaceError) as e:
            reason, detail = (e.reason, e.detail) if isinstance(e, Skipped) else ("no_face", str(e))
            self.stats.skipped[reason] += 1
            self._log.warning("uplink_skipped", topic=topic[:200], reason=reason, error=detail)
            await self._refuse(topic, payload, reason, detail)
            return None
        except Exception as e:  # a store or the shadow failed: the device resends, the core is idempotent
            self.stats.failed += 1
            self._log.error("resolve_failed", topic=topic[:200], error=f"{type(e).__name__}: {e}")
            return None
        self.stats.resolved += 1
        return resolution

    async def _refuse(self, topic: str, payload: object, reason: str, detail: str) -> None:
        """Answer a message that can never be resolved, so its device stops resending it: when its thing
        (from the topic) and face id can be read, the shadow says why (`desired.faces.<id>.unresolvable`)."""
        try:
            thing = thing_from_uplink_topic(topic)
            face_id = face_id_of(payload)
        except MessageError:
            return  # nothing to answer to: the device's own attempts limit ends it
        try:
            await self.resolver.refuse(thing, face_id, f"{reason}: {detail}")
        except Exception as e:
            self._log.warning("refusal_not_sent", thing=thing, face_id=face_id, error=f"{type(e).__name__}: {e}")

    async def _run(self) -> None:
        c = self.config
        backoff = Backoff(c.reconnect_min_s, c.reconnect_max_s)
        while True:
            paho = PahoLog(self._log)
            try:
                async with contextlib.AsyncExitStack() as stack:
                    client = aiomqtt.Client(
                        c.host, c.port, identifier=c.client_id, username=c.username,
                        password=c.password.get_secret_value() if c.password else None, keepalive=c.keepalive,
                        logger=paho.logger, **session(c),
                        tls_params=tls_params(c.ca_file, c.cert_file, c.key_file) if c.use_tls else None)
                    await connect_client(client, stack, paho)
                    await client.subscribe(shared(UPLINK_SUBSCRIPTION, self._group), qos=1)
                    self._client, self.last_error = client, None
                    self._ready.set()
                    backoff.reset()
                    # the configured group, never the share key
                    self._log.info("resolver_service_connected", subscription=shared(UPLINK_SUBSCRIPTION, c.share_group))
                    async for message in client.messages:
                        await self.handle(str(message.topic), message.payload)
                    raise aiomqtt.MqttError("message stream ended")
            except aiomqtt.MqttError as e:
                detail = f"{e}: {paho.error}" if paho.error and paho.error not in str(e) else str(e)
                self.last_error, refused = describe_failure(detail)
                (self._log.error if refused else self._log.warning)("resolver_service_disconnected",
                                                                    error=self.last_error)
            except Exception as e:  # a bug must not end the service: log it and reconnect
                self.last_error = f"{type(e).__name__}: {e}"
                self._log.exception("resolver_service_failed")
            finally:
                self._client = None
                self._ready.clear()
            await asyncio.sleep(backoff.next())


def session(config: ResolverServiceConfig) -> dict[str, Any]:
    """One service keeps a persistent session (clean_session = false), so what arrives while it restarts
    waits in the broker. A worker of a group keeps none (MQTT 5, session expiry 0): mosquitto 2.0 goes on
    handing a dead member's persistent session its share of the requests (5 of 10 after a SIGKILL, checked),
    where without one the live workers get them all; what the dead worker had taken but not answered, the
    device's outbox sends again."""
    if not config.share_group:
        return {"clean_session": False}
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 0
    return {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": True, "properties": properties}


def shadow_service(config: ResolverServiceConfig, store: ShadowStore | ShadowDocuments) -> ShadowService:
    """The shadow service on the broker of `config`, as client <client_id>-shadow."""
    return ShadowService(store, config.host, config.port, ca_file=config.ca_file,
                         cert_file=config.shadow_cert_file or config.cert_file,
                         key_file=config.shadow_key_file or config.key_file, username=config.username,
                         password=config.password.get_secret_value() if config.password else None,
                         client_id=f"{config.client_id}-shadow", keepalive=config.keepalive,
                         reconnect_min_s=config.reconnect_min_s, reconnect_max_s=config.reconnect_max_s)
