"""Admin benchmark: Django admin pages for traces and spans on 1,000,000 spans.

On ``bench/dataset.py``'s database (~100,000 traces, 1,000,000 spans), each admin page is
rendered in-process, as the server would: the admin view called with a GET request from a
superuser, the template response rendered in full. One warm-up, then ``--runs`` timed
renders: median and worst (ms), queries and the time they took. The requests never write:
the user is an unsaved superuser object, so the shared dataset stays as it was built.

Target: every page under 200 ms (median) on SQLite; PostgreSQL's figures are quoted beside.

Run from the repository root with the project's virtualenv::

    python bench/admin.py                  # SQLite, then PostgreSQL
    python bench/admin.py --db sqlite --runs 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# This script's folder comes first on sys.path, so its siblings import by name.
import dataset

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TARGET_MS = 200.0


def pages() -> list[tuple[str, str]]:
    """(label, URL) of the pages to time, with ids taken from the data."""
    from traces.models import Span, Trace

    trace = Trace.objects.newest_first()[5000]  # a typical trace, not the newest
    span = Span.objects.filter(trace_id=trace.pk).order_by("pk").first()
    service = trace.service_name
    workflow_prefix = trace.workflow_name[:7]
    return [
        ("traces", "/admin/traces/trace/"),
        ("traces, page 50", "/admin/traces/trace/?p=50"),
        ("traces by duration", "/admin/traces/trace/?o=4"),
        (f"traces, service={service}", f"/admin/traces/trace/?service={service}"),
        ("traces with errors", "/admin/traces/trace/?errors=yes"),
        ("traces, service no trace has", "/admin/traces/trace/?service=nobody"),
        ("traces started last 24 h", "/admin/traces/trace/?started=24h"),
        ("traces >7 d old, no errors", "/admin/traces/trace/?started=older-7d&errors=no"),
        ("search: a trace id", f"/admin/traces/trace/?q={trace.pk}"),
        (f"search: '{workflow_prefix}' (prefix)", f"/admin/traces/trace/?q={workflow_prefix}"),
        ("search: no match", "/admin/traces/trace/?q=zzzz-nothing"),
        ("trace page", f"/admin/traces/trace/{trace.pk}/change/"),
        ("trace delete confirmation", f"/admin/traces/trace/{trace.pk}/delete/"),
        ("spans", "/admin/traces/span/"),
        ("spans, page 50", "/admin/traces/span/?p=50"),
        ("spans with errors", "/admin/traces/span/?is_error__exact=1"),
        ("spans of type tool", "/admin/traces/span/?span_type=tool"),
        ("spans of a type none has", "/admin/traces/span/?span_type=guardrail"),
        (
            "retriever spans with errors",
            "/admin/traces/span/?span_type=retriever&is_error__exact=1",
        ),
        (f"spans, trace service={service}", f"/admin/traces/span/?service={service}"),
        ("spans of one trace", f"/admin/traces/span/?trace={trace.pk}"),
        ("search: a span id", f"/admin/traces/span/?q={span.span_id}"),
        ("search: a trace id (spans)", f"/admin/traces/span/?q={trace.pk}"),
        ("span page", f"/admin/traces/span/{span.pk}/change/"),
        ("saved filters", "/admin/search/savedfilter/"),
        ("admin index", "/admin/"),
    ]


def measure(url: str, runs: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import RequestFactory
    from django.urls import resolve

    factory = RequestFactory(SERVER_NAME="127.0.0.1")
    user = User(username="bench", is_superuser=True, is_staff=True, is_active=True)
    match = resolve(url.partition("?")[0])
    times, queries, sql_ms = [], [], []
    status = 0
    for run in range(runs + 1):
        request = factory.get(url)
        request.user = user
        request.session = {}
        request._messages = []
        captured: list[float] = []

        def timed(execute, sql, params, many, context, captured=captured):
            began = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                captured.append(time.perf_counter() - began)

        began = time.perf_counter()
        with connection.execute_wrapper(timed):
            response = match.func(request, *match.args, **match.kwargs)
            if hasattr(response, "render"):
                response.render()
        elapsed = time.perf_counter() - began
        status = response.status_code
        if run:  # the first is the warm-up
            times.append(elapsed * 1000)
            queries.append(len(captured))
            sql_ms.append(sum(captured) * 1000)
    return {
        "status": status,
        "median": statistics.median(times),
        "worst": max(times),
        "queries": max(queries),
        "sql": statistics.median(sql_ms),
    }


def run_database(args: argparse.Namespace) -> int:
    env, manifest = dataset.ensure(args.db, args.spans, directory=args.dir)
    dataset.setup_django(env)
    from django.db import connection

    label = "SQLite" if connection.vendor == "sqlite" else "PostgreSQL"
    print(
        f"\n{label}: {manifest['traces']:,} traces, {manifest['spans']:,} spans "
        f"({manifest['location']}); admin pages rendered in-process, median of {args.runs} "
        f"after 1 warm-up, ms"
    )
    header = f"{'page':<40} {'status':>6} {'median':>8} {'worst':>8} {'queries':>8} {'SQL':>8}"
    print(header)
    print("-" * len(header))
    over, failed = [], []
    for name, url in pages():
        result = measure(url, args.runs)
        slow = result["median"] > TARGET_MS
        print(
            f"{name:<40} {result['status']:>6} {result['median']:>8.1f} {result['worst']:>8.1f} "
            f"{result['queries']:>8} {result['sql']:>8.1f}"
            + (f"   <-- OVER {TARGET_MS:.0f} ms" if slow else ""),
            flush=True,
        )
        if slow:
            over.append(name)
        if result["status"] != 200:
            failed.append(name)
    print(
        f"{label}: {len(over)} page(s) over {TARGET_MS:.0f} ms"
        + (f" ({', '.join(over)})" if over else "")
        + (f"; NOT 200: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed or (over and connection.vendor == "sqlite") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=5, help="timed renders per page")
    parser.add_argument("--spans", type=int, default=1_000_000, help="dataset size")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msgtrace-bench"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    if args.db != "both":
        return run_database(args)
    return dataset.run_per_database(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
