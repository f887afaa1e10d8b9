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
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Callable, Coroutine, Literal, Mapping, TypeVar, Union

import aioboto3
import boto3
import structlog
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (DynamoDBPersistenceLayer, IdempotencyConfig,
                                                         idempotent_function)
from aws_lambda_powertools.utilities.idempotency.exceptions import BaseError as IdempotencyError
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from facewatchd.messages import FaceQuery, MessageError, strict_json, thing_from_uplink_topic
from facewatchd.resolver.aws import (AwsAdapters, AwsResolverConfig, UnreadableImageError, client_config,
                                     open_aws_adapters)
from facewatchd.resolver.core import Resolver
from facewatchd.resolver.ports import NoFaceError

log = structlog.get_logger("facewatchd.lambda")
T = TypeVar("T")
MAX_BODY_CHARS = 192 * 1024  # AWS IoT caps payloads at 128 KB; anything bigger did not come from a device
MAX_DLQ_BODY_CHARS = 200 * 1024  # keeps the DLQ message under SQS's 256 KB
# CloudWatch namespace and service dimension of the EMF metrics; template.yaml's alarms and dashboard use them.
METRICS_NAMESPACE = "facewatchd"
METRICS_SERVICE = "resolver"
# The idempotency table's key and TTL attribute (powertools' defaults, named here for template.yaml and the tests).
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolver: AwsResolverConfig
    dlq_url: str | None = None
    # 1 by default: two messages resolved at once that show the same new person would both miss the
    # search and index two persons. Higher values trade that risk (across things only) for latency.
    concurrency: int = Field(1, ge=1, le=64, description="messages of different things resolved at once")
    ensure_collection: bool = True
    idempotency_table: str | None = None
    # Longer than any redelivery (5 receives x 720 s visibility); a failed message leaves no record at all.
    idempotency_ttl_s: int = Field(86_400, ge=60, description="seconds a processed message id is remembered")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Settings":
        names = {"region": "AWS_REGION", "bucket": "BUCKET", "table": "TABLE", "collection_id": "COLLECTION_ID",
                 "face_match_threshold": "FACE_MATCH_THRESHOLD", "quality_filter": "QUALITY_FILTER",
                 "max_faces": "MAX_FACES", "retention_days": "RETENTION_DAYS", "crop_prefix": "CROP_PREFIX",
                 "max_attempts": "MAX_ATTEMPTS", "uncertain_above": "UNCERTAIN_ABOVE",
                 "learn_threshold": "LEARN_THRESHOLD", "templates_per_person": "TEMPLATES_PER_PERSON"}
        resolver = {field: env[var] for field, var in names.items() if env.get(var)}
        return cls(resolver=AwsResolverConfig.model_validate(resolver), dlq_url=env.get("DLQ_URL") or None,
                   concurrency=int(env.get("BATCH_CONCURRENCY", "1")),
                   ensure_collection=env.get("ENSURE_COLLECTION", "true").lower() == "true",
                   idempotency_table=env.get("IDEMPOTENCY_TABLE") or None,
                   idempotency_ttl_s=int(env.get("IDEMPOTENCY_TTL_S", "86400")))


