"""Local AWS for the resolver tests: moto as a real server (S3, DynamoDB, SQS, IoT, IoT data plane),
our Rekognition-compatible server, an outage proxy, and helpers that build real messages and events.

Use the fixtures from a test module or a conftest.py: `from tests.support.aws import aws_stack, ...`.
"""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import boto3
import cv2
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from facewatchd.messages import FaceQuery, new_face_id, uplink_topic
from facewatchd.resolver.aws import TABLE_ATTRIBUTES, TABLE_KEY_SCHEMA, TTL_ATTRIBUTE
from facewatchd.vision.detector import DetectorConfig, YuNetDetector
from tests.support.rekognition_server import RekognitionServer

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures"
HANDLER_PATH = REPO / "deploy" / "lambda" / "handler.py"
REGION = "us-east-1"
TS = 1_700_000_000.0  # 2023-11-14 UTC: crops land under faces/<thing>/2023/11/14/


# -- servers ---------------------------------------------------------------------------------------
class MotoServer:
    """moto as a real HTTP server on a free loopback port (its in-process mock breaks aioboto3)."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> "MotoServer":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log would drown the output
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"


class QuietRequestHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # no access log on the test output
        pass


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    target: str  # X-Amz-Target (JSON protocols), '' for S3

    @property
    def op(self) -> str:
        return self.target.rsplit(".", 1)[-1] if self.target else f"{self.method} {self.path.split('?')[0]}"


class OutageProxy:
    """An HTTP proxy in front of one service of the moto server that can be cut: while
    `failing(request)` is true it answers 503 Service Unavailable, as a service in an outage does."""

    def __init__(self, upstream: str) -> None:
        self._upstream = urlsplit(upstream)
        self._failing: Callable[[ProxiedRequest], bool] = lambda r: False
        self._lock = threading.Lock()
        self.forwarded: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._server: BaseWSGIServer | None = None

    def __enter__(self) -> "OutageProxy":
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=QuietRequestHandler)
        threading.Thread(target=self._server.serve_forever, name="outage-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def fail_when(self, failing: Callable[[ProxiedRequest], bool]) -> None:
        self._failing = failing

    def fail_after(self, n: int, ops: set[str] | None = None) -> None:
        """Forward n more requests (of `ops`, or any), then fail every request of `ops` (or all)."""
        left = [n]

        def failing(r: ProxiedRequest) -> bool:
            if ops is not None and r.op not in ops:
                return False
            with self._lock:
                left[0] -= 1
                return left[0] < 0

        self._failing = failing

    def heal(self) -> None:
        self._failing = lambda r: False

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        pr = ProxiedRequest(request.method, request.full_path.rstrip("?"), request.headers.get("X-Amz-Target", ""))
        if self._failing(pr):
            self.refused[pr.op] += 1
            body = json.dumps({"__type": "ServiceUnavailable", "message": "outage (test proxy)"})
            return Response(body, status=503, content_type="application/x-amz-json-1.0")(environ, start_response)
        self.forwarded[pr.op] += 1
        conn = http.client.HTTPConnection(self._upstream.hostname, self._upstream.port, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}}
        conn.request(request.method, pr.path, body=request.get_data(), headers=headers)
        upstream = conn.getresponse()
        data = upstream.read()
        conn.close()
        skip = {"transfer-encoding", "connection", "content-length"}
        response = Response(data, status=upstream.status,
                            headers=[(k, v) for k, v in upstream.getheaders() if k.lower() not in skip])
        return response(environ, start_response)


# -- the stack -------------------------------------------------------------------------------------
@dataclass
class AwsStack:
    """The resources the SAM template creates, made on the local servers, with unique names."""

    moto_url: str
    rekognition: RekognitionServer
    bucket: str
    table: str
    collection_id: str
    queue_url: str
    dlq_url: str
    thing: str
    idempotency_table: str = ""
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        """A plain boto3 client straight to the servers (never through a proxy), for setup and checks."""
        if service not in self._clients:
            url = self.rekognition.url if service == "rekognition" else self.moto_url
            self._clients[service] = boto3.client(service, region_name=REGION, endpoint_url=url,
                                                  aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._clients[service]

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for the Lambda handler (what template.yaml sets), pointing at the local servers."""
        urls = {"S3": self.moto_url, "DYNAMODB": self.moto_url, "SQS": self.moto_url,
                "IOT_DATA_PLANE": self.moto_url, "REKOGNITION": self.rekognition.url}
        env = {f"AWS_ENDPOINT_URL_{k}": v for k, v in urls.items()}
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION=REGION,
                   AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null", BUCKET=self.bucket, TABLE=self.table,
                   COLLECTION_ID=self.collection_id, DLQ_URL=self.dlq_url, RETENTION_DAYS="30",
                   IDEMPOTENCY_TABLE=self.idempotency_table,
                   FACE_MATCH_THRESHOLD="80", MAX_ATTEMPTS="2")
        env.update(overrides)
        return env

    def new_thing(self) -> str:
        name = f"cam-{uuid.uuid4().hex[:8]}"
        self.client("iot").create_thing(thingName=name)
        return name

    # -- state, read back for assertions -----------------------------------------------------------
    def s3_keys(self) -> list[str]:
        resp = self.client("s3").list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def table_items(self, table: str | None = None) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        de = TypeDeserializer()
        items = self.client("dynamodb").scan(TableName=table or self.table, ConsistentRead=True)["Items"]
        return [{k: de.deserialize(v) for k, v in i.items()} for i in items]

    def desired(self, thing: str | None = None) -> dict[str, Any]:
        try:
            resp = self.client("iot-data").get_thing_shadow(thingName=thing or self.thing)
        except self.client("iot-data").exceptions.ResourceNotFoundException:
            return {}
        return json.loads(resp["payload"].read())["state"].get("desired", {})

    def dead_letters(self, expected: int, wait_s: float = 5.0) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        letters: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait_s
        while len(letters) < expected and time.monotonic() < deadline:
            resp = sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       MessageAttributeNames=["All"])
            for m in resp.get("Messages", []):
                letters.append(json.loads(m["Body"]) | {"attributes": m.get("MessageAttributes", {})})
                sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
        return letters


