"""The health figures from two snapshots of a camera's counters, and when sustained drops start and end."""

from __future__ import annotations

import threading

from facewatchd.pipeline.health import Counters, HealthConfig, HealthMonitor, StageClock, StageTotals, figures


def test_figures_over_one_interval() -> None:
    before = Counters(100.0, 1000, 100, StageTotals(900, 18.0), StageTotals(5, 0.25))
    now = Counters(160.0, 2800, 550, StageTotals(2250, 45.0), StageTotals(15, 0.75))
    health = figures("door", before, now, "mqtt", False, 7)
    assert (health.fps_in, health.fps_out) == (30.0, 22.5)  # 1800 read, 450 of them dropped, in 60 s
    assert (health.dropped, health.drop_rate) == (450, 0.25)
    assert (health.frames_total, health.dropped_total) == (2800, 550)
    assert (health.detect_ms, health.embed_ms) == (20.0, 50.0)  # 27 s over 1350 detections; 0.5 s over 10 calls
    assert (health.link, health.link_online, health.outbox, health.interval_s) == ("mqtt", False, 7, 60.0)


def test_an_idle_interval_has_no_rate_and_no_stage_times() -> None:
    still = Counters(0.0, 10, 2, StageTotals(8, 0.1))
    health = figures("yard", still, Counters(60.0, 10, 2, StageTotals(8, 0.1)), "local", True, 0)
    assert (health.fps_in, health.fps_out, health.drop_rate) == (0.0, 0.0, 0.0)
    assert health.detect_ms is None and health.embed_ms is None


def counters(at: float, frames: int, dropped: int) -> Counters:
    return Counters(at, frames, dropped)


def test_drops_warn_only_when_sustained_and_end_at_the_first_good_interval() -> None:
    monitor = HealthMonitor(HealthConfig(interval_s=60, max_drop_rate=0.2, drop_intervals=2))
    monitor.start("door", counters(0, 0, 0))
    rates = []
    changes = []
    # per interval: 100 frames read, with 30, 10, 30, 30, 30, 5 dropped
    for i, dropped in enumerate([30, 10, 30, 30, 30, 5], start=1):
        before_total = sum([30, 10, 30, 30, 30, 5][:i - 1])
        health, change = monitor.report("door", counters(60.0 * i, 100 * i, before_total + dropped), "local", True, 0)
        rates.append((health.drop_rate, health.dropping))
        changes.append(change and (change.dropping, change.intervals))
    assert rates == [(0.3, False), (0.1, False), (0.3, False), (0.3, True), (0.3, True), (0.05, False)]
    # one bad minute alone is no warning; two in a row are, once; the first good one ends it
    assert changes == [None, None, None, (True, 2), None, (False, 0)]


def test_a_rate_at_the_bound_is_not_above_it() -> None:
    monitor = HealthMonitor(HealthConfig(max_drop_rate=0.2, drop_intervals=1))
    monitor.start("door", counters(0, 0, 0))
    health, change = monitor.report("door", counters(60, 100, 20), "local", True, 0)
    assert health.drop_rate == 0.2 and change is None and not health.dropping


def test_the_stage_clock_adds_up_from_many_threads() -> None:
    clock = StageClock()

    def work() -> None:
        for _ in range(1000):
            clock.add("door", 0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with clock.timing("yard"):
        pass
    assert clock.totals("door").calls == 4000 and abs(clock.totals("door").seconds - 4.0) < 1e-6
    assert clock.totals("yard").calls == 1 and clock.totals("gate") == StageTotals()


def test_the_default_is_a_line_a_minute() -> None:
    assert HealthConfig().interval_s == 60.0
