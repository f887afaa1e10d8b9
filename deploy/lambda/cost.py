"""Cost of resolving 1,000 unknown faces on AWS, line by line.

Every price and every workload figure is a command-line parameter. The defaults are EXAMPLE values
(us-east-1 list prices as published at one point in time, x86 Lambda, no free tier): check the AWS
pricing pages for your region and date before relying on the result.

    python deploy/lambda/cost.py
    python deploy/lambda/cost.py --new-fraction 0.5 --crop-kb 30 --rekognition-per-1k 0.80
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

FACES = 1000


@dataclass(frozen=True)
class LineItem:
    service: str
    what: str
    usd: float


def _units(size_kb: float, unit_kb: float) -> int:
    """AWS meters many requests in size increments (IoT 5 KB, shadow 1 KB, SQS 64 KB)."""
    return max(1, math.ceil(size_kb / unit_kb))


def cost_per_1000(a: argparse.Namespace) -> list[LineItem]:
    payload_kb = a.crop_kb * 4 / 3 + 0.5  # base64 crop plus the JSON fields
    new = FACES * a.new_fraction
    batches = FACES / a.batch_size
    iot_units = _units(payload_kb, 5)
    return [
        LineItem("Rekognition", "SearchFacesByImage, 1 per face", FACES * a.rekognition_per_1k / 1000),
        LineItem("Rekognition", f"IndexFaces, {a.new_fraction:.0%} new persons", new * a.rekognition_per_1k / 1000),
        LineItem("Rekognition", f"face metadata, {a.face_months:g} month(s)", new * a.face_month * a.face_months),
        LineItem("IoT Core", f"uplink message, {iot_units} x 5 KB", FACES * iot_units * a.iot_message_per_m / 1e6),
        LineItem("IoT Core", "rule triggered + SQS action", FACES * iot_units * 2 * a.iot_rule_per_m / 1e6),
        LineItem("IoT Core", f"shadow ops, {a.shadow_ops} per face",
                 FACES * a.shadow_ops * a.shadow_op_per_m / 1e6),
        LineItem("IoT Core", "shadow delta to the device", FACES * a.iot_message_per_m / 1e6),
        LineItem("SQS", "send + receive + delete", FACES * _units(payload_kb, 64) * (1 + 2 / a.batch_size)
                 * a.sqs_request_per_m / 1e6),
        LineItem("Lambda", f"{a.lambda_ms_per_face:.0f} ms/face at {a.lambda_mb} MB",
                 FACES * a.lambda_ms_per_face / 1000 * a.lambda_mb / 1024 * a.lambda_gb_s),
        LineItem("Lambda", f"invocations, batches of {a.batch_size}", batches * a.lambda_request_per_m / 1e6),
        LineItem("S3", "PutObject", FACES * a.s3_put_per_1k / 1000),
        LineItem("S3", f"storage for {a.retention_days:g} days",
                 FACES * a.crop_kb / 1024 ** 2 * a.s3_gb_month * a.retention_days / 30),
        LineItem("DynamoDB", "TransactWriteItems: 3 items x 2 WRU", FACES * 6 * a.ddb_wru_per_m / 1e6),
        LineItem("DynamoDB", "idempotency record: 2 writes x 1 WRU", FACES * 2 * a.ddb_wru_per_m / 1e6),
        LineItem("DynamoDB", f"reads, {a.ddb_rru_per_face:g} RRU per face",
                 FACES * a.ddb_rru_per_face * a.ddb_rru_per_m / 1e6),
        LineItem("CloudWatch", f"logs, {a.log_kb_per_face:g} KB per face",
                 FACES * a.log_kb_per_face / 1024 ** 2 * a.logs_gb),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    w = p.add_argument_group("workload (example values)")
    w.add_argument("--new-fraction", type=float, default=0.3, help="share of unknown faces that are new persons")
    w.add_argument("--crop-kb", type=float, default=20, help="JPEG crop size")
    w.add_argument("--batch-size", type=int, default=10, help="SQS messages per Lambda invocation")
    w.add_argument("--lambda-ms-per-face", type=float, default=400, help="billed Lambda time per face")
    w.add_argument("--lambda-mb", type=int, default=512, help="Lambda memory")
    w.add_argument("--shadow-ops", type=int, default=3, help="GetThingShadow + UpdateThingShadow + device report")
    w.add_argument("--ddb-rru-per-face", type=float, default=3, help="read request units per face")
    w.add_argument("--retention-days", type=float, default=30, help="days crops are kept")
    w.add_argument("--face-months", type=float, default=1, help="months of face metadata charged to these faces")
    w.add_argument("--log-kb-per-face", type=float, default=1, help="log bytes written per face")
    pr = p.add_argument_group("prices in USD (example values, not truths: check aws.amazon.com/pricing)")
    pr.add_argument("--rekognition-per-1k", type=float, default=1.00, help="Group 1 API images, per 1,000")
    pr.add_argument("--face-month", type=float, default=0.00001, help="face metadata stored, per face-month")
    pr.add_argument("--iot-message-per-m", type=float, default=1.00, help="IoT messages (5 KB units), per million")
    pr.add_argument("--iot-rule-per-m", type=float, default=0.15, help="rules triggered or actions, per million")
    pr.add_argument("--shadow-op-per-m", type=float, default=1.25, help="shadow operations (1 KB units), per million")
    pr.add_argument("--sqs-request-per-m", type=float, default=0.40, help="SQS requests (64 KB units), per million")
    pr.add_argument("--lambda-gb-s", type=float, default=0.0000166667, help="Lambda, per GB-second")
    pr.add_argument("--lambda-request-per-m", type=float, default=0.20, help="Lambda invocations, per million")
    pr.add_argument("--s3-put-per-1k", type=float, default=0.005, help="S3 PUT requests, per 1,000")
    pr.add_argument("--s3-gb-month", type=float, default=0.023, help="S3 Standard storage, per GB-month")
    pr.add_argument("--ddb-wru-per-m", type=float, default=0.625, help="DynamoDB on-demand writes, per million")
    pr.add_argument("--ddb-rru-per-m", type=float, default=0.125, help="DynamoDB on-demand reads, per million")
    pr.add_argument("--logs-gb", type=float, default=0.50, help="CloudWatch Logs ingestion, per GB")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    items = cost_per_1000(args)
    total = sum(i.usd for i in items)
    print(f"Cost per {FACES:,} unknown faces (example prices; see --help)\n")
    for i in items:
        print(f"  {i.service:<12} {i.what:<42} ${i.usd:>9.5f}  {i.usd / total:>6.1%}")
    print(f"  {'total':<55} ${total:>9.5f}")


if __name__ == "__main__":
    main()
