"""GreengrassLink over an injected IPC client.

No Greengrass nucleus can be installed here, so `NucleusDouble` stands in for awsiotsdk's
GreengrassCoreIPCClientV2: the methods the link calls have the real class's signatures (checked below
with inspect.signature, so the double cannot drift from the SDK), return concurrent futures completed on
another thread as the real client's are, take and give the SDK's own model classes and raise its own
errors. Behind it, shadow semantics come from our ShadowStore (AWS IoT rules), and every accepted
update with a delta is published on the local topic `$aws/things/<thing>/shadow[/name/<n>]/update/delta`,
as ShadowManager does.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import numpy as np
import pytest
import structlog
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from facewatchd.app.config import parse_config
from facewatchd.link import create_link
from facewatchd.link.awsiot import LinkAuthError
from facewatchd.link.base import Link, LinkDown
from facewatchd.link.greengrass import GreengrassLink, GreengrassLinkConfig
from facewatchd.messages import FaceQuery, MessageError, new_face_id, uplink_topic
from facewatchd.shadow.document import ShadowError
from facewatchd.shadow.store import ShadowStore

pytestmark = pytest.mark.timeout(60)
THING = "cam-1"
USED_METHODS = ("publish_to_iot_core_async", "get_thing_shadow_async", "update_thing_shadow_async",
                "subscribe_to_topic_async", "close")


class Subscription:
    """What subscribe_to_topic_async returns beside its future (the SDK's SubscribeToTopicOperation)."""

    def __init__(self, double: "NucleusDouble", topic: str, handlers: dict[str, Callable[..., Any]]) -> None:
        self.double, self.topic, self.handlers = double, topic, handlers

    def close(self) -> Future[None]:
        self.double.unsubscribe(self)
        done: Future[None] = Future()
        done.set_result(None)
        return done


class NucleusDouble:
    """GreengrassCoreIPCClientV2's methods (same signatures) over a ShadowStore, answering from a thread."""

    def __init__(self, store: ShadowStore) -> None:
        self.store = store
        self.published: list[tuple[str, str, bytes]] = []
        self.failures: dict[str, list[Exception]] = {}  # operation -> errors to raise on its next calls
        self.silent: set[str] = set()  # operations that never answer
        self.subscriptions: list[Subscription] = []
        self.subscribe_calls = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="nucleus")

    # -- the SDK surface ----------------------------------------------------------------------------

    def publish_to_iot_core_async(self, *, topic_name: str | None = None, qos: str | None = None,
                                  payload: bytes | str | None = None, retain: bool | None = None,
                                  user_properties: list[Any] | None = None,
                                  message_expiry_interval_seconds: int | None = None,
                                  correlation_data: bytes | str | None = None, response_topic: str | None = None,
                                  payload_format: str | None = None, content_type: str | None = None) -> Future[Any]:
        def work() -> model.PublishToIoTCoreResponse:
            assert topic_name and qos in (model.QOS.AT_MOST_ONCE, model.QOS.AT_LEAST_ONCE)
            self.published.append((topic_name, qos, payload if isinstance(payload, bytes) else str(payload).encode()))
            return model.PublishToIoTCoreResponse()
        return self._answer("PublishToIoTCore", work)

    def get_thing_shadow_async(self, *, thing_name: str | None = None,
                               shadow_name: str | None = None) -> Future[Any]:
        def work() -> model.GetThingShadowResponse:
            doc = self.store.get(str(thing_name), shadow_name or None)
            if doc is None:
                raise model.ResourceNotFoundError(message="No shadow found", resource_type="ThingShadow")
            return model.GetThingShadowResponse(payload=json.dumps(doc.get_response()).encode())
        return self._answer("GetThingShadow", work)

    def update_thing_shadow_async(self, *, thing_name: str | None = None, shadow_name: str | None = None,
                                  payload: bytes | str | None = None) -> Future[Any]:
        def work() -> model.UpdateThingShadowResponse:
            return model.UpdateThingShadowResponse(payload=self.apply_update(str(thing_name), shadow_name or None,
                                                                             json.loads(payload or b"{}")))
        return self._answer("UpdateThingShadow", work)

    def subscribe_to_topic_async(self, *, topic: str | None = None, receive_mode: str | None = None,
                                 stream_handler: Any = None,
                                 on_stream_event: Callable[[model.SubscriptionResponseMessage], None] | None = None,
                                 on_stream_error: Callable[[Exception], bool] | None = None,
                                 on_stream_closed: Callable[[], None] | None = None) -> tuple[Future[Any], Any]:
        assert stream_handler is None and on_stream_event is not None  # the link uses the callback style
        subscription = Subscription(self, str(topic), {"event": on_stream_event, "error": on_stream_error,
                                                       "closed": on_stream_closed})

        def work() -> model.SubscribeToTopicResponse:
            with self._lock:
                self.subscribe_calls += 1
                self.subscriptions.append(subscription)
            return model.SubscribeToTopicResponse(topic_name=topic)
        return self._answer("SubscribeToTopic", work), subscription

    def close(self, *, executor_wait: bool = True) -> Future[None]:
        self._pool.shutdown(wait=executor_wait)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    # -- the nucleus side ---------------------------------------------------------------------------

    def apply_update(self, thing: str, shadow_name: str | None, request: Any) -> bytes:
        """ShadowManager's update: store it; a delta goes to the local pub/sub topic."""
        try:
            result = self.store.update(thing, request, shadow_name)
        except ShadowError as e:
            raise model.InvalidArgumentsError(message=e.message) from None
        if result.delta is not None:
            prefix = f"$aws/things/{thing}/shadow" + (f"/name/{shadow_name}" if shadow_name else "")
            self.publish_local(f"{prefix}/update/delta", json.dumps(result.delta).encode())
        return json.dumps(result.accepted).encode()

    def cloud_sets_desired(self, thing: str, desired: dict[str, Any], shadow_name: str | None = None) -> None:
        """The resolver writes desired in the cloud; ShadowManager syncs it down and publishes the delta."""
        self.apply_update(thing, shadow_name, {"state": {"desired": desired}})

    def publish_local(self, topic: str, payload: bytes, as_json: bool = False) -> None:
        context = model.MessageContext(topic=topic)
        message = (model.SubscriptionResponseMessage(json_message=model.JsonMessage(
            message=json.loads(payload), context=context)) if as_json else
            model.SubscriptionResponseMessage(binary_message=model.BinaryMessage(message=payload, context=context)))
        with self._lock:
            targets = [s for s in self.subscriptions if s.topic == topic]
        for subscription in targets:
            self._pool.submit(subscription.handlers["event"], message)

    def drop_streams(self) -> None:
        """The IPC stream fails (e.g. the nucleus restarts): on_stream_error, then on_stream_closed."""
        with self._lock:
            targets, self.subscriptions = self.subscriptions, []
        for subscription in targets:
            if subscription.handlers["error"](model.ServiceError(message="stream reset")):
                self._pool.submit(subscription.handlers["closed"])

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self.subscriptions:
                self.subscriptions.remove(subscription)

    def _answer(self, operation: str, work: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        if operation in self.silent:
            return future
        pending = self.failures.get(operation)
        if pending:
            error = pending.pop(0)
            self._pool.submit(future.set_exception, error)
            return future

        def run() -> None:
            try:
                future.set_result(work())
            except Exception as e:
                future.set_exception(e)
        self._pool.submit(run)
        return future


def face_query(crop_bytes: int = 2000) -> FaceQuery:
    crop = b"\xff\xd8" + bytes(range(256)) * (crop_bytes // 256)
    return FaceQuery(new_face_id(), THING, "front", "t-7", crop, np.linspace(-1, 1, 128, dtype=np.float32), ts=12.5)


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def nucleus(tmp_path: Path) -> Iterator[NucleusDouble]:
    with ShadowStore(tmp_path / "shadows.db") as store:
        double = NucleusDouble(store)
        yield double
        double.close()


@pytest.fixture
async def link(nucleus: NucleusDouble) -> AsyncIterator[GreengrassLink]:
    async with GreengrassLink(THING, GreengrassLinkConfig(timeout_s=2), ipc_client=nucleus) as lk:
        await lk.wait_online(timeout=10)
        yield lk


@pytest.mark.parametrize("method", USED_METHODS)
def test_the_double_has_the_real_sdk_signatures(method: str) -> None:
    def shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(getattr(NucleusDouble, method)) == shape(getattr(GreengrassCoreIPCClientV2, method))
    assert model.QOS.AT_LEAST_ONCE == "1"


async def test_send_query_publishes_to_iot_core(nucleus: NucleusDouble, link: GreengrassLink) -> None:
    assert isinstance(link, Link) and link.online
    query = face_query()
    await link.send_query(query)
    [(topic, qos, payload)] = nucleus.published
    assert (topic, qos) == (uplink_topic(THING), model.QOS.AT_LEAST_ONCE)
    got = FaceQuery.from_json(payload, thing=THING)
    assert (got.face_id, got.crop_jpeg, got.ts) == (query.face_id, query.crop_jpeg, 12.5)
    assert np.array_equal(got.embedding, query.embedding)


@pytest.mark.parametrize("shadow_name", [None, "facewatchd"])
async def test_shadow_manager_delta_reaches_deltas_and_update_shadow_reports(
        nucleus: NucleusDouble, shadow_name: str | None) -> None:
    async with GreengrassLink(THING, GreengrassLinkConfig(shadow_name=shadow_name), ipc_client=nucleus) as link:
        await link.wait_online(timeout=10)
        deltas = link.deltas()
        nucleus.cloud_sets_desired(THING, {"faces": {"f1": {"name": "Ann"}}}, shadow_name)
        assert await asyncio.wait_for(anext(deltas), 10) == {"faces": {"f1": {"name": "Ann"}}}

        await link.update_shadow({"reported": {"faces": {"f1": {"name": "Ann"}}}, "desired": {"faces": {"f1": None}}})
        doc = nucleus.store.get(THING, shadow_name)
        assert doc is not None and doc.version == 2
        assert doc.reported == {"faces": {"f1": {"name": "Ann"}}} and doc.desired == {}
        assert nucleus.store.get(THING, None if shadow_name else "facewatchd") is None


async def test_a_delta_pending_at_start_is_delivered_by_get(nucleus: NucleusDouble) -> None:
    nucleus.cloud_sets_desired(THING, {"faces": {"f0": {"name": "Zoe"}}})
    async with GreengrassLink(THING, GreengrassLinkConfig(), ipc_client=nucleus) as link:
        assert await asyncio.wait_for(anext(link.deltas()), 10) == {"faces": {"f0": {"name": "Zoe"}}}


async def test_a_dropped_stream_is_resubscribed_and_the_missed_delta_recovered(
        nucleus: NucleusDouble, link: GreengrassLink) -> None:
    deltas = link.deltas()
    nucleus.drop_streams()
    await eventually(lambda: not link.online, what="link offline")
    with pytest.raises(LinkDown, match="not ready"):
        await link.send_query(face_query())
    nucleus.cloud_sets_desired(THING, {"faces": {"f2": {"name": "Bob"}}})  # nobody subscribed: not delivered

    await link.wait_online(timeout=10)
    assert await asyncio.wait_for(anext(deltas), 10) == {"faces": {"f2": {"name": "Bob"}}}  # from GetThingShadow
    assert nucleus.subscribe_calls == 2 and len(nucleus.subscriptions) == 1
    nucleus.cloud_sets_desired(THING, {"faces": {"f3": {"name": "Cy"}}})  # and the new stream delivers
    assert await asyncio.wait_for(anext(deltas), 10) == {"faces": {"f2": {"name": "Bob"}, "f3": {"name": "Cy"}}}


async def test_malformed_local_messages_are_skipped(nucleus: NucleusDouble, link: GreengrassLink) -> None:
    deltas = link.deltas()
    with structlog.testing.capture_logs() as logs:
        for payload in (b"{oops", b"\xff\xfe", b"[]", b'{"state": 7}', b'{"version": 3}'):
            nucleus.publish_local(link.delta_topic, payload)
        nucleus.publish_local(link.delta_topic, b'{"state": {"ok": 1}, "version": 9}', as_json=True)
        assert await asyncio.wait_for(anext(deltas), 10) == {"ok": 1}
    assert [e["event"] for e in logs].count("skipped malformed message") == 5
    assert link.online


async def test_ipc_errors_become_link_down_or_are_logged(nucleus: NucleusDouble, link: GreengrassLink) -> None:
    nucleus.failures["PublishToIoTCore"] = [model.UnauthorizedError(message="not allowed"),
                                            model.ServiceError(message="throttled")]
    with pytest.raises(LinkAuthError, match="accessControl") as e:
        await link.send_query(face_query())
    assert isinstance(e.value, LinkDown)  # the outbox keeps the query
    with pytest.raises(LinkDown, match="ServiceError: throttled"):
        await link.send_query(face_query())

    nucleus.silent.add("PublishToIoTCore")
    with pytest.raises(LinkDown, match="no answer .* within 2s"):
        await link.send_query(face_query())
    nucleus.silent.clear()
    await link.send_query(face_query())
    assert len(nucleus.published) == 1

    with structlog.testing.capture_logs() as logs:  # the nucleus refuses the update itself: logged, not raised
        await link.update_shadow({"desired": 5})  # type: ignore[dict-item]
    assert [e["event"] for e in logs] == ["shadow request rejected"] and "InvalidArgumentsError" in logs[0]["error"]
    assert link.online


async def test_refused_subscription_fails_wait_online_with_the_cause(nucleus: NucleusDouble) -> None:
    nucleus.failures["SubscribeToTopic"] = [model.UnauthorizedError(message="no SubscribeToTopic")] * 3
    async with GreengrassLink(THING, GreengrassLinkConfig(), ipc_client=nucleus) as link:
        with pytest.raises(LinkAuthError, match="SubscribeToTopic not authorized: no SubscribeToTopic"):
            await link.wait_online(timeout=10)


async def test_payloads_over_128_kb_and_bad_updates_are_refused(link: GreengrassLink) -> None:
    with pytest.raises(MessageError, match="over the 131072-byte"):
        await link.send_query(face_query(crop_bytes=100 * 1024))
    with pytest.raises(MessageError, match="131072"):
        await link.update_shadow({"reported": {"blob": "x" * (130 * 1024)}})
    with pytest.raises(MessageError, match="desired"):
        await link.update_shadow({"state": {}})


async def test_without_a_nucleus_the_error_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SVCUID", raising=False)
    monkeypatch.delenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", raising=False)
    async with GreengrassLink(THING, GreengrassLinkConfig()) as link:
        with pytest.raises(LinkAuthError, match="not running as a Greengrass component: .*SVCUID"):
            await link.wait_online(timeout=10)
        with pytest.raises(LinkDown):
            await link.send_query(face_query())


def test_config_is_strict_and_chosen_by_type(tmp_path: Path) -> None:
    cfg = GreengrassLinkConfig.model_validate({"type": "greengrass"})
    assert (cfg.shadow_name, cfg.timeout_s) == (None, 10.0)
    for bad in ({"colour": "red"}, {"timeout_s": 0}, {"shadow_name": "a/b"}):
        with pytest.raises(ValueError):
            GreengrassLinkConfig.model_validate({"type": "greengrass", **bad})
    full = parse_config({"link": {"type": "greengrass", "shadow_name": "facewatchd"}})
    assert isinstance(full.link, GreengrassLinkConfig)
    assert isinstance(create_link(THING, full.link, tmp_path), GreengrassLink)


def commented_link_example(kind: str) -> dict[str, Any]:
    """The commented-out `[link]` example for `kind` at the end of etc/facewatchd.toml, uncommented."""
    lines = (Path(__file__).parents[2] / "etc" / "facewatchd.toml").read_text().splitlines()
    start = lines.index(f'# type = "{kind}"') - 1
    assert lines[start] == "# [link]"
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    return tomllib.loads("\n".join(block))


def test_the_documented_example_is_valid() -> None:
    config = parse_config(commented_link_example("greengrass"))
    assert isinstance(config.link, GreengrassLinkConfig)
