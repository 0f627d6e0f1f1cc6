"""Fault detection and recovery: nwp500d's SessionSupervisor against awscrt's own reconnect, in the same run.

A latency measured on one machine says little on its own, so every figure is printed next to the same figure for
the obvious alternative, measured minutes apart against the same mosquitto through the same fault proxy: a plain
connection from ``awsiot.mqtt_connection_builder.websockets_with_default_aws_signing`` that leaves reconnecting to
the CRT (reconnect 5 s doubling to 60 s, the builder's defaults). Ours runs with nwp500d's default backoff.

Both sides get the same keep-alive and ping timeout. The builder's own keep-alive default (1200 s) is deliberately
not used: a blackhole is only ever noticed by a missed PINGRESP, so both sides would need up to 20 minutes per trial
and the figure would measure the setting, not the code.

Each trial builds a fresh session on each side, so every fault hits a session that was up with a reset backoff (as a
drop after hours of uptime does); reusing one session would charge later trials with the backoff of earlier ones.
Trials alternate which side goes first, and a blackhole trial uses the same random ping phase for both sides, so a
lucky phase cannot favour one of them.

Faults (FaultProxy between client and broker):

* ``blackhole``: silence both ways, sockets kept open; lifted the moment the interruption is seen.
* ``rst``: every proxied connection is reset; the path is healthy at once, so "lifted" is the fault itself.
* ``refused``: new connections are refused and current ones reset; lifted after ``--refuse-secs``.

"Detected" is when asyncio code sees the interruption (both sides stamp it on the event loop, after the hand-over
from the CRT thread). "Usable" is the first QoS 1 publish acknowledged after the reconnect was reported: a reconnect
that cannot carry a message has not recovered anything.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from _harness import (
    BenchError,
    add_json_flag,
    finish,
    median_ratio,
    new_parser,
    positive_int,
    print_columns,
    progress,
    python_label,
    run_to_exit_status,
    sigterm_cancels_current_task,
    spread,
    spread_cell,
    versions,
)
from awscrt import auth as crt_auth
from awscrt import mqtt as crt_mqtt
from awsiot import mqtt_connection_builder

from nwp500d.config import MqttConnectionConfig
from nwp500d.diagnostics import MqttDiagnosticsCollector
from nwp500d.mqtt.session import SessionEvent, SessionSupervisor
from nwp500d.mqtt.transport import CrtFactory, settings_from_config
from nwp500d.navilink.auth import NaviLinkClient
from nwp500d.navilink.tokens import AwsCredentials
from nwp500d.sim.broker import BrokerUnavailable
from nwp500d.sim.demo import DEMO_EMAIL, DEMO_PASSWORD, Simulator, simulator

Fault = Literal["blackhole", "rst", "refused"]
FAULTS: tuple[Fault, ...] = ("blackhole", "rst", "refused")
ObservedKind = Literal["down", "up", "failed"]

DEFAULT_KEEP_ALIVE_SECS = 4
DEFAULT_PING_TIMEOUT_MS = 1000
DEFAULT_TRIALS = 3
DEFAULT_REFUSE_SECS = 6.0
BUILDER_KEEP_ALIVE_SECS = 1200
BUILDER_RECONNECT = (5, 60)  # reconnect_min/max_timeout_secs: the builder's defaults, left alone
REGION = "us-east-1"
PROBE_TOPIC = "nwp500d/bench/probe"

CONNECT_BOUND = 30.0
INSTANT_DETECT_BOUND = 10.0
RECOVER_BOUND = 90.0  # above the CRT's 60 s reconnect cap, so a slow baseline is measured, not cut off
PROBE_BOUND = 10.0
CLOSE_BOUND = 10.0
IDLE_BOUND = 5.0


@dataclass(frozen=True)
class Observed:
    kind: ObservedKind
    at: float
    error: str | None = None


class _Side(Protocol):
    label: str

    async def start(self) -> None: ...
    async def next(self, kind: ObservedKind, timeout: float) -> Observed: ...
    async def probe(self) -> None: ...
    async def close(self) -> None: ...
    @property
    def failed_attempts(self) -> int: ...


class _Events:
    """Everything either side reports lands here, stamped on the loop, so both are timed at the same point."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Observed] = asyncio.Queue()
        self.failed = 0

    def put(self, kind: ObservedKind, error: str | None = None) -> None:
        self.queue.put_nowait(Observed(kind, time.monotonic(), error))

    async def next(self, kind: ObservedKind, timeout: float) -> Observed:
        async with asyncio.timeout(timeout):
            while True:
                seen = await self.queue.get()
                if seen.kind == "failed":
                    self.failed += 1
                if seen.kind == kind:
                    return seen


