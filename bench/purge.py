"""Purge benchmark: how long ``msgtrace purge`` holds up ingest while it deletes.

On a copy of a ``bench/dataset.py`` database (traces spread over the last 30 days), a
real ``msgtrace start`` takes a steady OTLP load: ``--clients`` keep-alive connections,
each posting a ``--batch``-span protobuf request every ``--interval`` seconds, each
request timed from send to the 200 (which means committed). First the load runs alone for
``--baseline`` seconds; then, with the load still running, ``msgtrace purge --older-than
15d --yes`` deletes about half the traces and gives the space back (SQLite) from a
separate process, as an operator would run it. Printed: request latency (p50, p99, max)
without and during the purge, the longest gap between two 200s, and the purge's own
figures (traces, spans, time, batches, longest batch transaction, longest vacuum step).

``--one-transaction`` then does the same delete the naive way, in a single transaction
(``traces_delete`` on every selected id at once), under the same load on a fresh copy:
what the batches buy.

Run from the repository root with the project's virtualenv::

    python bench/purge.py                     # SQLite, then PostgreSQL
    python bench/purge.py --db sqlite --one-transaction
    python bench/purge.py --spans 1000000     # the shared 1M dataset (copied: ~2 GB)

The source dataset is never modified: each run works on a copy (SQLite: a file copy;
PostgreSQL: ``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# This script's folder comes first on sys.path, so its siblings import by name.
import dataset

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MSGTRACE = str(Path(sys.executable).parent / "msgtrace")

NAIVE_DELETE = """
from datetime import timedelta
import time
from django.utils import timezone
from traces.models import Trace
from traces.services import traces_delete
ids = list(Trace.objects.started_between(until=timezone.now() - timedelta(days={days}))
           .values_list("pk", flat=True))
began = time.perf_counter()
traces_delete(trace_ids=ids)
print(f"one transaction: {{len(ids)}} traces in {{(time.perf_counter() - began) * 1000:.0f}} ms")
"""


@dataclass
class Load:
    """Latencies (s) of the 200s, by when each request started; the other outcomes."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    completions: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def between(self, start: float, end: float) -> list[float]:
        return [latency for sent, latency in self.samples if start <= sent < end]

    def longest_gap(self, start: float, end: float) -> float:
        done = sorted(t for t in self.completions if start <= t < end)
        return max((b - a for a, b in zip(done, done[1:], strict=False)), default=0.0)


def make_batches(count: int, size: int, seed: int) -> list[bytes]:
    ingest = dataset.load_ingest()
    rng = random.Random(seed)
    return [b.body for b in ingest.generate(count * size, size, "protobuf", rng)]


