"""Alert evaluation against ingest: spans/s committed with rules checked every second.

Issue 8 asks that evaluating alert rules never blocks or slows ingestion. For each
setting of ``MSGTRACE_ALERT_INTERVAL`` (0: no evaluation in the server; 1: every rule
every second, 30x the default pace), this starts ``msgtrace start`` on a fresh SQLite
file holding ``--rules`` rules of every metric (queries on columns, span EXISTS, a JSON
attribute, "any single trace"), runs ``bench/ingest.py --url`` against it, and reads
back how many evaluations happened meanwhile. Settings alternate, ``--rounds`` times,
so that other load on the machine falls on both alike.

Run from the repository root with the project's virtualenv::

    python bench/alerts.py                  # 20 rules, 2 rounds
    python bench/alerts.py --rules 50 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "msgtrace"
METRICS = ("traces", "errors", "error_rate", "p50", "p95", "p99", "cost", "tokens")
QUERIES = ("", "service:research-assistant", "error:true", "model:gpt-4o*", "attr.user.id:u-42")
MAKE_RULES = """
from traces.models import AlertRule
metrics, queries = {metrics!r}, {queries!r}
for i in range({count}):
    each = i % 10 == 9
    AlertRule.objects.create(
        name=f"rule {{i}}", metric="each_trace" if each else metrics[i % len(metrics)],
        query="cost:>0.5" if each else queries[i % len(queries)], comparator=">",
        threshold=1e12, window_seconds=3600, cooldown_seconds=60,
    )
"""


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(SCRIPT), *args], env=env, check=True, capture_output=True)


def one_run(template: Path, interval: int, port: int, spans: int) -> tuple[float, int]:
    """Spans/s committed and rule evaluations done, on a copy of ``template``."""
    directory = Path(tempfile.mkdtemp(prefix="msgtrace-alerts-bench-"))
    db = directory / "bench.db"
    db.write_bytes(template.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    env.update(MSGTRACE_DB_PATH=str(db), MSGTRACE_ALERT_INTERVAL=str(interval))
    sys.path.insert(0, str(BENCH_DIR))
    import ingest

    server = ingest.launch_server(env, port, directory / "server.log", timeout=90)
    # Each check stamps every rule, overwriting the last stamp: sample it while ingest runs.
    stamps: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        with sqlite3.connect(db, timeout=30) as conn:
            while not done.wait(0.2):
                row = conn.execute("SELECT MAX(last_evaluated_at) FROM traces_alertrule").fetchone()
                if row[0]:
                    stamps.add(row[0])

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = subprocess.run(
            [sys.executable, str(BENCH_DIR / "ingest.py"), "--url", f"http://127.0.0.1:{port}",
             "--spans", str(spans)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        done.set()
        sampler.join()
        ingest.stop_server(server, timeout=15)
    found = re.search(r"([\d,]+) spans/s committed", out)
    if not found:
        raise RuntimeError(f"no figure in bench/ingest.py's output:\n{out}")
    return float(found[1].replace(",", "")), len(stamps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spans", type=int, default=100_000)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(BENCH_DIR))
    import ingest

    template = Path(tempfile.mkdtemp(prefix="msgtrace-alerts-bench-")) / "template.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    env["MSGTRACE_DB_PATH"] = str(template)
    manage(env, "migrate", "-v", "0")
    code = MAKE_RULES.format(metrics=METRICS, queries=QUERIES, count=args.rules)
    manage(env, "shell", "-c", code)

    results: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
    for _ in range(args.rounds):
        for interval in results:
            results[interval].append(one_run(template, interval, ingest._free_port(), args.spans))
    print(f"SQLite, {args.rules} alert rules, {args.spans:,} spans per run (bench/ingest.py)")
    for interval, runs in results.items():
        rates = [rate for rate, _ in runs]
        label = "no evaluation in the server" if interval == 0 else "every rule every second"
        print(
            f"  {label:<28} median {statistics.median(rates):>9,.0f} spans/s  "
            f"runs {' / '.join(f'{rate:,.0f}' for rate in rates)}  "
            f"checks during the run {' / '.join(str(n) for _, n in runs)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
