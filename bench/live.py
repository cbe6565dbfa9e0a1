"""Live-update benchmark: what WebSocket clients cost ingest, and how soon they hear of a trace.

Runs ``bench/ingest.py``'s load (its agent-trace generator; 4 keep-alive clients posting
500-span OTLP/protobuf batches) for a fixed number of spans against a fresh ``msgtrace
start`` on SQLite, once with no client on ``/api/v1/ws`` and once with 20 (in a reader
process of their own, as browsers would be, each reading every event as it comes). Both
runs post the same batches, each on a fresh server and database.

Throughput is spans acknowledged per second, as in ``bench/ingest.py``; the drop is the
20-client run against the 0-client run (the median of each with ``--repeat``).

Delay: the server does not expose commit times, so it is measured from the client side.
Every 200 ms during the load a probe posts one span of a brand-new trace id; its HTTP 200
comes after the commit. The delay is from that 200 to the moment each WebSocket client
knows of the trace: its ``trace_created`` event or, when a flush carried more traces than
one update holds, the first ``resync`` after the 200 (a client re-reads then, and the
commit is before it). Reported as p50/p95 over every (probe, client) pair, with how many
were told each way. At full speed nearly every flush changes more than
``MAX_TRACES_PER_FLUSH`` traces, so clients are told by ``resync``; ``--rate`` caps the
load so that flushes carry the traces themselves.

Targets: throughput drop < 10%, p95 delay < 250 ms. Run from the repository root with the
project's virtualenv (under a minute on 2 cores)::

    python bench/live.py
    python bench/live.py --repeat 3                  # medians of 3 runs each
    python bench/live.py --spans 50000 --rate 5000   # the trace_created path under load
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import multiprocessing
import os
import random
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

# This script's folder comes first on sys.path, so its siblings import by name; only
# bench/ingest.py, named like the project's ingest app, is loaded by path (dataset.py).
import dataset

WS_PATH = "/api/v1/ws"
PROBE_SERVICE = "live-probe"
TAIL_SECONDS = 2.0  # after the load, how long clients may still hear of the last probes
MAX_DROP = 0.10
MAX_P95_MS = 250.0


# --- WebSocket readers, in their own process (as browsers would be) ---------------------------


@dataclass
class Heard:
    """What one WebSocket client received; times are ``time.monotonic()`` (system-wide)."""

    created: dict[str, float] = field(default_factory=dict)  # trace id -> first event
    resyncs: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


# One process stands in for 20 browsers that would each have a CPU of their own: decoding
# every event in full here would make the measurement its own bottleneck. So the type and
# trace id are picked out with these (json.loads when they do not match).
_TYPE = re.compile(r'^\{"type": "(\w+)"')
_TRACE_ID = re.compile(r'"trace_id": "([0-9a-f]{32})"')


def read_events(url: str, clients: int, ready, stop, results) -> None:
    """Process entry point: connect ``clients`` sockets, read until ``stop``, send back."""
    heard = asyncio.run(_read_events(url, clients, ready, stop))
    results.send((heard, time.process_time()))


async def _read_events(url: str, clients: int, ready, stop) -> list[Heard]:
    from websockets.asyncio.client import connect

    sockets = [await connect(url, max_size=None, open_timeout=30) for _ in range(clients)]
    for ws in sockets:
        assert json.loads(await ws.recv())["type"] == "connected"
    heard = [Heard() for _ in sockets]

    async def read(ws, into: Heard) -> None:
        async for message in ws:
            now = time.monotonic()
            if match := _TYPE.match(message):
                kind = match[1]
                trace_id = (m := _TRACE_ID.search(message, 0, 200)) and m[1]
            else:
                event = json.loads(message)
                kind, trace_id = event["type"], (event.get("data") or {}).get("trace_id")
            into.counts[kind] = into.counts.get(kind, 0) + 1
            if kind == "trace_created":
                into.created.setdefault(trace_id, now)
            elif kind == "resync":
                into.resyncs.append(now)

    tasks = [asyncio.create_task(read(ws, h)) for ws, h in zip(sockets, heard, strict=True)]
    ready.set()
    await asyncio.to_thread(stop.wait)
    for task in tasks:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return heard


class Readers:
    """``clients`` WebSocket clients in a child process, connected before the load starts."""

    def __init__(self, url: str, clients: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.ready, self.stop = context.Event(), context.Event()
        self.receive, send = context.Pipe(duplex=False)
        self.process = context.Process(
            target=read_events, args=(url, clients, self.ready, self.stop, send), daemon=True
        )
        self.process.start()
        if not self.ready.wait(timeout=60):
            self.process.kill()
            raise RuntimeError("the WebSocket clients did not connect within 60 s")

    def finish(self) -> tuple[list[Heard], float]:
        """What each client heard, and the CPU seconds the reader process used."""
        self.stop.set()
        if not self.receive.poll(timeout=60):
            self.process.kill()
            raise RuntimeError("the WebSocket reader process did not report back")
        heard, cpu = self.receive.recv()
        self.process.join(timeout=10)
        return heard, cpu


# --- probes -----------------------------------------------------------------------------------


def probe_loop(ingest, host: str, port: int, interval: float, stop: threading.Event, out):
    """Every ``interval`` s a one-span batch of a new trace; records (trace id, time of 200)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf", "User-Agent": "msgtrace-bench-probe"}
    due = time.monotonic()
    try:
        while not stop.is_set():
            trace_id = os.urandom(16).hex()
            now_ns = time.time_ns()
            span = ingest.SpanData(
                bytes.fromhex(trace_id), os.urandom(8), b"", "probe", ingest.KIND_INTERNAL,
                now_ns - 5_000_000, now_ns, {"probe": True},
            )  # fmt: skip
            body = ingest.encode_protobuf(PROBE_SERVICE, [span])
            conn.request("POST", ingest.OTLP_PATH, body, headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                out.append((trace_id, time.monotonic()))
            due += interval
            stop.wait(max(0.0, due - time.monotonic()))
    finally:
        conn.close()


def delays(probes: list[tuple[str, float]], heard: list[Heard]) -> tuple[list[float], dict]:
    """Per (probe, client): seconds from the 200 to the first event that tells of it."""
    out: list[float] = []
    how = {"trace_created": 0, "resync": 0, "missed": 0}
    for trace_id, acked in probes:
        for client in heard:
            created = client.created.get(trace_id)
            resync = next((t for t in client.resyncs if t >= acked), None)
            candidates = [t for t in (created, resync) if t is not None]
            if not candidates:
                how["missed"] += 1
                continue
            first = min(candidates)
            how["trace_created" if first == created else "resync"] += 1
            out.append(first - acked)
    return out, how


def paced_phase(ingest, clients, batches, rate: float):
    """``ingest.run_phase``, but batch ``i`` is not sent before ``i * batch / rate`` s."""
    if not rate:
        return ingest.run_phase(clients, batches)
    counter = itertools.count()
    outcomes = [ingest.Outcome() for _ in clients]
    started = time.perf_counter()

    def work(client, outcome) -> None:
        while (i := next(counter)) < len(batches):
            time.sleep(max(0.0, started + i * batches[0].spans / rate - time.perf_counter()))
            client.post(batches[i], outcome)

    threads = [
        threading.Thread(target=work, args=pair, daemon=True)
        for pair in zip(clients, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    merged = ingest.Outcome()
    for outcome in outcomes:
        merged.acknowledged += outcome.acknowledged
        merged.last_ok = max(merged.last_ok, outcome.last_ok)
        for status, count in outcome.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged, started, merged.last_ok or time.perf_counter()


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    ws_clients: int
    spans_per_s: float
    delays_ms: list[float]
    how: dict
    events: dict
    ok: bool


def run_once(ingest, warmup, batches, ws_clients: int, args) -> Run:
    server = ingest.OwnServer("sqlite", "")
    readers = None
    probes: list[tuple[str, float]] = []
    try:
        server.start()
        host, port = "127.0.0.1", server.port
        clients = [
            ingest.Client(host, port, ingest.OTLP_PATH, "application/x-protobuf")
            for _ in range(args.load_clients)
        ]
        warm, _, _ = ingest.run_phase(clients, warmup)
        if ws_clients:
            readers = Readers(f"ws://{host}:{port}{WS_PATH}", ws_clients)
        stop = threading.Event()
        prober = threading.Thread(
            target=probe_loop,
            args=(ingest, host, port, args.probe_every, stop, probes),
            daemon=True,
        )
        cpu_before = ingest._cpu_seconds(server.process.pid)
        prober.start()
        outcome, started, last_ok = paced_phase(ingest, clients, batches, args.rate)
        stop.set()
        prober.join()
        cpu = (ingest._cpu_seconds(server.process.pid) or 0) - (cpu_before or 0)
        for client in clients:
            client.close()
        if readers is not None:
            time.sleep(TAIL_SECONDS)  # the last probes' events are still on their way
            heard, reader_cpu = readers.finish()
            readers = None
        else:
            heard, reader_cpu = [], 0.0
        status, stats = ingest._get_json(host, port, "/api/v1/stats", timeout=120)
    finally:
        if readers is not None:
            readers.process.kill()
        server.stop()

    wall = last_ok - started
    rate = outcome.acknowledged / wall if wall > 0 else 0.0
    expected = warm.acknowledged + outcome.acknowledged + len(probes)
    stored = stats.get("total_spans", 0) if status == 200 else -1
    non_ok = {k: v for k, v in outcome.statuses.items() if k != 200}
    found, how = delays(probes, heard)
    events: dict[str, int] = {}
    for client in heard:
        for kind, n in client.counts.items():
            events[kind] = events.get(kind, 0) + n
    print(
        f"  {ws_clients:>2} WebSocket clients: {rate:,.0f} spans/s committed "
        f"({outcome.acknowledged:,} spans in {wall:.2f} s, server CPU {cpu / wall:.0%} of a "
        f"core; {len(probes)} probes; stored {stored:,} of {expected:,}; "
        f"non-200: {non_ok or 'none'})",
        flush=True,
    )
    if heard:
        per_client = {k: round(v / len(heard), 1) for k, v in sorted(events.items())}
        print(
            f"     events per client: {per_client}; reader process CPU "
            f"{reader_cpu / wall:.0%} of a core",
            flush=True,
        )
    ok = stored == expected and not non_ok and outcome.acknowledged == args.spans
    return Run(ws_clients, rate, [d * 1000 for d in found], how, events, ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans in each timed run")
    parser.add_argument("--batch", type=int, default=500, help="spans per request")
    parser.add_argument("--load-clients", type=int, default=4, help="posting connections")
    parser.add_argument("--clients", type=int, default=20, help="WebSocket clients")
    parser.add_argument("--probe-every", type=float, default=0.2, help="seconds between probes")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="cap the load at this many spans/s (default: as fast as it goes); below about "
        "8 spans x 800 traces/s, flushes carry trace events rather than resync",
    )
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs (medians)")
    args = parser.parse_args(argv)
    if min(args.spans, args.batch, args.load_clients, args.clients, args.repeat) < 1:
        parser.error("--spans, --batch, --load-clients, --clients and --repeat must be positive")

    ingest = dataset.load_ingest()
    rng = random.Random()
    started = time.perf_counter()
    warmup = ingest.generate(8 * args.batch, args.batch, "protobuf", rng)
    batches = ingest.generate(args.spans, args.batch, "protobuf", rng)
    print(
        f"generated {len(batches)} protobuf requests ({args.spans:,} spans) in "
        f"{time.perf_counter() - started:.1f} s; {args.load_clients} posting clients, "
        f"a probe every {args.probe_every * 1000:.0f} ms"
        + (f", load capped at {args.rate:,.0f} spans/s" if args.rate else ""),
        flush=True,
    )
    without, with_clients = [], []
    for _ in range(args.repeat):
        # Same batches each run, each on a fresh server and database.
        without.append(run_once(ingest, warmup, batches, 0, args))
        with_clients.append(run_once(ingest, warmup, batches, args.clients, args))

    base = statistics.median(r.spans_per_s for r in without)
    loaded = statistics.median(r.spans_per_s for r in with_clients)
    drop = (base - loaded) / base if base else float("nan")
    all_delays = [d for r in with_clients for d in r.delays_ms]
    how: dict[str, int] = {}
    for r in with_clients:
        for kind, n in r.how.items():
            how[kind] = how.get(kind, 0) + n
    p50 = ingest.percentile(all_delays, 0.50)
    p95 = ingest.percentile(all_delays, 0.95)
    runs_ok = all(r.ok for r in without + with_clients)
    throughput_ok = drop < MAX_DROP
    delay_ok = p95 < MAX_P95_MS and how["missed"] == 0
    print(
        f"throughput: {base:,.0f} spans/s with 0 clients, {loaded:,.0f} with {args.clients}: "
        f"drop {drop:.1%} (target < {MAX_DROP:.0%}) {'PASS' if throughput_ok else 'FAIL'}"
    )
    print(
        f"delay from 200 to client: p50 {p50:.0f} ms  p95 {p95:.0f} ms  max "
        f"{max(all_delays, default=float('nan')):.0f} ms over {len(all_delays)} "
        f"(probe, client) pairs; told by trace_created {how['trace_created']}, by resync "
        f"{how['resync']}, missed {how['missed']} (target p95 < {MAX_P95_MS:.0f} ms) "
        f"{'PASS' if delay_ok else 'FAIL'}"
    )
    if not runs_ok:
        print("FAIL: a run had non-200 answers or did not store every span")
    passed = runs_ok and throughput_ok and delay_ok
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