def run_load(port: int, batches: list[bytes], clients: int, interval: float, stop, load):
    """Each client posts a batch every ``interval`` s (or as soon as the last one returns)."""
    cursor = iter(range(10**9))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/x-protobuf"}
        next_at = time.perf_counter() + random.random() * interval
        while not stop.is_set():
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += interval
            # New spans while the prepared batches last; then the same ones again (upserts).
            body = batches[next(cursor) % len(batches)]
            sent = time.perf_counter()
            try:
                conn.request("POST", "/v1/traces", body, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status = type(exc).__name__
            done = time.perf_counter()
            with load.lock:
                if status == 200:
                    load.samples.append((sent, done - sent))
                    load.completions.append(done)
                else:
                    load.failures[str(status)] = load.failures.get(str(status), 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def describe(latencies: list[float]) -> str:
    if not latencies:
        return "no requests"
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{len(ms):>5} requests  p50 {statistics.median(ms):6.1f}  p99 {p99:7.1f}  "
        f"max {ms[-1]:7.1f} ms"
    )


class Copy:
    """A throw-away copy of the dataset, and the environment that points msgtrace at it."""

    def __init__(self, source: dataset.Target) -> None:
        self.source = source
        self.directory = Path(tempfile.mkdtemp(prefix="msgtrace-purge-"))
        name = f"msgtrace_purge_{uuid.uuid4().hex[:8]}"
        self.target = dataset.Target(source.db, name, self.directory, source.pg_admin_url)
        if source.db == "postgres":
            dataset._pg(source.pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{source.name}"')
        else:
            shutil.copyfile(source.sqlite_path, self.target.sqlite_path)

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
        return {**base, **self.target.env()}

    def drop(self) -> None:
        if self.source.db == "postgres":
            dataset._pg(
                self.source.pg_admin_url,
                f'DROP DATABASE IF EXISTS "{self.target.name}" WITH (FORCE)',
            )
        shutil.rmtree(self.directory, ignore_errors=True)


def under_load(args, source, batches, command: list[str]):
    """Run ``command`` on a fresh copy while the load runs; (load, windows, process)."""
    copy = Copy(source)
    server = dataset.Server(copy.target)
    try:
        server.start()
        load, stop = Load(), threading.Event()
        threads = run_load(server.port, batches, args.clients, args.interval, stop, load)
        time.sleep(1.0)  # connections open, first requests through
        baseline_start = time.perf_counter()
        time.sleep(args.baseline)
        run_start = time.perf_counter()
        process = subprocess.run(
            command, env=copy.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600
        )
        run_end = time.perf_counter()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(timeout=130)
    finally:
        server.stop()
        copy.drop()
    return load, (baseline_start, run_start, run_end), process


def report(label: str, what: str, load: Load, windows) -> float:
    baseline_start, run_start, run_end = windows
    without, during = load.between(baseline_start, run_start), load.between(run_start, run_end)
    gap_without = load.longest_gap(baseline_start, run_start) * 1000
    gap_during = load.longest_gap(run_start, run_end) * 1000
    print(f"  ingest without {what}: {describe(without)}; longest gap {gap_without:.0f} ms")
    print(f"  ingest during {what}:  {describe(during)}; longest gap {gap_during:.0f} ms")
    if load.failures:
        print(f"  failed requests: {load.failures}")
    return max(during, default=0) * 1000


def run_database(args: argparse.Namespace) -> int:
    dataset.ensure(args.db, args.spans, directory=args.dir, pg_admin_url=args.pg_admin_url)
    source = dataset.target(args.db, args.spans, directory=args.dir, pg_admin_url=args.pg_admin_url)
    label = "SQLite" if args.db == "sqlite" else "PostgreSQL"
    per_second = args.clients * args.batch / args.interval
    print(
        f"\n{label}: {args.clients} clients x {args.batch}-span requests every "
        f"{args.interval * 1000:.0f} ms ({per_second:,.0f} spans/s offered); "
        f"purge --older-than {args.older_than_days}d on a copy of {source.describe()}",
        flush=True,
    )
    needed = int((args.baseline + args.budget) / args.interval) * args.clients
    began = time.perf_counter()
    batches = make_batches(min(needed, args.max_batches), args.batch, seed=7)
    print(f"  {len(batches)} requests prepared in {time.perf_counter() - began:.1f} s")

    command = [MSGTRACE, "purge", "--older-than", f"{args.older_than_days}d", "--yes"]
    load, windows, purge = under_load(args, source, batches, command)
    if purge.returncode != 0:
        print(purge.stdout + purge.stderr)
        return 1
    print("  msgtrace purge said:")
    for line in purge.stdout.strip().splitlines():
        if not line.startswith("  "):  # not the progress lines
            print(f"    {line}")
    worst = report(label, "purge", load, windows)
    batch = re.search(
        r"(\d+) ms \(median\), (\d+) ms \(p99\); longest batch (\d+) ms", purge.stdout
    )
    step = re.search(r"longest step (\d+) ms", purge.stdout)
    baseline_worst = max(load.between(*windows[:2]), default=0) * 1000
    held = "?"
    if batch:
        held = f"{batch.group(1)} ms median, {batch.group(2)} ms p99, {batch.group(3)} ms longest"
    print(
        f"{label}: purge batch transactions {held}"
        + (f", longest vacuum step {step.group(1)} ms" if step else "")
        + f"; ingest max latency {baseline_worst:.0f} ms without, {worst:.0f} ms during",
        flush=True,
    )
    status = 1 if load.failures else 0

    if args.one_transaction:
        code = NAIVE_DELETE.format(days=args.older_than_days)
        load, windows, naive = under_load(args, source, batches, [MSGTRACE, "shell", "-c", code])
        print(f"  {naive.stdout.strip() or naive.stderr[-500:]}")
        worst = report(label, "one-transaction delete", load, windows)
        print(f"{label}: one transaction instead: ingest max latency {worst:.0f} ms", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--spans", type=int, default=200_000, help="dataset size")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msgtrace-bench"))
    parser.add_argument("--pg-admin-url", default=dataset.DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="spans per request")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between posts")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of load alone")
    parser.add_argument("--older-than-days", type=int, default=15)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of prepared load")
    parser.add_argument("--max-batches", type=int, default=2000)
    parser.add_argument("--one-transaction", action="store_true", help="time the naive delete")
    args = parser.parse_args(argv)
    if args.db != "both":
        return run_database(args)
    return dataset.run_per_database(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
