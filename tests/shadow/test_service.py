"""ShadowService checked against the AWS IoT Device SDK's own shadow client (awsiotsdk IotShadowClientV2
over an awscrt MQTT5 client), both on a real mosquitto with mutual TLS.

If the SDK can update, get, stream deltas and see a 409 from our service, devices written against AWS IoT
work against it too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from pathlib import Path
from typing import Any, AsyncIterator, TypeVar

import aiomqtt
import pytest
from awscrt import mqtt_request_response
from awsiot import ServiceStreamOptions, V2ServiceException, iotshadow, mqtt5_client_builder

from facewatchd.shadow.service import ShadowService
from facewatchd.shadow.store import ShadowStore
from tests.support.broker import Mosquitto
from tests.support.tls import TestPki

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
THING = "cam-1"


async def result(future: concurrent.futures.Future[T], timeout: float = 10) -> T:
    """Await an SDK (concurrent.futures) future without blocking the loop the service runs on."""
    return await asyncio.wait_for(asyncio.wrap_future(future), timeout)


class SdkApp:
    """An application built the AWS way: mqtt5_client_builder.mtls_from_path + IotShadowClientV2."""

    def __init__(self, broker: Mosquitto, pki: TestPki, client_id: str) -> None:
        self.loop = asyncio.get_running_loop()
        cert = pki.client(client_id)
        self.connected: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.client = mqtt5_client_builder.mtls_from_path(
            endpoint="127.0.0.1", port=broker.port, cert_filepath=str(cert.cert), pri_key_filepath=str(cert.key),
            ca_filepath=str(pki.ca_file), client_id=client_id,
            on_lifecycle_connection_success=lambda _: self._settle(self.connected),
            on_lifecycle_stopped=lambda _: self._settle(self.stopped))
        self.shadow = iotshadow.IotShadowClientV2(self.client, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4, max_streaming_subscriptions=4, operation_timeout_in_seconds=10))

    @staticmethod
    def _settle(future: concurrent.futures.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    async def delta_stream(self, request: Any, create: Any) -> asyncio.Queue[Any]:
        """Open an SDK event stream (delta or documents); returns once its subscription is established."""
        events: asyncio.Queue[Any] = asyncio.Queue()
        established: concurrent.futures.Future[None] = concurrent.futures.Future()

        def on_status(event: mqtt_request_response.SubscriptionStatusEvent) -> None:
            if event.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED:
                self._settle(established)

        stream = create(request, ServiceStreamOptions(
            incoming_event_listener=lambda e: self.loop.call_soon_threadsafe(events.put_nowait, e),
            subscription_status_listener=on_status))
        stream.open()
        self._streams = getattr(self, "_streams", []) + [stream]  # keep them alive
        await result(established)
        return events


@pytest.fixture
async def service(tls_broker: Mosquitto, pki: TestPki, tmp_path: Path) -> AsyncIterator[ShadowService]:
    cert = pki.client("shadow-service")
    with ShadowStore(tmp_path / "shadows.db") as store:
        async with ShadowService(store, tls_broker.host, tls_broker.port, ca_file=pki.ca_file, cert_file=cert.cert,
                                 key_file=cert.key) as svc:
            await svc.ready(timeout=10)
            yield svc


@pytest.fixture
async def app(tls_broker: Mosquitto, pki: TestPki) -> AsyncIterator[SdkApp]:
    sdk = SdkApp(tls_broker, pki, "sdk-app")
    sdk.client.start()
    await result(sdk.connected)
    yield sdk
    sdk.client.stop()
    await result(sdk.stopped)


async def test_sdk_update_get_delta_and_version_conflict(service: ShadowService, app: SdkApp) -> None:
    deltas = await app.delta_stream(iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=THING),
                                    app.shadow.create_shadow_delta_updated_stream)
    documents = await app.delta_stream(iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=THING),
                                       app.shadow.create_shadow_updated_stream)

    # the device reports, an app asks for something else: the SDK sees the delta on its stream
    reported = await result(app.shadow.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(reported={"label": None, "fps": 5}))))
    assert reported.version == 1 and reported.state.reported == {"label": None, "fps": 5}
    updated = await result(app.shadow.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(desired={"label": "Ann", "fps": 5}))))
    assert updated.version == 2 and updated.client_token  # the SDK matched the response by its clientToken
    delta = await asyncio.wait_for(deltas.get(), 10)
    assert delta.state == {"label": "Ann"} and delta.version == 2
    assert isinstance(delta.metadata["label"]["timestamp"], int)
    first, second = await asyncio.wait_for(documents.get(), 10), await asyncio.wait_for(documents.get(), 10)
    assert first.previous is None and first.current.version == 1
    assert second.previous.version == 1 and second.previous.state.reported == {"fps": 5}  # null deleted label
    assert second.current.version == 2 and second.current.state.desired == {"label": "Ann", "fps": 5}

    got = await result(app.shadow.get_shadow(iotshadow.GetShadowRequest(thing_name=THING)))
    assert got.version == 2
    assert got.state.desired == {"label": "Ann", "fps": 5}
    assert got.state.reported == {"fps": 5}
    assert got.state.delta == {"label": "Ann"}

    with pytest.raises(V2ServiceException) as e:
        await result(app.shadow.update_shadow(iotshadow.UpdateShadowRequest(
            thing_name=THING, version=1, state=iotshadow.ShadowState(desired={"label": "Bob"}))))
    assert e.value.modeled_error.code == 409 and e.value.modeled_error.message == "Version conflict"
    assert (await service.get(THING))["state"]["desired"]["label"] == "Ann"  # nothing changed

    # the in-process API (used by the resolver) publishes the same delta
    await service.update(THING, {"state": {"desired": {"label": "Cy"}}})
    delta = await asyncio.wait_for(deltas.get(), 10)
    assert delta.state == {"label": "Cy"} and delta.version == 3


async def test_sdk_named_shadow_and_delete(service: ShadowService, app: SdkApp) -> None:
    deltas = await app.delta_stream(
        iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=THING, shadow_name="labels"),
        app.shadow.create_named_shadow_delta_updated_stream)
    await result(app.shadow.update_named_shadow(iotshadow.UpdateNamedShadowRequest(
        thing_name=THING, shadow_name="labels", state=iotshadow.ShadowState(desired={"p1": "Ann"}))))
    assert (await asyncio.wait_for(deltas.get(), 10)).state == {"p1": "Ann"}
    assert await service.get(THING) is None  # the classic shadow is another document

    deleted = await result(app.shadow.delete_named_shadow(
        iotshadow.DeleteNamedShadowRequest(thing_name=THING, shadow_name="labels")))
    assert deleted.version == 1
    with pytest.raises(V2ServiceException) as e:
        await result(app.shadow.get_named_shadow(
            iotshadow.GetNamedShadowRequest(thing_name=THING, shadow_name="labels")))
    assert e.value.modeled_error.code == 404
    assert "cam-1~labels" in e.value.modeled_error.message


async def test_malformed_requests_are_rejected_and_the_service_keeps_going(
        service: ShadowService, app: SdkApp, tls_broker: Mosquitto, pki: TestPki) -> None:
    cert = pki.client("raw")
    prefix = f"$aws/things/{THING}/shadow"
    async with aiomqtt.Client(tls_broker.host, tls_broker.port, identifier="raw", tls_params=aiomqtt.TLSParameters(
            ca_certs=str(pki.ca_file), certfile=str(cert.cert), keyfile=str(cert.key))) as raw:
        await raw.subscribe(f"{prefix}/+/rejected", qos=1)
        for payload in (b"{not json", b"\xff\xfe", b"[1,2]", json.dumps({"state": {"desired": 1}, "clientToken": "t9"}),
                        b'{"state": {"desired": {"x": NaN, "y": Infinity}}}'):  # Python's json, not JSON
            await raw.publish(f"{prefix}/update", payload, qos=1)
        await raw.publish(f"{prefix}/get", b"nope", qos=1)
        rejections = []
        async with asyncio.timeout(10):
            async for message in raw.messages:
                rejections.append((str(message.topic).rsplit("/", 2)[-2], json.loads(message.payload)))
                if len(rejections) == 6:
                    break
    codes = [(op, body["code"]) for op, body in rejections]
    assert codes == [("update", 400), ("update", 415), ("update", 400), ("update", 400), ("update", 400), ("get", 400)]
    assert "NaN is not JSON" in rejections[4][1]["message"]
    assert rejections[3][1]["clientToken"] == "t9" and "Desired node" in rejections[3][1]["message"]
    # still serving the SDK afterwards
    ok = await result(app.shadow.update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(reported={"ok": True}))))
    assert ok.version == 1