class OursSide:
    """nwp500d as the daemon builds it: ``settings_from_config`` of the default MqttConnectionConfig, K/P aside."""

    label = "ours"

    def __init__(self, sim: Simulator, navilink: NaviLinkClient, client_id: str, keep_alive: int, ping_ms: int) -> None:
        config = MqttConnectionConfig(endpoint=sim.broker.host, port=sim.proxy.port, transport="wss-sigv4",
                                      ca_file=str(sim.broker.ca_file))
        # MqttConnectionConfig refuses keep-alives under 30 s (AWS IoT's floor); the transport takes any value.
        settings = dataclasses.replace(settings_from_config(config, client_id), keep_alive_secs=keep_alive,
                                       ping_timeout_ms=ping_ms)
        self.config = config
        self._events = _Events()
        self._supervisor = SessionSupervisor(config=config, factory=CrtFactory(settings, navilink.aws_credentials),
                                             credentials=navilink, collector=MqttDiagnosticsCollector())
        self._supervisor.on_event(self._on_event)
        self._task: asyncio.Task[None] | None = None

    def _on_event(self, event: SessionEvent) -> None:
        name = event.error.name if event.error is not None else None
        if event.kind == "interrupted":
            self._events.put("down", name)
        elif event.kind in ("connected", "rebuilt", "deep_reconnected"):
            self._events.put("up")
        elif event.kind == "failed":
            self._events.put("failed", name)

    @property
    def failed_attempts(self) -> int:
        return self._events.failed

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervisor.run(), name="bench.ours")
        await self._events.next("up", CONNECT_BOUND)

    async def next(self, kind: ObservedKind, timeout: float) -> Observed:
        return await self._events.next(kind, timeout)

    async def probe(self) -> None:
        async with asyncio.timeout(PROBE_BOUND):
            if not await self._supervisor.publish(PROBE_TOPIC, b"probe"):
                raise BenchError("the probe publish was queued: the session was not up")

    async def close(self) -> None:
        self._supervisor.stop()
        if self._task is None:
            return
        try:
            async with asyncio.timeout(CLOSE_BOUND):
                await asyncio.gather(self._task, return_exceptions=True)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _crt_result(future: concurrent.futures.Future[Any], timeout: float) -> Any:
    """Await a CRT future under a deadline; shielded, so giving up never cancels a future the CRT still owns."""
    async with asyncio.timeout(timeout):
        return await asyncio.shield(asyncio.wrap_future(future))


