"""Analytics benchmark: server time of the whole ``/analytics`` page per window.

On ``bench/dataset.py``'s database (100,000 traces / 1,000,000 spans over the last 30
days, built once through the real write path and reused), the page is requested
in-process through Django's test client, exactly as a browser's GET runs it: parameters,
the report (series, totals, the four breakdowns with their percentiles), the charts and
the template. The page is one request (no fragment loads itself afterwards), so its time
is the page's server time. Each window gets one warm-up and ``--runs`` timed requests;
the table shows the median and the best, the median CPU time of this process (on SQLite
that is the whole of the work, which other load on the machine does not inflate as it
does the wall time), and the time of the report alone split into its trace part (series,
services, workflows) and span part (models, span names). Before the table, every hourly
rollup of the last 30 days is dropped and built again, timed: what the first report over
a database's history costs; the timed pages then read the rollups as they would in use.

Target: the 24h and 30d pages under 500 ms (median) on SQLite; PostgreSQL is quoted.
``--explain`` prints the query plans of the report's queries (EXPLAIN QUERY PLAN /
EXPLAIN ANALYZE) for the 30d window.

Run from the repository root with the project's virtualenv::

    python bench/analytics.py                    # SQLite, then PostgreSQL
    python bench/analytics.py --db sqlite --runs 9 --explain
    python bench/analytics.py --q 'service:support-agent'   # the page with a query
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

# This script's folder comes first on sys.path, so its siblings import by name.
import dataset

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TARGET_MS = 500.0
WINDOWS = ("1h", "24h", "7d", "30d")
TARGETED = ("24h", "30d")


def _ms(seconds: float) -> float:
    return seconds * 1000


def time_page(client, params: dict, runs: int) -> tuple[list[float], list[float], int]:
    """Wall and CPU times (s) of ``runs`` GETs of the page after one warm-up; its size.

    SQLite runs inside this process, so on SQLite the CPU time is the work itself, which a
    busy machine (other processes on the same cores) does not inflate as it does the wall
    time. PostgreSQL's share of the work runs in its own process and is not in it.
    """
    url = "/analytics?" + urlencode(params)
    response = client.get(url)  # warm: caches, statistics, compiled templates
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    walls, cpus = [], []
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, len(response.content)


def time_parts(window_name: str, q: str, runs: int) -> tuple[float, float]:
    """Median seconds of the report's trace part and span part, without the view."""
    from django.utils import timezone

    from search.compiler import compile_query
    from traces import analytics

    query = compile_query(q)
    traces, spans = [], []
    for _ in range(runs):
        window = analytics.Window.preset(window_name, timezone.now())
        started = time.perf_counter()
        analytics.report(window, query, q=q, breakdowns=("service", "workflow"))
        middle = time.perf_counter()
        analytics.report(window, query, q=q, series=False, breakdowns=("model", "span"))
        traces.append(middle - started)
        spans.append(time.perf_counter() - middle)
    return statistics.median(traces), statistics.median(spans)


class Captured:
    """The SQL (with parameters) Django sends while the block runs."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []

    def __call__(self, execute, sql, params, many, context):
        self.statements.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)


def explain(window_name: str, q: str) -> None:
    from django.db import connection
    from django.utils import timezone

    from search.compiler import compile_query
    from traces import analytics

    captured = Captured()
    window = analytics.Window.preset(window_name, timezone.now())
    with connection.execute_wrapper(captured):
        analytics.report(window, compile_query(q), q=q)
    seen = set()
    for sql, params in captured.statements:
        shape = sql.split(" LIMIT ")[0]
        if shape in seen or not sql.lstrip().upper().startswith("SELECT"):
            continue
        seen.add(shape)
        if connection.vendor == "sqlite":
            statement = "EXPLAIN QUERY PLAN " + sql
        else:
            statement = "EXPLAIN (ANALYZE, BUFFERS) " + sql
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(statement, params)
            rows = cursor.fetchall()
            took = _ms(time.perf_counter() - started)
        print(f"\n  {sql[:160]}{'…' if len(sql) > 160 else ''}")
        print(f"  ({took:.1f} ms to explain)")
        for row in rows:
            print("    " + str(row[-1]))


def cold_build(window) -> None:
    """Time building every hourly rollup of ``window`` from nothing: what the first report
    over a database's history costs (traces/rollups.py), before the timed pages."""
    from django.db import transaction
    from django.utils import timezone

    from traces import rollups
    from traces.models import RollupHour, SpanRollup, datetime_to_ns

    with transaction.atomic():
        SpanRollup.objects.all().delete()
        RollupHour.objects.all().delete()
    started = time.perf_counter()
    hours = rollups.rollups_build(
        since_ns=window.since_ns, until_ns=window.until_ns, now_ns=datetime_to_ns(timezone.now())
    )
    took = time.perf_counter() - started
    rows = SpanRollup.objects.count()
    print(
        f"rollups from nothing: {hours} hours of 30d built in {took:.2f} s "
        f"({rows:,} rollup rows); the pages below read them"
    )


