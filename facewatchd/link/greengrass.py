"""A link for a device that runs as an AWS IoT Greengrass v2 component: everything goes through the
nucleus over IPC (awsiotsdk's GreengrassCoreIPCClientV2). The nucleus owns the cloud connection, its
reconnects and its spooler; the ShadowManager component keeps the shadow and syncs it with AWS IoT.

* send_query    → PublishToIoTCore (QoS 1) on `facewatchd/<thing>/faces/unknown`
* update_shadow → UpdateThingShadow (ShadowManager)
* deltas        → SubscribeToTopic on the local topic `$aws/things/<thing>/shadow[/name/<n>]/update/delta`,
                  where ShadowManager publishes each delta; after every (re)subscription a GetThingShadow
                  recovers a delta that arrived while we were not subscribed.

The IPC client is injectable (`ipc_client`); without one the real client is created, in a thread, when
the link starts, and created again if its connection is lost. Its callbacks run on SDK threads and are
handed to the event loop with call_soon_threadsafe; its futures are awaited through asyncio.wrap_future.
No nucleus can run in CI: tests/link/test_greengrass.py injects a client whose method signatures are
checked against the real GreengrassCoreIPCClientV2 class.

The access this needs (the component recipe's accessControl) is in deploy/greengrass/recipe.yaml.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from concurrent.futures import Future
from typing import Any, AsyncIterator, Callable, Literal, TypeVar

import structlog

from facewatchd.aio import cancel_and_wait
from pydantic import BaseModel, ConfigDict, Field

from facewatchd.link.base import MAX_PAYLOAD_BYTES, LinkAuthError, LinkDown
from facewatchd.messages import FaceQuery, MessageError, json_object, uplink_topic

T = TypeVar("T")

_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0
_IPC_ENV = ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID")  # set by the nucleus


class GreengrassLinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["greengrass"] = "greengrass"
    shadow_name: str | None = Field(None, pattern=r"^[A-Za-z0-9:_-]{1,64}$")  # None: the classic shadow
    timeout_s: float = Field(10.0, gt=0, description="how long one IPC call may take")


class _Rejected(Exception):
    """The nucleus answered and refused the request itself (bad arguments, conflict): do not retry it."""


class GreengrassLink:
    """The Link protocol (facewatchd/link/base.py) over Greengrass IPC."""

    def __init__(self, thing: str, config: GreengrassLinkConfig, ipc_client: Any = None) -> None:
        self.thing = thing
        self.config = config
        self._ipc: Any = ipc_client
        self._owns_ipc = ipc_client is None
        shadow = f"$aws/things/{thing}/shadow" + (f"/name/{config.shadow_name}" if config.shadow_name else "")
        self.delta_topic = f"{shadow}/update/delta"
        self._topic_update = f"{shadow}/update"
        self._shadow_name = config.shadow_name or ""  # IPC names the classic shadow ""
        self._log = structlog.get_logger(__name__).bind(thing=thing, shadow=config.shadow_name or "classic")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._online = False
        self._deltas: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: the link closed
        self._state_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.auth_failed = False

    # -- Link protocol ---------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._online

    async def __aenter__(self) -> "GreengrassLink":
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"greengrass-link-{self.thing}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        await self._drop_client()
        self._deltas.put_nowait(None)

    async def send_query(self, query: FaceQuery) -> None:
        from awsiot.greengrasscoreipc.model import QOS

        topic = uplink_topic(self.thing)
        payload = self._checked(topic, query.to_json())
        client = self._require_online()
        try:
            await self._call("PublishToIoTCore", client.publish_to_iot_core_async(
                topic_name=topic, qos=QOS.AT_LEAST_ONCE, payload=payload))
        except _Rejected as e:
            raise LinkDown(str(e)) from e  # the outbox keeps the query; the log says why

    def deltas(self) -> AsyncIterator[dict[str, Any]]:
        return self._iter_deltas()

    async def update_shadow(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not set(state) <= {"desired", "reported"}:
            raise MessageError("a shadow update takes an object with `desired` and/or `reported` only")
        payload = self._checked(self._topic_update, json.dumps({"state": state}, separators=(",", ":")).encode())
        client = self._require_online()
        try:
            await self._call("UpdateThingShadow", client.update_thing_shadow_async(
                thing_name=self.thing, shadow_name=self._shadow_name, payload=payload))
        except _Rejected as e:  # retrying the same update cannot help
            self._log.warning("shadow request rejected", topic=f"{self._topic_update}/rejected", error=str(e))

    # -- extras ----------------------------------------------------------------------------------

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until subscribed to the nucleus; raises LinkAuthError at once when IPC refuses us,
        LinkDown (naming the last error) on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.online:
            if self.auth_failed and self.last_error:
                raise LinkAuthError(f"cannot use Greengrass IPC: {self.last_error}")
            self._state_changed.clear()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise LinkDown(f"Greengrass IPC not ready after {timeout}s: {self.last_error or 'no answer'}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), remaining)

    # -- internals -------------------------------------------------------------------------------

    def _checked(self, topic: str, payload: bytes) -> bytes:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MessageError(f"payload for {topic} is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte "
                               "MQTT limit (AWS IoT)")
        return payload

    def _require_online(self) -> Any:
        if not self._online or self._ipc is None:
            raise LinkDown(f"Greengrass IPC not ready: {self.last_error or 'connecting'}")
        return self._ipc

    def _set_online(self, online: bool) -> None:
        self._online = online
        self._state_changed.set()

    async def _call(self, operation: str, future: Future[T]) -> T:
        """Await an IPC future. LinkAuthError: not authorized; _Rejected: the nucleus refused the request;
        LinkDown: no answer, or the IPC connection failed."""
        from awsiot.greengrasscoreipc import model

        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise LinkDown(f"{operation}: no answer from the Greengrass nucleus within "
                           f"{self.config.timeout_s:g}s") from None
        except model.UnauthorizedError as e:
            raise LinkAuthError(f"{operation} not authorized: {e.message or 'UnauthorizedError'} (the component's "
                                "accessControl must allow it, see deploy/greengrass/recipe.yaml)") from e
        except (model.InvalidArgumentsError, model.ConflictError) as e:
            raise _Rejected(f"{operation} rejected: {type(e).__name__}: {e.message}") from e
        except model.ResourceNotFoundError:
            raise
        except Exception as e:  # ServiceError (throttled, internal), a closed IPC connection…
            raise LinkDown(f"{operation} failed: {type(e).__name__}: {getattr(e, 'message', None) or e}") from e

    async def _client(self) -> Any:
        if self._ipc is None:
            missing = [name for name in _IPC_ENV if not os.environ.get(name)]
            if missing:
                raise LinkAuthError(f"not running as a Greengrass component: {', '.join(missing)} not set "
                                    "(the nucleus sets them for the processes it starts)")
            from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

            try:
                self._ipc = await asyncio.to_thread(GreengrassCoreIPCClientV2)  # connects to the nucleus
            except Exception as e:
                raise LinkDown(f"cannot connect to the Greengrass nucleus: {type(e).__name__}: {e}") from e
        return self._ipc

    async def _drop_client(self) -> None:
        """Close the IPC client if it is ours, so the next attempt connects afresh."""
        client, self._ipc = self._ipc, (None if self._owns_ipc else self._ipc)
        if self._owns_ipc and client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)

    async def _iter_deltas(self) -> AsyncIterator[dict[str, Any]]:
        while (state := await self._deltas.get()) is not None:
            yield state
        self._deltas.put_nowait(None)  # keep the link closed for any other reader

    async def _run(self) -> None:
        delay = _RETRY_MIN_S
        while True:
            closed = asyncio.Event()
            subscription: Any = None
            sync: asyncio.Task[None] | None = None
            try:
                client = await self._client()
                future, subscription = client.subscribe_to_topic_async(
                    topic=self.delta_topic, on_stream_event=self._threadsafe(self._on_message),
                    on_stream_error=self._on_stream_error, on_stream_closed=self._threadsafe(closed.set))
                await self._call("SubscribeToTopic", future)
                self.last_error, self.auth_failed = None, False
                self._set_online(True)
                delay = _RETRY_MIN_S
                self._log.info("greengrass link online", delta_topic=self.delta_topic)
                sync = asyncio.create_task(self._sync_shadow(client))
                await closed.wait()
                raise LinkDown("the delta subscription was closed by the nucleus")
            except LinkAuthError as e:
                self.last_error, self.auth_failed = str(e), True
                self._log.error("greengrass link refused", error=self.last_error)
            except (LinkDown, _Rejected) as e:
                self.last_error, self.auth_failed = str(e), False
                self._log.warning("greengrass link offline", error=self.last_error)
            except Exception as e:  # a bug must not end the loop: log it and start again
                self.last_error, self.auth_failed = f"{type(e).__name__}: {e}", False
                self._log.exception("greengrass link failed")
            finally:
                if sync is not None:
                    sync.cancel()
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        subscription.close()
                self._set_online(False)
            await self._drop_client()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _sync_shadow(self, client: Any) -> None:
        """GetThingShadow until it answers: its delta covers whatever changed while we were not subscribed."""
        from awsiot.greengrasscoreipc import model

        delay = _RETRY_MIN_S
        while True:
            try:
                response = await self._call("GetThingShadow", client.get_thing_shadow_async(
                    thing_name=self.thing, shadow_name=self._shadow_name))
                break
            except model.ResourceNotFoundError:
                self._log.debug("no shadow yet")
                return
            except (LinkDown, _Rejected) as e:
                self._log.warning("shadow get failed, asking again", error=str(e), after_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        try:
            body = json_object(response.payload)
            state = body.get("state")
            delta = state.get("delta") if isinstance(state, dict) else None
        except MessageError as e:
            self._log.warning("skipped malformed shadow document", error=str(e))
            return
        if isinstance(delta, dict) and delta:
            self._deltas.put_nowait(delta)

    def _threadsafe(self, handler: Callable[..., None]) -> Callable[..., None]:
        """An SDK callback (any thread) that runs `handler` on the event loop."""
        loop = self._loop
        assert loop is not None

        def callback(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(handler, *args)

        return callback

    def _on_stream_error(self, error: Exception) -> bool:
        """SDK thread. Close the stream: the run loop subscribes again and asks for the shadow."""
        text = f"{type(error).__name__}: {getattr(error, 'message', None) or error}"
        with contextlib.suppress(RuntimeError):
            assert self._loop is not None
            self._loop.call_soon_threadsafe(functools.partial(self._log.warning, "delta subscription failed",
                                                              error=text))
        return True

    def _on_message(self, event: Any) -> None:
        try:
            if getattr(event, "json_message", None) is not None:
                body = event.json_message.message
                if not isinstance(body, dict):
                    raise MessageError("expected a JSON object")
            elif getattr(event, "binary_message", None) is not None:
                body = json_object(event.binary_message.message)
            else:
                raise MessageError("neither a JSON nor a binary message")
            state = body.get("state")
            if not isinstance(state, dict):
                raise MessageError("delta without a `state` object")
            self._deltas.put_nowait(state)
        except MessageError as e:
            self._log.warning("skipped malformed message", topic=self.delta_topic, error=str(e))