class BaselineSide:
    """What an awsiotsdk user gets by default: the builder's connection, and the CRT reconnecting on its own."""

    label = "baseline"

    def __init__(self, sim: Simulator, creds: AwsCredentials, client_id: str, keep_alive: int, ping_ms: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = _Events()
        provider = crt_auth.AwsCredentialsProvider.new_static(creds.access_key_id, creds.secret_access_key,
                                                              creds.session_token)
        self._connection = mqtt_connection_builder.websockets_with_default_aws_signing(
            region=REGION, credentials_provider=provider, endpoint=sim.broker.host, port=sim.proxy.port,
            ca_filepath=str(sim.broker.ca_file), client_id=client_id,
            keep_alive_secs=keep_alive, ping_timeout_ms=ping_ms,
            on_connection_interrupted=self._on_interrupted, on_connection_resumed=self._on_resumed,
        )
        self._connected = False

    # CRT thread: hand over and return at once (a blocked callback costs the connection).
    def _post(self, kind: ObservedKind, error: str | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: a late callback from an abandoned connection
            self._loop.call_soon_threadsafe(self._events.put, kind, error)

    def _on_interrupted(self, connection: Any, error: Any, **_kwargs: Any) -> None:
        self._post("down", str(getattr(error, "name", type(error).__name__)))

    def _on_resumed(self, connection: Any, return_code: Any, session_present: bool, **_kwargs: Any) -> None:
        self._post("up")

    @property
    def failed_attempts(self) -> int:
        return self._events.failed  # always 0: the 3.1.1 client reports no failed automatic reconnect

    async def start(self) -> None:
        await _crt_result(self._connection.connect(), CONNECT_BOUND)
        self._connected = True

    async def next(self, kind: ObservedKind, timeout: float) -> Observed:
        return await self._events.next(kind, timeout)

    async def probe(self) -> None:
        future, _packet_id = self._connection.publish(PROBE_TOPIC, b"probe", crt_mqtt.QoS.AT_LEAST_ONCE)
        await _crt_result(future, PROBE_BOUND)

    async def close(self) -> None:
        if not self._connected:
            return
        self._connected = False
        # A connection stuck in a WebSocket stall never completes disconnect(); it is abandoned after the bound.
        with contextlib.suppress(Exception):
            await _crt_result(self._connection.disconnect(), CLOSE_BOUND)


@dataclass
class Trial:
    side: str
    fault: Fault
    trial: int
    phase_secs: float | None = None
    detection_secs: float | None = None
    detected_error: str | None = None
    reconnected_secs: float | None = None  # fault lifted -> reconnect reported
    recovery_secs: float | None = None  # fault lifted -> first QoS 1 publish acknowledged
    failed_attempts_reported: int = 0
    problem: str | None = None


@dataclass
class Settings:
    trials: int
    keep_alive: int
    ping_ms: int
    refuse_secs: float
    faults: tuple[Fault, ...]
    seed: int | None
    sides: tuple[str, ...] = field(default=("ours", "baseline"))

    @property
    def detect_window(self) -> float:
        return self.keep_alive + self.ping_ms / 1000


async def _inject(sim: Simulator, fault: Fault) -> None:
    if fault == "blackhole":
        sim.proxy.blackhole(True)
    elif fault == "rst":
        await sim.proxy.reset_all()
    else:
        sim.proxy.refuse(True)
        await sim.proxy.reset_all()


async def _run_trial(sim: Simulator, side: _Side, fault: Fault, result: Trial, settings: Settings) -> None:
    await side.start()
    if result.phase_secs:
        await asyncio.sleep(result.phase_secs)
    injected = time.monotonic()
    await _inject(sim, fault)
    bound = settings.detect_window + 5.0 if fault == "blackhole" else INSTANT_DETECT_BOUND
    try:
        down = await side.next("down", bound)
    except TimeoutError:
        result.problem = f"no interruption within {bound:g} s"
        return
    result.detection_secs = down.at - injected
    result.detected_error = down.error
    if fault == "blackhole":
        lifted = time.monotonic()
        sim.proxy.blackhole(False)
    elif fault == "refused":
        await asyncio.sleep(max(0.0, injected + settings.refuse_secs - time.monotonic()))
        lifted = time.monotonic()
        sim.proxy.refuse(False)
    else:
        lifted = injected
    try:
        up = await side.next("up", RECOVER_BOUND)
    except TimeoutError:
        result.problem = f"not reconnected within {RECOVER_BOUND:g} s of the lift"
        return
    finally:
        result.failed_attempts_reported = side.failed_attempts
    result.reconnected_secs = up.at - lifted
    try:
        await side.probe()
    except Exception as exc:  # noqa: BLE001 - any failure shape (CRT, timeout, queued) means "not usable"
        result.problem = f"reconnected but the probe publish failed: {type(exc).__name__}: {exc}"
        return
    result.recovery_secs = time.monotonic() - lifted


async def _settle_proxy(sim: Simulator) -> None:
    """The next trial must start with no connection left in the proxy, or a reset would hit a bystander."""
    sim.proxy.pass_through()
    try:
        async with asyncio.timeout(IDLE_BOUND):
            await sim.proxy.wait_idle()
    except TimeoutError:
        await sim.proxy.reset_all()


async def _measure(settings: Settings) -> dict[str, Any]:
    rng = random.Random(settings.seed)
    results: list[Trial] = []
    async with simulator() as sim:
        navilink = NaviLinkClient(sim.navilink.base_url, DEMO_EMAIL, DEMO_PASSWORD, cache_path=None)
        try:
            await navilink.sign_in()
            creds = navilink.aws_credentials()
            if creds is None:
                raise BenchError("the FakeNaviLink sign-in returned no AWS credentials")
            makers: dict[str, Callable[[str], _Side]] = {
                "ours": lambda cid: OursSide(sim, navilink, cid, settings.keep_alive, settings.ping_ms),
                "baseline": lambda cid: BaselineSide(sim, creds, cid, settings.keep_alive, settings.ping_ms),
            }
            for number in range(1, settings.trials + 1):
                order = settings.sides if number % 2 else tuple(reversed(settings.sides))
                for fault in settings.faults:
                    phase = rng.uniform(0, settings.keep_alive) if fault == "blackhole" else None
                    for label in order:
                        result = Trial(label, fault, number, phase_secs=phase)
                        progress(f"trial {number}/{settings.trials} {fault:<9} {label}")
                        side = makers[label](f"nwp500d-bench-{label}-{fault}-{number}-{rng.randrange(1 << 30)}")
                        try:
                            await _run_trial(sim, side, fault, result, settings)
                        except TimeoutError:
                            result.problem = f"no session within {CONNECT_BOUND:g} s"
                        except Exception as exc:  # noqa: BLE001 - one failed trial is reported, the rest still run
                            result.problem = f"{type(exc).__name__}: {exc}"
                        finally:
                            sim.proxy.pass_through()
                            await side.close()
                            await _settle_proxy(sim)
                        if result.problem:
                            progress(f"  problem: {result.problem}")
                        results.append(result)
        finally:
            await navilink.close()
    return {"trials": [dataclasses.asdict(r) for r in results]}


# ---------------------------------------------------------------- report


def _summary(trials: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """One row per fault and metric; the ratio is of medians, ours over baseline (below 1: ours is quicker)."""
    rows: list[dict[str, Any]] = []
    window = settings.detect_window
    for fault in settings.faults:
        # A reset is seen within a millisecond; in seconds its row would read 0.000 on both sides.
        metrics: list[tuple[str, str, Callable[[float], float]]] = [
            ("detection (s)", "detection_secs", lambda v: v),
            (f"detection / (K+P={window:g} s)", "detection_secs", lambda v: v / window),
        ] if fault == "blackhole" else [("detection (ms)", "detection_secs", lambda v: v * 1000)]
        metrics += [
            ("recovery: lift -> usable (s)", "recovery_secs", lambda v: v),
            ("  of which reconnect reported (s)", "reconnected_secs", lambda v: v),
        ]
        for name, key, scale in metrics:
            row: dict[str, Any] = {"fault": fault, "metric": name}
            for side in settings.sides:
                picked = [t for t in trials if t["fault"] == fault and t["side"] == side]
                values = [scale(t[key]) for t in picked if t[key] is not None]
                row[side] = spread(values)
                row[f"{side}_missing"] = len(picked) - len(values)
            row["ratio"] = median_ratio(row.get("ours"), row.get("baseline"))
            rows.append(row)
        if fault == "refused":
            row = {"fault": fault, "metric": "failed attempts reported (count)"}
            for side in settings.sides:
                counts = [float(t["failed_attempts_reported"]) for t in trials
                          if t["fault"] == fault and t["side"] == side]
                row[side] = spread(counts)
                row[f"{side}_missing"] = 0
            row["ratio"] = None
            rows.append(row)
    return rows


def _print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    header = ["fault", "metric", "ours median (min-max)", "baseline median (min-max)", "ratio ours/baseline"]
    body = [
        [row["fault"], row["metric"], spread_cell(row.get("ours"), row["ours_missing"]),
         spread_cell(row.get("baseline"), row["baseline_missing"]),
         "-" if row["ratio"] is None else f"{row['ratio']:.2f}"]
        for row in report["rows"]
    ]
    print_columns(header, body, left=2)
    print()
    errors: dict[str, set[str]] = {}
    for trial in report["trials"]:
        if trial["detected_error"]:
            errors.setdefault(f"{trial['fault']}/{trial['side']}", set()).add(trial["detected_error"])
    print("interruption errors seen: " + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(errors.items())))
    print(f"ours:     nwp500d {report['versions']['nwp500d']} SessionSupervisor + CrtFactory, MqttConnectionConfig "
          f"defaults (reconnect {cfg['ours_backoff']}), fresh session per trial")
    print(f"baseline: awsiotsdk {report['versions']['awsiotsdk']} websockets_with_default_aws_signing, CRT automatic "
          f"reconnect at the builder defaults (reconnect_min/max_timeout_secs={BUILDER_RECONNECT[0]}/"
          f"{BUILDER_RECONNECT[1]}), static credentials from the FakeNaviLink sign-in, fresh connection per trial")
    print(f"both:     awscrt {report['versions']['awscrt']}, MQTT 3.1.1 over WebSocket+TLS with SigV4, one mosquitto, "
          f"one FaultProxy; keep_alive K={cfg['keep_alive_secs']} s, ping timeout P={cfg['ping_timeout_ms']} ms")
    print(f"note:     the builder's keep_alive default ({BUILDER_KEEP_ALIVE_SECS} s) is not used on either side: a "
          f"blackhole would then take up to {BUILDER_KEEP_ALIVE_SECS // 60} minutes to detect on both sides")
    print(f"method:   {cfg['trials']} trial(s) per fault and side, alternating which side goes first; blackhole "
          "injected at a random ping phase shared by both sides and lifted as soon as the interruption is seen; "
          f"rst is instantaneous (recovery counted from the reset); refused lasts {cfg['refuse_secs']:g} s "
          "(recovery counted from the lift). usable = first QoS 1 publish acknowledged after the reconnect.")
    print("          sub-ms detections (rst, refused) are event-loop hand-over noise: their ratio means nothing.",
          flush=True)
    print(f"wall time: {report['elapsed_seconds']:.1f} s on {report['python']}")


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    parser.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS, metavar="N",
                        help=f"trials per fault and side (default {DEFAULT_TRIALS})")
    parser.add_argument("--keep-alive", type=positive_int, default=DEFAULT_KEEP_ALIVE_SECS, metavar="SECS",
                        help=f"MQTT keep-alive K for both sides (default {DEFAULT_KEEP_ALIVE_SECS})")
    parser.add_argument("--ping-timeout-ms", type=positive_int, default=DEFAULT_PING_TIMEOUT_MS, metavar="MS",
                        help=f"PINGRESP deadline P for both sides (default {DEFAULT_PING_TIMEOUT_MS})")
    parser.add_argument("--refuse-secs", type=float, default=DEFAULT_REFUSE_SECS, metavar="SECS",
                        help=f"how long the refused fault lasts (default {DEFAULT_REFUSE_SECS:g})")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS), help="faults to run")
    parser.add_argument("--seed", type=int, default=None, help="seed for the blackhole ping phases")
    add_json_flag(parser)
    parser.add_argument("--verbose", action="store_true", help="show nwp500d's own warnings on stderr")
    return parser