class Poison(Exception):
    """A message that can never succeed: dead-lettered with its reason, never retried."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class Kept(Exception):
    """A poison message that could not be dead-lettered: failed, so SQS keeps it (its redrive policy
    moves it to the DLQ after a few receives)."""


def _kind(e: MessageError) -> str:
    text = str(e)
    if text.startswith("crop: not a JPEG"):
        return "not_jpeg"
    if text.startswith("crop:") and "more than" in text:
        return "too_large"
    return "schema"


def parse_record(record: Mapping[str, Any]) -> FaceQuery:
    body = record.get("body")
    if not isinstance(body, str):
        raise Poison("schema", "SQS record has no body")
    if len(body) > MAX_BODY_CHARS:
        raise Poison("too_large", f"body: {len(body)} characters, more than {MAX_BODY_CHARS}")
    try:
        doc = strict_json(body)  # NaN and Infinity are Python's, not JSON
    except ValueError as e:
        raise Poison("not_json", f"not JSON: {e}") from None
    except RecursionError:
        raise Poison("not_json", "not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise Poison("schema", "expected a JSON object")
    topic = doc.get("topic")
    if not isinstance(topic, str):
        raise Poison("schema", "topic: missing (the IoT rule adds topic())")
    try:
        return FaceQuery.from_json(body, thing=thing_from_uplink_topic(topic))
    except MessageError as e:
        raise Poison(_kind(e), str(e)) from None


class ListAction(BaseModel):
    action: Literal["list"]


class LabelAction(BaseModel):
    action: Literal["label"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    name: str = Field(min_length=1, max_length=128)


class ForgetAction(BaseModel):
    action: Literal["forget"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class MergeAction(BaseModel):
    """Person `gone` was `person_id` all along."""

    action: Literal["merge"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    gone: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class MoveAction(BaseModel):
    """One face was the wrong person: it becomes `person_id`'s."""

    action: Literal["move"]
    face_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class RejectAction(BaseModel):
    """Not this person: the face leaves its person."""

    action: Literal["reject"]
    face_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


OperatorAction = ListAction | LabelAction | ForgetAction | MergeAction | MoveAction | RejectAction
OPERATOR_REQUEST: TypeAdapter[OperatorAction] = TypeAdapter(
    Annotated[Union[ListAction, LabelAction, ForgetAction, MergeAction, MoveAction, RejectAction],
              Field(discriminator="action")])


@dataclass(frozen=True, slots=True)
class _Open:
    adapters: AwsAdapters
    resolver: Resolver
    sqs: Any


class _Stdout:
    """sys.stdout as it is at each write (the runtime's, or a test's capture), not as it was at start."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


# LogRecord's own attributes: stdlib refuses them in `extra` (KeyError), so such event keys get a "_".
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Frames between the code that logs and powertools' Logger: structlog's bound method and its proxy.
_STRUCTLOG_FRAMES = 2


def _to_powertools(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog's last processor: the event as powertools Logger's arguments."""
    message = str(event_dict.pop("event", ""))
    exc_info = event_dict.pop("exc_info", None)
    extra = {f"{k}_" if k in _RESERVED else k: v for k, v in event_dict.items()}
    return {"msg": message, "extra": extra, "exc_info": exc_info, "stacklevel": 2 + _STRUCTLOG_FRAMES}


@functools.cache
def lambda_logger() -> Logger:
    """The process's one powertools Logger (its stdlib logger and handler are per process, like the runtime's)."""
    return Logger(service=METRICS_SERVICE, logger_handler=logging.StreamHandler(_Stdout()))


def configure_lambda_logging(logger: Logger) -> None:
    """structlog, which the core and the adapters log with, written through powertools' Logger: one JSON
    shape for every line, with the keys the Logger holds for the invocation (inject_lambda_context) and
    those bound for the record in hand (structlog contextvars, per task)."""
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _to_powertools],
        wrapper_class=structlog.make_filtering_bound_logger(logger.log_level),
        logger_factory=lambda *_: logger,
        cache_logger_on_first_use=False,
    )


class _BatchOnThisLoop(AsyncBatchProcessor):
    """powertools' AsyncBatchProcessor, awaited on the caller's loop. Its own `async_process` drives a loop
    of its choosing (asyncio.run outside Lambda; a new one per call in one release, powertools-lambda-python
    #7798); the aioboto3 clients are bound to the container's."""

    def __init__(self) -> None:
        # Every record failing is still a partial response (SQS retries each), not an exception.
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False)

    async def process_here(self) -> None:
        await asyncio.gather(*(self._async_process_record(record) for record in self.records))


class _Turns:
    """Order and concurrency within one batch: one thing's faces one after the other, in batch order (a
    person seen twice by one camera is indexed once), at most `concurrency` faces at once in all."""

    def __init__(self, concurrency: int) -> None:
        self._things: dict[str, asyncio.Lock] = {}
        self._limit = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def of(self, thing: str) -> AsyncIterator[None]:
        # asyncio.Lock is FIFO: records that ask in batch order are served in batch order.
        async with self._things.setdefault(thing, asyncio.Lock()), self._limit:
            yield


