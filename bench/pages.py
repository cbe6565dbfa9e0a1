"""Page benchmark: server time of the web pages, over HTTP from a real ``msgtrace start``.

Pages of the dashboard, the trace list (and the total it fetches separately) and a typical
trace run on ``bench/dataset.py``'s 1,000,000-span / ~100,000-trace database; the trace
pages of two long agent runs (exactly 5,000 and 50,000 spans, nesting to depth 7, 1-2 KB
prompts on model spans, ~2% errors) on a database of their own, so the 1M manifest stays
valid. Both are built once through the OTLP write path and reused. Each URL gets 2 warm-up
GETs then ``--runs`` timed ones on one keep-alive connection, body read in full: status,
size, median and p95 (ms) of what a browser on this machine waits for the HTML.

Targets (median): dashboard and list < 150 ms, every 5,000-span trace page < 500 ms,
two 5,000-span runs compared (page and API) < 500 ms, the 50,000-span trace < 10 s; a
non-200 fails. Run from the repository root::

    python bench/pages.py                     # SQLite, then PostgreSQL
    python bench/pages.py --db sqlite --runs 5

Data: ``/tmp/msgtrace-bench/{sqlite-1m,big-traces}.db`` and the PostgreSQL databases
``msgtrace_bench_1m`` and ``msgtrace_bench_big`` on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

# This script's folder comes first on sys.path, so its siblings import by name; only
# bench/ingest.py, named like the project's ingest app, is loaded by path (dataset.py).
import dataset

# "5k-b" is another run of the same shape (its own seed): what the compare page aligns.
BIG_TRACES = {"5k": 5_000, "5k-b": 5_000, "50k": 50_000}
BIG_NAMES = {"sqlite": "big-traces", "postgres": "msgtrace_bench_big"}
BIG_VERSION = 3
WARMUP = 2
TIMEOUT_S = 60.0


# --- the two long traces ----------------------------------------------------------------------


def big_trace(seed: int, total: int, end_ns: int) -> list:
    """One agent run of exactly ``total`` spans ending at ``end_ns``, parents before children.

    An orchestrator hands tasks to sub-agents; a task runs steps of model calls, tools and
    retrieval; a tool may ask a model or a nested agent (depth up to 7). Siblings run one
    after another, so creation order is the tree order the detail page shows.
    """
    ingest = dataset.load_ingest()
    rng = random.Random(seed)
    text = ingest.TraceGenerator(rng).text
    trace_id = rng.randbytes(16)
    spans: list = []

    def add(parent, name: str, kind: int, at: int, attributes: dict):
        if len(spans) >= total:
            return None
        parent_id = parent.span_id if parent is not None else b""
        span_id = rng.randbytes(8)
        span = ingest.SpanData(trace_id, span_id, parent_id, name, kind, at, at, attributes)
        spans.append(span)
        return span

    def close(span, end: int) -> int:
        span.end_ns = end
        if rng.random() < 0.02:
            kind, message = rng.choice(ingest._EXCEPTIONS)
            span.status_code, span.status_message = ingest.STATUS_ERROR, message
            trace = f'Traceback (most recent call last):\n  File "/app/agent.py", line 42\n{kind}'
            attributes = {"exception.type": kind, "exception.message": message}
            span.events.append(("exception", end, {**attributes, "exception.stacktrace": trace}))
        return end

    def llm(parent, at: int, agent: str) -> int:
        provider, model, response_model, in_price, out_price = rng.choice(ingest._MODELS)
        tokens_in, tokens_out = rng.randint(500, 9000), rng.randint(20, 900)
        messages = [
            {"role": "system", "content": f"You are the {agent} agent. {text(60, 120)}"},
            {"role": "user", "content": text(20, 40)},
            {"role": "assistant", "content": text(30, 60)},
        ]
        span = add(parent, f"chat {model}", ingest.KIND_CLIENT, at, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
            "gen_ai.request.model": model, "gen_ai.response.model": response_model,
            "gen_ai.request.temperature": round(rng.uniform(0, 1), 2),
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out,
            "gen_ai.usage.cost.input_tokens": round(tokens_in * in_price, 8),
            "gen_ai.usage.cost.output_tokens": round(tokens_out * out_price, 8),
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": text(15, 35)}]),
        })  # fmt: skip
        return close(span, at + rng.randint(150, 2500) * 10**6) if span else at

    def tool(parent, at: int, agent: str, depth: int) -> int:
        name, description = rng.choice(ingest._TOOLS)
        span = add(parent, f"execute_tool {name}", ingest.KIND_INTERNAL, at, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
            "gen_ai.tool.description": description, "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": f"call_{rng.randbytes(9).hex()}",
            "gen_ai.tool.call.arguments": json.dumps({"query": text(4, 10)}),
            "gen_ai.tool.call.result": json.dumps({"items": [text(6, 14), text(6, 14)]}),
            "gen_ai.agent.name": agent, "code.function": f"tools.{name}", "tool.retries": 0,
        })  # fmt: skip
        if span is None:
            return at
        end = at + rng.randint(20, 900) * 10**6
        roll = rng.random()
        if roll < 0.1 and depth <= 3:  # a tool that delegates to a nested agent
            end = run_agent(span, at + 10**6, "researcher", depth + 1, rng.randint(1, 3))
        elif roll < 0.45:  # a tool that asks a model itself
            end = max(end, llm(span, at + 10**6, agent))
        return close(span, end + 10**6)

    def retriever(parent, at: int) -> int:
        span = add(parent, "retrieve knowledge_base", ingest.KIND_INTERNAL, at, {
            "openinference.span.kind": "RETRIEVER", "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": "kb-main", "db.system.name": "pgvector",
            "retrieval.query": text(8, 20), "retrieval.top_k": 5,
            "retrieval.context": text(25, 45), "code.function": "rag.retrieve",
        })  # fmt: skip
        if span is None:
            return at
        embed = add(span, "embeddings text-embedding-3-small", ingest.KIND_CLIENT, at + 10**6, {
            "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": rng.randint(10, 80),
        })  # fmt: skip
        end = close(embed, at + rng.randint(30, 200) * 10**6) if embed else at
        return close(span, end + rng.randint(5, 80) * 10**6)

    def run_agent(parent, at: int, agent: str, depth: int, steps: int) -> int:
        span = add(parent, f"invoke_agent {agent}", ingest.KIND_INTERNAL, at, {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
            "gen_ai.agent.id": f"agent-{agent}-v3", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.conversation.id": trace_id.hex(),
            "input.value": text(12, 30), "agent.max_steps": 12,
        })  # fmt: skip
        if span is None:
            return at
        t = retriever(span, at + 10**6) if depth <= 1 else at + 10**6
        number = 0
        while (number < steps or depth == 0) and len(spans) < total:
            number += 1
            if depth == 0:  # the orchestrator: plan, then hand a task to a sub-agent
                t = llm(span, t + 10**6, agent)
                sub = rng.choice(ingest._AGENTS)
                t = run_agent(span, t + 10**6, sub, 1, rng.randint(3, 6))
                continue
            attributes = {"openinference.span.kind": "CHAIN", "step.index": number}
            step = add(span, f"step {number}", ingest.KIND_INTERNAL, t + 10**6, attributes)
            if step is None:
                break
            inner = llm(step, step.start_ns + 10**6, agent)
            for _ in range(rng.randint(1, 3)):
                inner = tool(step, inner + 10**6, agent, depth + 2)
            if rng.random() < 0.2:
                inner = retriever(step, inner + 10**6)
            t = close(step, inner + 10**6)
        return close(span, llm(span, t + 10**6, agent) + 10**6)

    shift = end_ns - run_agent(None, 0, "orchestrator", 0, 0)
    for s in spans:
        s.start_ns, s.end_ns = s.start_ns + shift, s.end_ns + shift
        s.events = [(name, at + shift, attrs) for name, at, attrs in s.events]
    return spans


def ensure_big(db: str) -> tuple[object, dict]:
    """(target, manifest) of the database with the long traces; built when missing."""
    t = dataset.Target(db, BIG_NAMES[db], dataset.DEFAULT_DIR, dataset.DEFAULT_PG_ADMIN_URL)
    total = sum(BIG_TRACES.values())
    manifest = dataset.read_manifest(t) if dataset._exists(t) else None
    if (
        manifest
        and manifest.get("version") == BIG_VERSION
        and manifest.get("schema") == dataset.schema_fingerprint()
        and dataset.stored_counts(t) == (len(BIG_TRACES), total)
    ):
        print(f"reusing {t.describe()}: traces of {', '.join(BIG_TRACES)} spans")
        return t, manifest
    print(f"building {t.describe()}: traces of {', '.join(BIG_TRACES)} spans", flush=True)
    ingest = dataset.load_ingest()
    dataset._drop(t)
    dataset._create(t)
    server = dataset.Server(t)
    server.start()
    traces = {}
    client = ingest.Client("127.0.0.1", server.port, ingest.OTLP_PATH, "application/x-protobuf")
    try:
        for seed, (label, count) in enumerate(BIG_TRACES.items(), start=7):
            spans = big_trace(seed, count, end_ns=time.time_ns() - 10 * 60 * 10**9)
            outcome = ingest.Outcome()
            ordered = sorted(spans, key=lambda s: s.end_ns)  # as a BatchSpanProcessor sends
            for i in range(0, count, 1000):
                body = ingest.encode_protobuf("research-assistant", ordered[i : i + 1000])
                client.post(ingest.Batch(body, len(ordered[i : i + 1000]), 0), outcome)
            if outcome.acknowledged != count:
                raise RuntimeError(f"{label}: {outcome.acknowledged} of {count} spans accepted")
            trace_id = spans[0].trace_id.hex()
            _wait_for(server.port, trace_id, count)
            # Creation order is tree order: the deep span sits 80% of the way down.
            deep = spans[count * 4 // 5].span_id.hex()
            traces[label] = {"trace_id": trace_id, "spans": count, "deep_span": deep}
    finally:
        client.close()
        server.stop()
    if db == "postgres":
        dataset._pg(t.pg_url, "VACUUM ANALYZE")
    manifest = {"version": BIG_VERSION, "schema": dataset.schema_fingerprint(), "traces": traces}
    t.manifest_path.write_text(json.dumps(manifest, indent=2))
    return t, manifest


def _wait_for(port: int, trace_id: str, spans: int, timeout: float = 300) -> None:
    ingest = dataset.load_ingest()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = ingest._get_json("127.0.0.1", port, f"/api/v1/traces?q=trace:{trace_id}")
        if [t["span_count"] for t in body.get("traces", [])] == [spans]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"trace {trace_id} did not reach {spans} spans within {timeout:.0f} s")


# --- timing -----------------------------------------------------------------------------------


class Browser:
    """One keep-alive HTTP connection, as a browser tab keeps; reopened if the server drops it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def get(self, url: str, htmx: bool, retry: bool = True) -> tuple[int | str, int, float]:
        """(status, body bytes, seconds) of one GET, whole body read."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S)
            self.conn.connect()  # not timed: a browser reuses its connection
        started = time.perf_counter()
        try:
            self.conn.request("GET", url, headers={"HX-Request": "true"} if htmx else {})
            response = self.conn.getresponse()
            status, size = response.status, len(response.read())
            if response.will_close:
                self.close()
        except TimeoutError:
            self.close()
            status, size = "timeout", 0
        except (ConnectionError, http.client.BadStatusLine):
            self.close()
            if not retry:
                raise
            return self.get(url, htmx, retry=False)
        return status, size, time.perf_counter() - started

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def measure(browser: Browser, url: str, htmx: bool, runs: int) -> dict:
    for _ in range(WARMUP):
        status, size, seconds = browser.get(url, htmx)
        if status != 200:  # a failing or timing-out page is not worth 15 more tries
            return {"status": status, "kb": size / 1024, "median": seconds * 1000, "p95": None}
    times = []
    for _ in range(runs):
        status, size, seconds = browser.get(url, htmx)
        times.append(seconds * 1000)
        if status != 200:
            break
    percentile = dataset.load_ingest().percentile
    return {
        "status": status,
        "kb": size / 1024,
        "median": statistics.median(times),
        "p95": percentile(times, 0.95),
    }


@dataclass
class Page:
    group: str  # dashboard, list, detail, 5k, 50k: what the target applies to
    url: str
    htmx: bool = False
    target_ms: float | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return unquote(self.url) + (" [htmx]" if self.htmx else "") + self.note


def pages_1m(port: int) -> list[Page]:
    """Dashboard, list and a typical trace on the 1M dataset, with a real service and trace."""
    ingest = dataset.load_ingest()
    _, body = ingest._get_json("127.0.0.1", port, "/api/v1/traces?limit=100", timeout=60)
    traces = body["traces"]
    typical = next((t for t in traces if 9 <= t["span_count"] <= 11), traces[0])
    lists = [
        "", f"?service={quote(typical['service_name'])}", "?has_errors=true", "?since=24h",
        "?sort=-cost", "?sort=-duration", "?sort=tokens", "?page=500", "?min_duration=5000",
        "?q=" + quote("error:true AND duration:>5s"), "?q=" + quote("model:gpt-4o*"),
    ]  # fmt: skip
    return [
        *[Page("dashboard", f"/?window={w}", target_ms=150) for w in ("24h", "7d", "all")],
        *[Page("list", f"/traces{query}", target_ms=150) for query in lists],
        Page("list", "/traces", htmx=True, target_ms=150),
        # The total, which the list page asks for on its own once its rows are shown.
        *[Page("count", f"/traces{q}{'&' if q else '?'}count=1", htmx=True) for q in lists],
        Page("detail", f"/traces/{typical['trace_id']}", note=f" ({typical['span_count']} sp)"),
    ]


def pages_big(manifest: dict) -> list[Page]:
    """The 5,000- and 50,000-span traces: full pages and the fragments htmx asks for."""
    five, fifty = manifest["traces"]["5k"], manifest["traces"]["50k"]
    pair = f"a={five['trace_id']}&b={manifest['traces']['5k-b']['trace_id']}"
    base5, base50 = f"/traces/{five['trace_id']}", f"/traces/{fifty['trace_id']}"
    span = f"{base5}/spans/{five['deep_span']}"
    return [
        Page("5k", base5, target_ms=500),
        Page("5k", f"{base5}?offset=500&dir=down", htmx=True, target_ms=500),
        Page("5k", span, target_ms=500, note=" (#4000)"),
        Page("5k", span, htmx=True, target_ms=500, note=" (#4000)"),
        Page("5k", f"{base5}?filter=tool", htmx=True, target_ms=500),
        Page("5k", f"{base5}?view=tree", target_ms=500),
        Page("compare", f"/traces/compare?{pair}", target_ms=500),
        Page("compare", f"/api/v1/compare?{pair}", target_ms=500),
        Page("50k", base50, target_ms=10_000),
        Page("50k", f"{base50}?offset=25000&dir=down", htmx=True, target_ms=10_000),
    ]


def run_pages(target, pages, runs: int, rows: list[dict]) -> None:
    """Time ``pages(port)`` against ``msgtrace start`` on ``target``; add and print rows."""
    ingest = dataset.load_ingest()
    server = dataset.Server(target)
    server.start()
    try:
        browser = Browser(server.port)
        # CPU used meanwhile by the server, this script and everything else: the machine
        # may be shared, and a busy neighbour shows up in the medians.
        cpu = [ingest._machine_busy()[0], ingest._cpu_seconds(server.process.pid)]
        cpu += [time.process_time(), time.perf_counter()]
        for page in pages(server.port):
            result = measure(browser, page.url, page.htmx, runs)
            target_ms = page.target_ms
            ok = result["status"] == 200 and (target_ms is None or result["median"] < target_ms)
            rows.append({"group": page.group, "url": page.label, "target": target_ms, "ok": ok})
            rows[-1].update(result)
            _print_row(rows[-1])
        browser.close()
        wall = time.perf_counter() - cpu[3]
        served = ingest._cpu_seconds(server.process.pid) - cpu[1]
        rest = ingest._machine_busy()[0] - cpu[0] - served - (time.process_time() - cpu[2])
        print(
            f"  ({wall:.0f} s; CPU: server {served / wall:.0%} of a core, everything else "
            f"{rest / wall:.0%}{' incl. PostgreSQL' if target.db == 'postgres' else ''})"
        )
    finally:
        server.stop()


def _print_row(row: dict) -> None:
    url = row["url"] if len(row["url"]) <= 58 else row["url"][:24] + "…" + row["url"][-33:]
    p95 = f"{row['p95']:8.1f}" if row["p95"] is not None else f"{'-':>8}"
    verdict = "-" if row["target"] is None else "PASS"
    if not row["ok"]:
        verdict = "FAIL" if row["status"] == 200 else f"FAIL <-- STATUS {row['status']}"
    target = f"<{row['target']:,.0f}" if row["target"] else ""
    print(
        f"{row['group']:<9} {url:<58} {row['status']!s:>6} {row['kb']:8.1f} "
        f"{row['median']:8.1f} {p95} {target:>8} {verdict}",
        flush=True,
    )


def run_database(db: str, runs: int) -> list[dict]:
    _, manifest = dataset.ensure(db)
    big_target, big = ensure_big(db)
    spans = ", ".join(f"{t['spans']:,}-span trace {t['trace_id']}" for t in big["traces"].values())
    print(
        f"\n{'SQLite' if db == 'sqlite' else 'PostgreSQL'}: {manifest['traces']:,} traces, "
        f"{manifest['spans']:,} spans ({manifest['location']}); {spans} "
        f"({big_target.describe()}); {WARMUP} warm-up + {runs} timed GETs per URL, ms"
    )
    header = f"{'group':<9} {'url':<58} {'status':>6} {'KB':>8} {'median':>8} {'p95':>8} target"
    print(header + "\n" + "-" * (len(header) + 6))
    rows: list[dict] = []
    run_pages(dataset.target(db), pages_1m, runs, rows)
    run_pages(big_target, lambda port: pages_big(big), runs, rows)
    return rows


def summary(db: str, rows: list[dict]) -> None:
    print(f"\n{db} summary (median against target):")
    checks = {
        "dashboard": "dashboard < 150 ms", "list": "trace list < 150 ms",
        "5k": "5,000-span trace < 500 ms", "compare": "5k vs 5k compare < 500 ms",
        "50k": "50,000-span trace < 10 s",
        "count": "list totals answer 200", "detail": "typical trace answers 200",
    }  # fmt: skip
    for key, name in checks.items():
        group = [r for r in rows if r["group"] == key]
        worst = max(group, key=lambda r: (not r["ok"], r["median"]))
        failed = [r["url"] for r in group if not r["ok"]]
        print(
            f"  {'PASS' if not failed else 'FAIL'}  {name:<27} worst {worst['median']:8.1f} ms "
            f"({worst['url']})" + (f"; failing: {', '.join(failed)}" if failed else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--runs", type=int, default=15, help="timed GETs per URL")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    results = {}
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        results[db] = run_database(db, args.runs)
    for db, rows in results.items():
        summary(db, rows)
    return 0 if all(r["ok"] for rows in results.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
