"""Ingest benchmark: realistic agent traces over OTLP/HTTP, spans per second committed.

Generates agent traces (an ``invoke_agent`` root, LLM spans with ``gen_ai.*`` attributes and
JSON prompts of a few hundred bytes, tool and retriever spans, nesting, ~5% error spans
with an exception event) with the real OTLP protobuf classes, all before timing. Then
several client threads, each with one keep-alive HTTP connection (as OTLP exporters keep
theirs), post the batches to ``/v1/traces``. A 200 means committed (the server
group-commits before it answers), so spans/s = spans acknowledged / wall time from the
first post to the last 200. Afterwards ``GET /api/v1/stats`` must show every span stored.

Run from the repository root with the project's virtualenv::

    python bench/ingest.py                          # own server, fresh SQLite file
    python bench/ingest.py --db postgres            # own server, fresh PostgreSQL database
    python bench/ingest.py --url http://127.0.0.1:4321   # a server already running
    python bench/ingest.py --auth                   # own server with MSGTRACE_AUTH=on and a key
    python bench/ingest.py --spans 100000 --batch 500 --clients 4 --repeat 3 --json

Without ``--url`` the script starts ``msgtrace start`` (the console script next to this
Python) on a free port, on a temporary SQLite file or on a PostgreSQL database it creates
(and drops afterwards) through ``--pg-admin-url``, and stops the server at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from traces import demo
from traces.demo import STATUS_ERROR, SpanData, TraceGenerator

REPO_ROOT = Path(__file__).resolve().parent.parent
OTLP_PATH = "/v1/traces"

# --- realistic agent traces -------------------------------------------------------------------

# The generator lives in the package (traces/demo.py), which `msgtrace demo` streams too.
# The names below stay here for the scripts that load this file (dataset.py, pages.py, ...).
KIND_CLIENT, KIND_INTERNAL = demo.KIND_CLIENT, demo.KIND_INTERNAL
_AGENTS, _MODELS, _TOOLS = demo.AGENTS, demo.MODELS, demo.TOOLS
_SERVICES, _EXCEPTIONS = demo.SERVICES, demo.EXCEPTIONS
SCOPE = ("msgtrace.bench", "1.0")


def encode_protobuf(service: str, spans: list[SpanData]) -> bytes:
    return demo.encode_protobuf(service, spans, scope=SCOPE)


def encode_json(service: str, spans: list[SpanData]) -> bytes:
    return demo.encode_json(service, spans, scope=SCOPE)


@dataclass
class Batch:
    body: bytes
    spans: int
    errors: int


def generate(total_spans: int, batch_size: int, encoding: str, rng: random.Random) -> list[Batch]:
    """``total_spans`` spans in batches of ``batch_size``, one service per batch.

    A trace may straddle two batches of its service, as with a real BatchSpanProcessor.
    """
    generator = TraceGenerator(rng)
    encode = encode_json if encoding == "json" else encode_protobuf
    carry: dict[str, list[SpanData]] = {service: [] for service in _SERVICES}
    batches = []
    remaining = total_spans
    while remaining > 0:
        size = min(batch_size, remaining)
        service = rng.choice(_SERVICES)
        spans = carry[service]
        while len(spans) < size:
            spans.extend(generator.trace(service))
        batch, carry[service] = spans[:size], spans[size:]
        errors = sum(1 for s in batch if s.status_code == STATUS_ERROR)
        batches.append(Batch(encode(service, batch), size, errors))
        remaining -= size
    return batches


# --- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(
    host: str, port: int, path: str, timeout: float = 30, api_key: str = ""
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {}
    finally:
        conn.close()


def launch_server(
    env: dict[str, str], port: int, log_path: Path, timeout: float
) -> subprocess.Popen:
    """``msgtrace start`` (the console script beside this Python) on ``port``, once healthy."""
    script = Path(sys.executable).parent / "msgtrace"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(script), "start", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"msgtrace start exited {process.returncode}: see {log_path}")
        with contextlib.suppress(OSError):
            if _get_json("127.0.0.1", port, "/health", timeout=2)[0] == 200:
                return process
        time.sleep(0.1)
    stop_server(process, timeout=15)
    raise RuntimeError(f"msgtrace did not answer /health within {timeout:.0f} s: see {log_path}")


def stop_server(process: subprocess.Popen | None, timeout: float) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class OwnServer:
    """``msgtrace start`` on a free port and a fresh database, stopped and cleaned up after."""

    def __init__(self, db: str, pg_admin_url: str, auth: bool = False) -> None:
        self.db = db
        self.pg_admin_url = pg_admin_url
        self.auth = auth
        self.api_key = ""
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="msgtrace-bench-"))
        self.log_path = self.directory / "server.log"
        self.pg_database: str | None = None
        self.process: subprocess.Popen | None = None

    def _pg(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
        if self.db == "postgres":
            self.pg_database = f"msgtrace_bench_{uuid.uuid4().hex[:10]}"
            self._pg(f'CREATE DATABASE "{self.pg_database}"')
            base = self.pg_admin_url.rsplit("/", 1)[0]
            env["MSGTRACE_DATABASE_URL"] = f"{base}/{self.pg_database}"
        else:
            env["MSGTRACE_DB_PATH"] = str(self.directory / "bench.db")
        if self.auth:
            # As exposed: every request needs a key; the server refuses to start without one.
            env["MSGTRACE_AUTH"] = "on"
            script = str(Path(sys.executable).parent / "msgtrace")
            subprocess.run([script, "migrate", "-v", "0"], env=env, check=True, cwd=REPO_ROOT)
            made = subprocess.run(
                [script, "create_api_key", "bench"], env=env, check=True, cwd=REPO_ROOT,
                capture_output=True, text=True,
            )  # fmt: skip
            self.api_key = made.stdout.strip()
        self.process = launch_server(env, self.port, self.log_path, timeout=90)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        stop_server(self.process, timeout=15)
        if self.pg_database:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
        shutil.rmtree(self.directory, ignore_errors=True)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick


# --- the clients ------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, 200s only
    acknowledged: int = 0
    rejected: int = 0
    statuses: dict[str | int, int] = field(default_factory=dict)
    last_ok: float = 0.0


class Client:
    """One keep-alive connection, like one OTLP exporter."""

    def __init__(
        self, host: str, port: int, path: str, content_type: str, api_key: str = ""
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.headers = {"Content-Type": content_type, "User-Agent": "msgtrace-bench"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.json = content_type == "application/json"
        self.conn: http.client.HTTPConnection | None = None

    def post(self, batch: Batch, outcome: Outcome, retries: int = 5) -> None:
        for _ in range(retries + 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
            started = time.perf_counter()
            try:
                self.conn.request("POST", self.path, batch.body, self.headers)
                response = self.conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.conn = None
                key = type(exc).__name__
                outcome.statuses[key] = outcome.statuses.get(key, 0) + 1
                time.sleep(0.5)
                continue
            finished = time.perf_counter()
            status = response.status
            outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
            if status == 200:
                rejected = self._rejected(data)
                outcome.latencies.append(finished - started)
                outcome.acknowledged += batch.spans - rejected
                outcome.rejected += rejected
                outcome.last_ok = max(outcome.last_ok, finished)
                return
            if status in (429, 502, 503, 504):  # retryable, as for an OTLP exporter
                retry_after = response.getheader("Retry-After") or "1"
                time.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 5.0))
                continue
            return  # final: the exporter would drop the batch

    def _rejected(self, data: bytes) -> int:
        if not data:
            return 0
        if self.json:
            partial = json.loads(data).get("partialSuccess") or {}
            return int(partial.get("rejectedSpans") or 0)
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(data)
        return response.partial_success.rejected_spans

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def run_phase(clients: list[Client], batches: list[Batch]) -> tuple[Outcome, float, float]:
    """Post ``batches`` from all clients at once; return merged outcome, start, last 200."""
    counter = itertools.count()
    outcomes = [Outcome() for _ in clients]
    gate = threading.Barrier(len(clients) + 1)

    def work(client: Client, outcome: Outcome) -> None:
        gate.wait()
        while (i := next(counter)) < len(batches):
            client.post(batches[i], outcome)

    threads = [
        threading.Thread(target=work, args=(client, outcome), daemon=True)
        for client, outcome in zip(clients, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    merged = Outcome()
    for outcome in outcomes:
        merged.latencies.extend(outcome.latencies)
        merged.acknowledged += outcome.acknowledged
        merged.rejected += outcome.rejected
        merged.last_ok = max(merged.last_ok, outcome.last_ok)
        for status, count in outcome.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged, started, merged.last_ok or time.perf_counter()


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    line: str
    spans_per_s: float
    p50_ms: float
    p99_ms: float
    ok: bool


def run_once(args: argparse.Namespace, label: str) -> Result:
    rng = random.Random(args.seed)  # None: fresh ids every run
    encoding = "json" if args.json else "protobuf"
    generation_started = time.perf_counter()
    warmup = generate(args.warmup * args.batch, args.batch, encoding, rng)
    batches = generate(args.spans, args.batch, encoding, rng)
    body_bytes = sum(len(b.body) for b in batches)
    error_spans = sum(b.errors for b in batches)
    print(
        f"generated {len(batches)} {encoding} requests, {args.spans:,} spans, "
        f"{body_bytes / args.spans:,.0f} B/span on the wire, {error_spans / args.spans:.1%} "
        f"error spans, in {time.perf_counter() - generation_started:.1f} s "
        f"(+{len(warmup)} warm-up requests)",
        flush=True,
    )

    server = None if args.url else OwnServer(args.db, args.pg_admin_url, auth=args.auth)
    api_key = args.api_key
    try:
        if server is not None:
            server.start()
            url = server.url
            api_key = server.api_key
        else:
            url = args.url
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        status, before = _get_json(host, port, "/api/v1/stats", api_key=api_key)
        if status != 200:
            raise RuntimeError(f"GET /api/v1/stats answered {status}")
        content_type = "application/json" if args.json else "application/x-protobuf"
        clients = [
            Client(host, port, parts.path.rstrip("/") + OTLP_PATH, content_type, api_key)
            for _ in range(args.clients)
        ]
        warm, _, _ = run_phase(clients, warmup) if warmup else (Outcome(), 0.0, 0.0)

        pid = server.process.pid if server and server.process else None
        server_cpu_before = _cpu_seconds(pid) if pid else None
        machine_before = _machine_busy()
        client_cpu_before = time.process_time()
        outcome, started, last_ok = run_phase(clients, batches)
        client_cpu = time.process_time() - client_cpu_before
        machine_after = _machine_busy()
        server_cpu_after = _cpu_seconds(pid) if pid else None
        wall = last_ok - started
        for client in clients:
            client.close()

        # The writer commits before answering, so the stats are final once all 200s are in.
        status, after = _get_json(host, port, "/api/v1/stats", timeout=120, api_key=api_key)
        stored = after.get("total_spans", 0) - before.get("total_spans", 0)
        expected = outcome.acknowledged + warm.acknowledged
    finally:
        if server is not None:
            if args.keep_server:
                print(f"server left running at {server.url} (pid {server.process.pid})")
            else:
                log = server.log_tail()
                server.stop()
                if args.verbose and log:
                    print(log)

    rate = outcome.acknowledged / wall if wall > 0 else 0.0
    p50 = percentile(outcome.latencies, 0.50) * 1000
    p99 = percentile(outcome.latencies, 0.99) * 1000
    non_ok = {k: v for k, v in outcome.statuses.items() if k != 200}
    non_ok_warm = {k: v for k, v in warm.statuses.items() if k != 200}
    cpu = [f"client CPU {client_cpu:.2f} s ({client_cpu / wall:.0%} of a core)"]
    server_cpu = 0.0
    if server_cpu_before is not None and server_cpu_after is not None:
        server_cpu = server_cpu_after - server_cpu_before
        cpu.append(f"server CPU {server_cpu:.2f} s ({server_cpu / wall:.0%} of a core)")
    if machine_before and machine_after:
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        # Everything else: PostgreSQL's backends, or whatever else shares the machine.
        rest = max(busy - client_cpu - server_cpu, 0.0)
        cpu.append(
            f"machine {busy / total:.0%} busy over {os.cpu_count()} cores "
            f"(rest of machine {rest / wall:.0%} of a core)"
        )
    print(
        f"  {len(outcome.latencies)} requests OK in {wall:.2f} s, "
        f"{body_bytes / wall / 1e6:.1f} MB/s; non-200: {non_ok or 'none'}"
        + (f"; warm-up non-200: {non_ok_warm}" if non_ok_warm else "")
        + (f"; rejected spans: {outcome.rejected}" if outcome.rejected else "")
    )
    print(
        f"  latency ms: min {min(outcome.latencies, default=0) * 1000:.1f}  "
        f"mean {statistics.fmean(outcome.latencies or [0]) * 1000:.1f}  "
        f"max {max(outcome.latencies, default=0) * 1000:.1f};  " + ";  ".join(cpu)
    )
    ok = stored == expected and outcome.acknowledged == args.spans and not non_ok
    # The warm-up's spans are stored too: what the timed run added is the rest.
    timed_stored = stored - warm.acknowledged
    verified = (
        f"verified {timed_stored:,} stored"
        if stored == expected
        else f"MISMATCH: total_spans grew by {stored:,}, expected {expected:,} incl. warm-up"
    )
    line = (
        f"{label}  {encoding}  {args.batch}-span batches  {args.clients} clients: "
        f"{rate:,.0f} spans/s committed  p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
        f"({outcome.acknowledged:,} spans, {verified})"
    )
    print(line, flush=True)
    return Result(line, rate, p50, p99, ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", help="a running server, e.g. http://127.0.0.1:4321")
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        help="database of the server this script starts (default sqlite); a label with --url",
    )
    parser.add_argument(
        "--pg-admin-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="where to create (and drop) the --db postgres database",
    )
    parser.add_argument("--spans", type=int, default=100_000, help="spans in the timed run")
    parser.add_argument("--batch", type=int, default=500, help="spans per request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--warmup", type=int, default=8, help="untimed requests first")
    parser.add_argument("--json", action="store_true", help="post OTLP/JSON, not protobuf")
    parser.add_argument("--repeat", type=int, default=1, help="runs (each on a fresh server)")
    parser.add_argument("--seed", type=int, help="fixed random seed (same trace ids!)")
    parser.add_argument("--keep-server", action="store_true", help="leave own server running")
    parser.add_argument(
        "--auth", action="store_true", help="own server with MSGTRACE_AUTH=on, sending a key"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MSGTRACE_API_KEY", ""),
        help="the key to send to --url (default $MSGTRACE_API_KEY)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the server log")
    args = parser.parse_args(argv)
    if args.spans < 1 or args.batch < 1 or args.clients < 1 or args.warmup < 0:
        parser.error("--spans, --batch and --clients must be positive, --warmup not negative")
    if args.seed is not None and args.url and args.repeat > 1:
        parser.error("--seed with --repeat against one --url re-sends the same spans")
    label = args.db or ("server" if args.url else "sqlite")
    args.db = args.db or "sqlite"

    results = [run_once(args, label) for _ in range(args.repeat)]
    if len(results) > 1:
        rates = [r.spans_per_s for r in results]
        print(
            f"{label} over {len(results)} runs: median {statistics.median(rates):,.0f} "
            f"spans/s (min {min(rates):,.0f}, max {max(rates):,.0f}); median p50 "
            f"{statistics.median(r.p50_ms for r in results):.1f} ms, p99 "
            f"{statistics.median(r.p99_ms for r in results):.1f} ms"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
