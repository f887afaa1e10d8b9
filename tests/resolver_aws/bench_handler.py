"""Latency of the Lambda handler per message at batch sizes 1, 10 and 100, against the local servers
(moto + our Rekognition server, whose YuNet + SFace work stands in for Rekognition's own time).
Not collected by pytest. Run from the repository root:

    .venv/bin/python -m tests.resolver_aws.bench_handler [--rounds 30,5,2]

Messages draw at random from 36 faces (29 people of the 1927 Solvay photo, Obama, Biden), each with a
new face id, so a batch mixes new persons (search + index) and people seen before (search only).
Per-message latency is the time of Resolver.resolve for that message; per-invocation latency is the
handler call for the whole batch (what SQS waits for).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time
from typing import Any

import cv2
import structlog

from facewatchd.vision.analyzer import FaceAnalyzer, decode_image
from facewatchd.vision.detector import YuNetDetector
from tests.support.aws import (
    FIXTURES, MotoServer, create_stack, face_crop, face_query, handler_module, query_record, sqs_event,
)
from tests.support.rekognition_server import RekognitionServer


def crop_pool() -> list[bytes]:
    solvay = len(YuNetDetector().detect(cv2.imread(str(FIXTURES / "solvay_conference_1927.jpg"))))
    crops = [face_crop("solvay_conference_1927.jpg", i) for i in range(solvay)]
    crops += [face_crop(p) for p in ("obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
    crops += [face_crop("two_people.jpg", 0), face_crop("two_people.jpg", 1)]
    analyzer = FaceAnalyzer()  # keep only crops in which a face is found again, as Rekognition must
    return [c for c in crops if analyzer.largest(decode_image(c))]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench(batch_size: int, rounds: int, pool: list[bytes], moto: MotoServer, rek: RekognitionServer,
          rng: random.Random, concurrency: int, n_things: int) -> dict[str, Any]:
    stack = create_stack(moto.url, rek)
    os.environ.update(stack.env(MAX_ATTEMPTS="3", BATCH_CONCURRENCY=str(concurrency)))
    mod = handler_module()
    container = mod.Container(mod.Settings.from_env(os.environ))
    per_message: list[float] = []
    try:
        warm = face_query(pool[0], stack.thing)
        t0 = time.perf_counter()
        container.run(container.handle_sqs(sqs_event(query_record(warm))))  # cold start: clients, connections
        cold_ms = (time.perf_counter() - t0) * 1000
        resolver = container.resolver
        resolve = resolver.resolve

        async def timed(query: Any) -> Any:
            start = time.perf_counter()
            try:
                return await resolve(query)
            finally:
                per_message.append((time.perf_counter() - start) * 1000)

        resolver.resolve = timed  # instrumentation only: the real resolve runs underneath
        things = [stack.thing] + [stack.new_thing() for _ in range(n_things - 1)]
        rek.calls.clear()
        before = resolver.stats.indexed
        invocations: list[float] = []
        failures = 0
        for _ in range(rounds):
            records = [query_record(face_query(rng.choice(pool), rng.choice(things))) for _ in range(batch_size)]
            t0 = time.perf_counter()
            result = container.run(container.handle_sqs(sqs_event(*records)))
            invocations.append((time.perf_counter() - t0) * 1000)
            failures += len(result["batchItemFailures"])
        messages = batch_size * rounds
        return {"batch": batch_size, "messages": messages, "cold_ms": cold_ms, "failures": failures,
                "msg_median": statistics.median(per_message), "msg_p95": pct(per_message, 95),
                "inv_median": statistics.median(invocations), "inv_p95": pct(invocations, 95),
                "per_msg_amortised": sum(invocations) / messages,
                "searches_per_face": rek.calls["SearchFacesByImage"] / messages,
                "indexes": rek.calls["IndexFaces"], "new_persons": resolver.stats.indexed - before}
    finally:
        container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", default="30,5,2", help="invocations at batch sizes 1,10,100")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=1, help="BATCH_CONCURRENCY")
    parser.add_argument("--things", type=int, default=1, help="devices the messages come from")
    args = parser.parse_args()
    rounds = [int(r) for r in args.rounds.split(",")]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no per-face lines
    rng = random.Random(args.seed)
    pool = crop_pool()
    print(f"{len(pool)} distinct faces in the pool; cpu count {os.cpu_count()}")
    with MotoServer() as moto, RekognitionServer() as rek:
        rows = [bench(size, n, pool, moto, rek, rng, args.concurrency, args.things)
                for size, n in zip((1, 10, 100), rounds)]
    print(f"\n{'batch':>5} {'msgs':>5} {'msg med':>8} {'msg p95':>8} {'inv med':>9} {'inv p95':>9} "
          f"{'amort/msg':>9} {'cold':>7} {'search/face':>11} {'index':>5} {'new':>4} {'fail':>4}")
    for r in rows:
        print(f"{r['batch']:>5} {r['messages']:>5} {r['msg_median']:>6.1f}ms {r['msg_p95']:>6.1f}ms "
              f"{r['inv_median']:>7.1f}ms {r['inv_p95']:>7.1f}ms {r['per_msg_amortised']:>7.1f}ms "
              f"{r['cold_ms']:>5.0f}ms {r['searches_per_face']:>11.2f} {r['indexes']:>5} {r['new_persons']:>4} "
              f"{r['failures']:>4}")


if __name__ == "__main__":
    main()