def create_stack(moto_url: str, rekognition: RekognitionServer) -> AwsStack:
    suffix = uuid.uuid4().hex[:8]
    stack = AwsStack(moto_url, rekognition, f"facewatchd-crops-{suffix}", f"facewatchd-{suffix}",
                     f"facewatchd-{suffix}", "", "", f"cam-{suffix}")
    stack.client("s3").create_bucket(Bucket=stack.bucket)
    ddb = stack.client("dynamodb")
    ddb.create_table(TableName=stack.table, KeySchema=TABLE_KEY_SCHEMA, AttributeDefinitions=TABLE_ATTRIBUTES,
                     BillingMode="PAY_PER_REQUEST")
    ddb.update_time_to_live(TableName=stack.table,
                            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    # The handler's idempotency table, as template.yaml makes it (powertools' key and TTL attribute).
    mod = handler_module()
    stack.idempotency_table = f"facewatchd-idempotency-{suffix}"
    ddb.create_table(TableName=stack.idempotency_table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": mod.IDEMPOTENCY_KEY, "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": mod.IDEMPOTENCY_KEY, "AttributeType": "S"}])
    ddb.update_time_to_live(TableName=stack.idempotency_table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": mod.IDEMPOTENCY_TTL_ATTRIBUTE})
    sqs = stack.client("sqs")
    stack.dlq_url = sqs.create_queue(QueueName=f"facewatchd-dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.queue_url = sqs.create_queue(QueueName=f"facewatchd-faces-{suffix}", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
    stack.client("iot").create_thing(thingName=stack.thing)
    stack.client("rekognition").create_collection(CollectionId=stack.collection_id)
    return stack


# -- the Lambda module -------------------------------------------------------------------------------
def handler_module() -> ModuleType:
    """deploy/lambda/handler.py, loaded by path (`lambda` is a keyword, so it is no package)."""
    return lambda_module("handler")


@lru_cache(maxsize=4)
def lambda_module(name: str) -> ModuleType:
    """deploy/lambda/<name>.py (a Lambda entry point module), loaded by path, with its folder on sys.path
    as the Lambda runtime puts the bundle's root there: the entry points import the modules beside them."""
    if str(HANDLER_PATH.parent) not in sys.path:
        sys.path.append(str(HANDLER_PATH.parent))
    spec = importlib.util.spec_from_file_location(f"facewatchd_lambda_{name}", HANDLER_PATH.with_name(f"{name}.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def open_container(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> Any:
    """A handler Container configured from the process environment, as the Lambda runtime's is, after
    setting `overrides` there (endpoints are read by botocore from the environment, too)."""
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    mod = handler_module()
    return mod.Container(mod.Settings.from_env(os.environ))


# -- messages ----------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _detector() -> YuNetDetector:
    return YuNetDetector(DetectorConfig(min_face_px=12))


@lru_cache(maxsize=32)
def face_crop(photo: str, index: int = 0, margin: float = 0.35, face_px: int = 160, quality: int = 85) -> bytes:
    """A device-like crop: the index-th face from the left of a fixture photo, with a margin,
    scaled so the face is about `face_px` wide, JPEG-encoded."""
    image = cv2.imread(str(FIXTURES / photo))
    faces = sorted(_detector().detect(image), key=lambda f: f.box[0])
    x, y, w, h = faces[index].box
    x0, y0 = int(max(0, x - margin * w)), int(max(0, y - margin * h))
    x1, y1 = int(min(image.shape[1], x + w * (1 + margin))), int(min(image.shape[0], y + h * (1 + margin)))
    crop = image[y0:y1, x0:x1]
    scale = min(1.0, face_px / w)
    if scale < 1.0:
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return jpeg.tobytes()


def blank_jpeg(size: int = 200) -> bytes:
    """A valid JPEG with no face in it."""
    ramp = np.tile(np.linspace(40, 200, size, dtype=np.uint8), (size, 1))
    ok, jpeg = cv2.imencode(".jpg", cv2.merge([ramp, ramp, ramp]))
    assert ok
    return jpeg.tobytes()


def face_query(crop: bytes, thing: str, face_id: str | None = None, ts: float = TS) -> FaceQuery:
    return FaceQuery(face_id or new_face_id(), thing, "cam0", "track-1", crop, None, ts)


def rule_body(payload: bytes | str | dict[str, Any], topic: str) -> str:
    """The SQS body the IoT rule `SELECT *, topic() AS topic` makes of a device's JSON payload."""
    if isinstance(payload, dict):
        return json.dumps(payload | {"topic": topic})
    doc = json.loads(payload)
    return json.dumps(doc | {"topic": topic})


def sqs_record(body: str, message_id: str | None = None) -> dict[str, Any]:
    return {"messageId": message_id or str(uuid.uuid4()), "receiptHandle": "rh-" + uuid.uuid4().hex,
            "body": body, "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(TS * 1000))},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:facewatchd-faces", "awsRegion": REGION}


def query_record(query: FaceQuery, message_id: str | None = None) -> dict[str, Any]:
    return sqs_record(rule_body(query.to_json(), uplink_topic(query.thing)), message_id)


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def rekognition_server() -> Iterator[RekognitionServer]:
    with RekognitionServer(REGION) as server:
        yield server


@pytest.fixture
def aws_stack(moto_server: MotoServer, rekognition_server: RekognitionServer,
              monkeypatch: pytest.MonkeyPatch) -> AwsStack:
    """Fresh resources on the session's servers; the process environment points aioboto3 at them.
    The Rekognition call counters start at zero."""
    stack = create_stack(moto_server.url, rekognition_server)
    rekognition_server.calls.clear()
    rekognition_server.faults.clear()
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return stack


@pytest.fixture
def container(aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    c = open_container(monkeypatch)
    yield c
    c.close()


# -- assertions ------------------------------------------------------------------------------------
@dataclass
class LambdaContext:
    """What the Lambda runtime passes as `context`, as far as the handler and powertools read it."""

    function_name: str = "facewatchd-resolver"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:facewatchd-resolver"
    timeout_s: float = 120.0
    _start: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self.timeout_s - (time.monotonic() - self._start)) * 1000)


def handle(container: Any, *records: dict[str, Any]) -> list[str]:
    """Run one SQS batch through the handler; returns the message ids reported as failures."""
    result = container.run(container.handle_sqs(sqs_event(*records), LambdaContext()))
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def emf_metrics(output: str) -> Counter[str]:
    """The sum of every EMF metric printed in `output` (powertools Metrics), by metric name."""
    sums: Counter[str] = Counter()
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            doc = json.loads(line)
            for directive in doc["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = doc[metric["Name"]]
                    sums[metric["Name"]] += int(sum(value) if isinstance(value, list) else value)
    return sums


def persons(stack: AwsStack) -> dict[str, dict[str, Any]]:
    """person_id -> {"profile": item, "faces": [face items]} from a consistent scan of the table."""
    out: dict[str, dict[str, Any]] = {}
    for item in stack.table_items():
        if item["pk"].startswith("PERSON#"):
            entry = out.setdefault(item["pk"][len("PERSON#"):], {"profile": None, "faces": []})
            if item["sk"] == "PROFILE":
                entry["profile"] = item
            else:
                entry["faces"].append(item)
    return out


def assert_consistent(stack: AwsStack) -> None:
    """Nothing half-written: every face record has its person and face item, every person has a face,
    every face item's crop is in S3."""
    items = stack.table_items()
    markers = {i["face_id"]: i for i in items if i["pk"].startswith("FACE#")}
    by_person = persons(stack)
    keys = set(stack.s3_keys())
    for face_id, marker in markers.items():
        entry = by_person.get(marker["person_id"])
        assert entry and entry["profile"], f"face {face_id} recorded without its person"
        assert face_id in {f["face_id"] for f in entry["faces"]}, f"face {face_id} recorded without its face item"
    for person_id, entry in by_person.items():
        assert entry["profile"] is not None, f"face items of {person_id} without a person"
        assert entry["faces"], f"person {person_id} without a face"
        for face in entry["faces"]:
            assert face["face_id"] in markers, f"face item {face['face_id']} without its face record"
            assert face["crop_key"] in keys, f"crop {face['crop_key']} missing from S3"