async def _amain(settings: Settings) -> dict[str, Any]:
    """SIGTERM cancels this task, so every ``async with`` and ``finally`` below unwinds as on any other error."""
    with sigterm_cancels_current_task():
        started = time.perf_counter()
        measured = await _measure(settings)
    backoff = MqttConnectionConfig()
    return {
        "config": {
            "trials": settings.trials, "keep_alive_secs": settings.keep_alive, "ping_timeout_ms": settings.ping_ms,
            "refuse_secs": settings.refuse_secs, "faults": list(settings.faults), "seed": settings.seed,
            "ours_backoff": f"{backoff.initial_reconnect_delay:g} s x{backoff.reconnect_backoff_multiplier:g} "
                            f"jittered up to {backoff.max_reconnect_delay:g} s",
            "baseline_reconnect_secs": list(BUILDER_RECONNECT),
        },
        "versions": versions("nwp500d", "awscrt", "awsiotsdk"),
        "python": python_label(),
        "rows": _summary(measured["trials"], settings),
        "trials": measured["trials"],
        "elapsed_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.keep_alive * 1000 <= args.ping_timeout_ms:
        print("bench: --ping-timeout-ms must be below --keep-alive (awscrt refuses it otherwise)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR,
                        format="%(name)s: %(levelname)s: %(message)s", stream=sys.stderr)
    settings = Settings(trials=args.trials, keep_alive=args.keep_alive, ping_ms=args.ping_timeout_ms,
                        refuse_secs=args.refuse_secs, faults=tuple(dict.fromkeys(args.faults)), seed=args.seed)
    return run_to_exit_status(
        lambda: asyncio.run(_amain(settings)),
        lambda report: finish(report, as_json=args.json, table=_print_table),
        errors=(BenchError, BrokerUnavailable),
        stop=asyncio.CancelledError,
        stopped_note="everything it started was shut down",
    )


if __name__ == "__main__":
    sys.exit(main())
