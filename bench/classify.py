"""Classifier throughput: 100,000 drops carrying 1,000,000 host events, classified in one call.

The figure that matters is whether `nwp500d report` stays interactive on years of history, and whether the daemon
can re-classify after every drop without noticing; the aim is <= 2 s for the whole set on this 2-core machine.
The baseline, measured in the same run, is the cost of only parsing the same drops from their stored JSON records
(what any report must pay anyway), so the ratio says how much classification adds on top of reading.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from _harness import gc_paused, new_parser

from nwp500d.analysis.classify import classify
from nwp500d.clock import iso_utc
from nwp500d.model import ConnectionDropEvent

CATEGORIES = (("suspend", "resume"), ("wifi", "disconnected"), ("link", "down"), ("cron", "job"),
              ("dhcp", "ack"), ("network_manager", "state_change"), ("time", "synchronized"), ("dns", "degraded"))
ERRORS = ("AWS_ERROR_MQTT_TIMEOUT", "AWS_IO_SOCKET_CLOSED", "AWS_ERROR_MQTT_UNEXPECTED_HANGUP")


def build(drops: int, events_per_drop: int, seed: int) -> list[dict[str, Any]]:
    """Stored drop records (as the event log holds them) with host events spread around each drop."""
    rng = random.Random(seed)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    records = []
    for index in range(drops):
        duration = rng.expovariate(1 / 1800)
        t += timedelta(seconds=duration + rng.uniform(1, 30))
        host: list[dict[str, Any]] = []
        for _ in range(events_per_drop):
            category, kind = rng.choice(CATEGORIES)
            at = t + timedelta(seconds=rng.uniform(-300, 60))
            host.append({"time": iso_utc(at), "category": category, "kind": kind, "message": f"{category} {kind}",
                         "unit": None, "interface": "wlan0", "fields": {}})
        host.sort(key=lambda e: e["time"])
        records.append(ConnectionDropEvent(
            timestamp=iso_utc(t), error_name=rng.choice(ERRORS), duration_connected_seconds=duration,
            drop_id=f"{index:x}", session_id=f"s{index:x}", correlation="done", host_events=host,
            publish_rate_60s=rng.uniform(0, 0.1), seconds_since_last_activity=rng.uniform(0, 90),
            suspended_seconds=0.0, keep_alive_secs=60, messages_published_in_session=rng.randint(0, 50),
        ).to_dict())
    return records


def main() -> int:
    parser = new_parser(__doc__)
    parser.add_argument("--drops", type=int, default=100_000)
    parser.add_argument("--events-per-drop", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    encoded = [json.dumps(r) for r in build(args.drops, args.events_per_drop, args.seed)]
    built = time.perf_counter() - started
    parse_times, classify_times = [], []
    verdict = None
    analysis: Any = None
    for _ in range(args.repeats):
        drops, analysis = [], None  # release the previous repeat's objects: each repeat starts alike
        with gc_paused():
            t0 = time.perf_counter()
            drops = [ConnectionDropEvent.from_dict(json.loads(line)) for line in encoded]
            t1 = time.perf_counter()
            analysis = classify(drops)
            t2 = time.perf_counter()
        parse_times.append(t1 - t0)
        classify_times.append(t2 - t1)
        verdict = analysis.verdict
    assert verdict is not None
    figures = {
        "drops": args.drops,
        "host_events": args.drops * args.events_per_drop,
        "parse_seconds_median": statistics.median(parse_times),
        "classify_seconds_median": statistics.median(classify_times),
        "ratio_classify_to_parse": statistics.median(classify_times) / statistics.median(parse_times),
        "aim_seconds": 2.0,
        "aim_met": statistics.median(classify_times) <= 2.0,
        "verdict": f"{verdict.cause}/{verdict.subcause}",
        "build_seconds": built,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'figure':<44}{'value':>12}")
    print(f"{'drops / host events':<44}{args.drops:>6,} / {args.drops * args.events_per_drop:,}")
    print(f"{'baseline: parse stored records (s, median)':<44}{figures['parse_seconds_median']:>12.3f}")
    print(f"{'classify (s, median)':<44}{figures['classify_seconds_median']:>12.3f}")
    print(f"{'classify / parse':<44}{figures['ratio_classify_to_parse']:>12.2f}")
    print(f"{'aim <= 2 s':<44}{'met' if figures['aim_met'] else 'NOT met':>12}")
    print(f"verdict on the synthetic history: {figures['verdict']}; {args.repeats} repeats, GC paused while timed; "
          f"CPython {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
