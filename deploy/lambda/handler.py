"""AWS Lambda entry points: the resolver over the AWS adapters.

`handler`: SQS batches fed by the IoT rule `SELECT *, topic() AS topic FROM 'facewatchd/+/faces/unknown'`.
The thing name comes from the topic (which AWS IoT authorised), never from the payload. Poison
messages (not JSON, wrong schema, not a JPEG, too large, no face, an image Rekognition cannot read)
go to the DLQ with their reason and are not retried; transient errors are reported as batch item
failures so SQS redelivers only those (powertools' AsyncBatchProcessor). Each message is handled at most
once per message id (powertools idempotency over the IDEMPOTENCY_TABLE): a redelivery returns the first
result, and the same message delivered twice at once is not resolved twice. Under that, the core stays
idempotent by face id, so a device resending a face (a new message) is answered again, never indexed
again. Counts go to CloudWatch as EMF (powertools Metrics): FacesResolved, NewPersons, Refusals,
RekognitionThrottles. Logs, the core's and the adapters' structlog events included, are powertools
Logger JSON lines with the invocation's keys (function_request_id, cold_start) and the record's
(message_id, thing, face_id).

`operator_handler`: {"action": "list"} | {"action": "label", "person_id", "name"} |
{"action": "forget", "person_id"}.

aioboto3 clients are bound to the event loop that opened them, so a warm container keeps one loop
(an asyncio.Runner) and its clients in one `Container`, created on the first invocation.

Beside this module (the bundle copies them too): lambda_settings.py (the environment), lambda_records.py
(records and poison), lambda_batch.py (a batch's order and concurrency), lambda_idempotency.py,
lambda_telemetry.py (logs, metrics), lambda_operator.py (the operator's requests).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Mapping, TypeVar

import aioboto3
import structlog
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import BaseError as IdempotencyError
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from pydantic import ValidationError

from facewatchd.messages import FaceQuery
from facewatchd.resolver.aws import AwsAdapters, UnreadableImageError, client_config, open_aws_adapters
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.ports import NoFaceError

# The modules beside this one; the names template.yaml and the tests read here are re-exported.
from lambda_batch import BatchOnThisLoop, Turns
from lambda_idempotency import IDEMPOTENCY_KEY, IDEMPOTENCY_TTL_ATTRIBUTE, Idempotency
from lambda_operator import OPERATOR_REQUEST, operate
from lambda_records import MAX_DLQ_BODY_CHARS, Kept, Poison, parse_record
from lambda_settings import Settings
from lambda_telemetry import METRICS_NAMESPACE, METRICS_SERVICE, _to_powertools, configure_lambda_logging, lambda_logger

__all__ = ["IDEMPOTENCY_KEY", "IDEMPOTENCY_TTL_ATTRIBUTE", "METRICS_NAMESPACE", "METRICS_SERVICE", "Container", "Kept",
           "Poison", "Settings", "_to_powertools", "container", "handler", "operator_handler", "parse_record"]

log = structlog.get_logger("facewatchd.lambda")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Open:
    adapters: AwsAdapters
    resolver: Resolver
    sqs: Any



class Container:
    """What a warm Lambda container reuses: one event loop, the AWS clients bound to it, the Resolver."""

    def __init__(self, settings: Settings, session: aioboto3.Session | None = None) -> None:
        self.settings = settings
        self._session = session or aioboto3.Session(region_name=settings.resolver.region)
        self._runner = asyncio.Runner()
        self._stack = AsyncExitStack()
        self._open_state: _Open | None = None
        self._idempotency = Idempotency(settings, settings.idempotency_table) if settings.idempotency_table else None
        # powertools keeps one metric set per process; it is flushed (printed as EMF) after every batch.
        self.metrics = Metrics(namespace=METRICS_NAMESPACE, service=METRICS_SERVICE)
        self.logger = lambda_logger()

    def invoked(self, context: Any, call: Callable[[], T]) -> T:
        """`call` with the invocation's keys on every log line (powertools inject_lambda_context);
        a call without a Lambda context (a local run) has none."""
        if context is None:
            return call()
        return self.logger.inject_lambda_context(lambda _event, _context: call(), clear_state=True)({}, context)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def close(self) -> None:
        self._runner.run(self._stack.aclose())
        self._runner.close()
        if self._idempotency is not None:
            self._idempotency.threads.shutdown()

    @property
    def resolver(self) -> Resolver | None:
        return self._open_state.resolver if self._open_state else None

    async def _open(self) -> _Open:
        if self._open_state is None:
            cfg = self.settings.resolver
            async with AsyncExitStack() as stack:  # on failure everything opened so far is closed again
                pool = max(10, 2 * self.settings.concurrency)
                adapters = await stack.enter_async_context(
                    open_aws_adapters(cfg, self._session, pool, on_throttle=self._throttled))
                sqs = await stack.enter_async_context(self._session.client("sqs", config=client_config(cfg)))
                if self.settings.ensure_collection:
                    await adapters.collection.ensure_collection()
                self._open_state = _Open(adapters, adapters.resolver(cfg), sqs)
                self._stack = stack.pop_all()
        return self._open_state

    def _throttled(self, operation: str) -> None:
        self.metrics.add_metric(name="RekognitionThrottles", unit=MetricUnit.Count, value=1)

    # -- SQS batches ------------------------------------------------------------------------------
    async def handle_sqs(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        state = await self._open()
        if context is not None and self._idempotency is not None:
            self._idempotency.config.register_lambda_context(context)  # in-progress records end with the invocation
        turns = Turns(self.settings.concurrency)

        async def record_handler(record: SQSRecord) -> None:
            await self._handle_record(state, record.raw_event, turns)

        batch = BatchOnThisLoop()
        try:
            with batch(list(event.get("Records", [])), record_handler):
                await batch.process_here()
        finally:
            if self.metrics.metric_set:
                self.metrics.flush_metrics()  # one EMF line per batch, even when it fails
        return dict(batch.response())

    async def _handle_record(self, state: _Open, record: Mapping[str, Any], turns: Turns) -> None:
        """One record; raising reports it as a batch item failure (SQS redelivers only those)."""
        message_id = str(record.get("messageId"))
        try:
            query = parse_record(record)
        except Poison as p:
            poison = p
        except Exception as e:  # whatever else a hostile body does, it fails only its own record
            poison = Poison("schema", f"{type(e).__name__}: {e}")
        else:
            # Parsing never awaits, so records reach their thing's turn in batch order.
            async with turns.of(query.thing):
                with structlog.contextvars.bound_contextvars(message_id=message_id, thing=query.thing,
                                                             face_id=query.face_id):
                    await self._once(message_id, lambda: self._resolve_one(state, record, query))
            return
        with structlog.contextvars.bound_contextvars(message_id=message_id):
            await self._once(message_id, lambda: self._dead_letter(state, record, poison))

    async def _once(self, message_id: str, work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
        """`work`, at most once per SQS message id (powertools idempotency): a redelivered message returns
        the first result without work, one still in progress elsewhere fails (SQS retries it later)."""
        if self._idempotency is None:
            return await work()
        try:  # powertools' persistence layer is boto3 (blocking): it runs in a worker thread, the work on this loop
            return await self._idempotency.once(message_id, work)
        except IdempotencyAlreadyInProgressError:
            log.info("message_in_progress", message_id=message_id)  # another invocation has it: retried later
            raise
        except IdempotencyError as e:  # the idempotency table cannot be read or written: retried later
            log.warning("idempotency_failed", message_id=message_id, error=f"{type(e).__name__}: {e}")
            raise

    async def _resolve_one(self, state: _Open, record: Mapping[str, Any], query: FaceQuery) -> dict[str, Any]:
        try:
            resolution = await state.resolver.resolve(query)
        except NoFaceError as e:
            await self._drop_crop(state, query)
            kind = "bad_image" if isinstance(e, UnreadableImageError) else "no_face"
            try:  # tell the device, so it stops resending a face that can never be resolved
                await state.resolver.refuse(query.thing, query.face_id, f"{kind}: {e}")
                self.metrics.add_metric(name="Refusals", unit=MetricUnit.Count, value=1)
            except Exception as refusal:
                log.warning("refusal_not_sent", face_id=query.face_id, error=f"{type(refusal).__name__}: {refusal}")
            return await self._dead_letter(state, record, Poison(kind, str(e)))
        except Exception as e:  # an outage or throttling beyond botocore's retries: SQS redelivers it
            log.warning("face_failed", message_id=record["messageId"], face_id=query.face_id, thing=query.thing,
                        error=f"{type(e).__name__}: {e}")
            raise
        self.metrics.add_metric(name="FacesResolved", unit=MetricUnit.Count, value=1)
        if resolution.new_person:
            self.metrics.add_metric(name="NewPersons", unit=MetricUnit.Count, value=1)
        return {"person_id": resolution.person_id, "new_person": resolution.new_person}

    @staticmethod
    async def _drop_crop(state: _Open, query: FaceQuery) -> None:
        # The crop was stored before the search found no face; no record points at it, so delete it now.
        try:
            await state.adapters.crops.delete([state.adapters.crops.key(query)])
        except Exception as e:  # the bucket's lifecycle expiry removes it anyway
            log.warning("crop_not_deleted", face_id=query.face_id, error=str(e))

    async def _dead_letter(self, state: _Open, record: Mapping[str, Any], poison: Poison) -> dict[str, Any]:
        message_id = str(record.get("messageId"))
        if not self.settings.dlq_url:
            log.error("poison_without_dlq", message_id=message_id, reason=poison.reason)
            raise Kept(poison.reason)  # the queue's redrive policy moves it to the DLQ after a few receives
        body = record.get("body") if isinstance(record.get("body"), str) else None
        letter = {"kind": poison.kind, "reason": poison.reason, "message_id": message_id,
                  "event_source_arn": record.get("eventSourceARN"),
                  "body": body if body is None or len(body) <= MAX_DLQ_BODY_CHARS else None,
                  "body_truncated": body is not None and len(body) > MAX_DLQ_BODY_CHARS}
        try:
            await state.sqs.send_message(
                QueueUrl=self.settings.dlq_url, MessageBody=json.dumps(letter),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": poison.kind},
                                   "reason": {"DataType": "String", "StringValue": poison.reason[:256]}})
        except Exception as e:  # cannot park it: let SQS keep it rather than lose it
            log.warning("dead_letter_failed", message_id=message_id, error=str(e))
            raise Kept(poison.reason) from e
        log.info("dead_lettered", message_id=message_id, kind=poison.kind, reason=poison.reason)
        return {"dead_lettered": poison.kind}

    # -- operator ---------------------------------------------------------------------------------
    async def handle_operator(self, event: Mapping[str, Any]) -> dict[str, Any]:
        try:
            request = OPERATOR_REQUEST.validate_python(dict(event))
        except ValidationError as e:
            return {"ok": False, "error": f"bad request: {e.errors(include_url=False)}"}
        resolver = (await self._open()).resolver
        return await operate(resolver, request)


@functools.cache
def container() -> Container:
    """The container's one Container, created on the first invocation (not at import, so tests and
    tools can import this module without AWS settings)."""
    c = Container(Settings.from_env(os.environ))
    configure_lambda_logging(c.logger)
    return c


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    c = container()
    return c.invoked(context, lambda: c.run(c.handle_sqs(event, context)))


def operator_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    c = container()
    return c.invoked(context, lambda: c.run(c.handle_operator(event)))