def run_database(args: argparse.Namespace) -> int:
    env, manifest = dataset.ensure(args.db)
    dataset.setup_django(env)
    from django.db import connection
    from django.test import Client

    client = Client(SERVER_NAME="127.0.0.1")
    label = "SQLite" if connection.vendor == "sqlite" else "PostgreSQL"
    version = (
        connection.Database.sqlite_version
        if connection.vendor == "sqlite"
        else f"{connection.pg_version // 10000}.{connection.pg_version % 10000}"
    )
    filtered = f" for q={args.q}" if args.q else ""
    print(
        f"\n{label} {version}: {manifest['traces']:,} traces, {manifest['spans']:,} spans "
        f"({manifest['location']}); the whole /analytics page{filtered}, "
        f"1 warm-up + {args.runs} timed GETs in-process, ms"
    )
    header = (
        f"{'window':<7} {'buckets':>7} {'traces':>8} {'spans':>9} {'median':>8} {'best':>8} "
        f"{'cpu':>8} {'traces part':>12} {'spans part':>11} {'KB':>7}  target"
    )
    print(header)
    print("-" * (len(header) + 6))
    failed = []
    from django.utils import timezone

    from search.compiler import compile_query
    from traces import analytics

    if not args.q:
        cold_build(analytics.Window.preset("30d", timezone.now()))
    for name in WINDOWS:
        params = {"window": name, **({"q": args.q} if args.q else {})}
        times, cpus, size = time_page(client, params, args.runs)
        trace_s, span_s = time_parts(name, args.q, max(3, args.runs // 2))
        window = analytics.Window.preset(name, timezone.now())
        query = compile_query(args.q)
        traces = analytics.report(window, query, breakdowns=()).totals.traces
        spans = analytics.window_spans(window, query).count()
        median = _ms(statistics.median(times))
        # Only SQLite carries the target; PostgreSQL is quoted beside it.
        targeted = name in TARGETED and not args.q and connection.vendor == "sqlite"
        verdict = ""
        if targeted:
            verdict = "PASS" if median < TARGET_MS else "FAIL"
            if verdict == "FAIL":
                failed.append(name)
        print(
            f"{name:<7} {len(window.bucket_starts()):>7} {traces:>8,} {spans:>9,} {median:>8.1f} "
            f"{_ms(min(times)):>8.1f} {_ms(statistics.median(cpus)):>8.1f} "
            f"{_ms(trace_s):>12.1f} {_ms(span_s):>11.1f} "
            f"{size / 1024:>7.1f}  {f'<{TARGET_MS:.0f} ' + verdict if targeted else ''}",
            flush=True,
        )
    if args.explain:
        print("\nQuery plans, 30d:")
        explain("30d", args.q)
    if failed:
        print(f"{label}: OVER {TARGET_MS:.0f} ms: {', '.join(failed)}")
    # Only SQLite carries the target; PostgreSQL's figures are quoted beside it.
    return 1 if failed and connection.vendor == "sqlite" else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=7, help="timed GETs per window")
    parser.add_argument("--q", default="", help="a search query to filter the page by")
    parser.add_argument("--explain", action="store_true", help="query plans for 30d")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    if args.db != "both":
        return run_database(args)
    return dataset.run_per_database(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