def _on_loop(*, message_id: str, loop: asyncio.AbstractEventLoop,
             work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """The idempotent function, in a worker thread. powertools idempotency has no async form (its boto3
    blocks: powertools-lambda-python#4483), so its DynamoDB calls around this hold that thread, never the
    loop; the work itself runs on the loop, where the aioboto3 clients live."""
    return asyncio.run_coroutine_threadsafe(work(), loop).result()


class _Idempotency:
    """powertools idempotency over its own DynamoDB table (`id` key, TTL on `expiration`), keyed by the SQS
    message id: records in progress, completed (with the result) or gone when the work failed."""

    def __init__(self, settings: Settings, table: str) -> None:
        cfg = settings.resolver
        # Each worker waits for one message's work: room for BATCH_CONCURRENCY faces and dead letters beside.
        workers = settings.concurrency + 2
        self.config = IdempotencyConfig(expires_after_seconds=settings.idempotency_ttl_s)
        store = DynamoDBPersistenceLayer(
            table_name=table, key_attr=IDEMPOTENCY_KEY, expiry_attr=IDEMPOTENCY_TTL_ATTRIBUTE,
            boto3_session=boto3.session.Session(region_name=cfg.region),
            boto_config=Config(retries={"mode": "standard", "total_max_attempts": cfg.max_attempts},
                               connect_timeout=5, read_timeout=30,
                               max_pool_connections=max(10, workers)))
        self._run = idempotent_function(data_keyword_argument="message_id", persistence_store=store,
                                        config=self.config)(_on_loop)
        self.threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="idempotency")

    async def once(self, message_id: str, work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._run, message_id=message_id, loop=loop, work=work)
        # The copied context carries the record's log keys over to the work scheduled back on this loop.
        return await loop.run_in_executor(self.threads, contextvars.copy_context().run, call)


class Container:
    """What a warm Lambda container reuses: one event loop, the AWS clients bound to it, the Resolver."""

    def __init__(self, settings: Settings, session: aioboto3.Session | None = None) -> None:
        self.settings = settings
        self._session = session or aioboto3.Session(region_name=settings.resolver.region)
        self._runner = asyncio.Runner()
        self._stack = AsyncExitStack()
        self._open_state: _Open | None = None
        self._idempotency = _Idempotency(settings, settings.idempotency_table) if settings.idempotency_table else None
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
        turns = _Turns(self.settings.concurrency)

        async def record_handler(record: SQSRecord) -> None:
            await self._handle_record(state, record.raw_event, turns)

        batch = _BatchOnThisLoop()
        try:
            with batch(list(event.get("Records", [])), record_handler):
                await batch.process_here()
        finally:
            if self.metrics.metric_set:
                self.metrics.flush_metrics()  # one EMF line per batch, even when it fails
        return dict(batch.response())

    async def _handle_record(self, state: _Open, record: Mapping[str, Any], turns: "_Turns") -> None:
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
        try:
            if isinstance(request, ListAction):
                return {"ok": True, "persons": [dataclasses.asdict(p) for p in await resolver.persons()]}
            if isinstance(request, LabelAction):
                person = await resolver.label(request.person_id, request.name)
            elif isinstance(request, ForgetAction):
                person = await resolver.forget(request.person_id)
            elif isinstance(request, MergeAction):
                person = await resolver.merge(request.person_id, request.gone)
            elif isinstance(request, MoveAction):
                person = await resolver.move(request.face_id, request.person_id)
            else:
                person = await resolver.reject(request.face_id)
        except KeyError as e:
            what = "face" if isinstance(request, (MoveAction, RejectAction)) and e.args[0] == request.face_id else "person"
            return {"ok": False, "error": f"unknown {what} {e.args[0]}"}
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "person": dataclasses.asdict(person)}


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
