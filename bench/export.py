"""Export benchmark: peak memory and speed of ``msgtrace export`` on 1,000,000 spans.

On the shared benchmark database (``bench/dataset.py`` builds it once through the real
OTLP write path: ~100,000 traces, 1,000,000 spans), each format is exported in full by
the real command, as a user would run it::

    msgtrace export --format <format> --output /tmp/msgtrace-bench/export.<format>

Each export runs in its own process; its peak resident memory (``ru_maxrss`` of that one
child, from ``wait4``) and its wall time are recorded. The target: a peak under 200 MB
for every format, which only holds if the export streams (a 1M-span JSON export is
several gigabytes). The output files are removed afterwards unless ``--keep``.

Run from the repository root with the project's virtualenv::

    python bench/export.py                     # SQLite
    python bench/export.py --db postgres
    python bench/export.py --format csv-spans --keep
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# This script's folder comes first on sys.path, so its siblings import by name.
import dataset

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
FORMATS = ("json", "csv", "csv-spans", "otlp-json")
TARGET_MB = 200.0


def run_export(env: dict[str, str], fmt: str, output: Path) -> dict:
    """One ``manage.py export`` in a child process: wall time, peak RSS, output size."""
    command = [sys.executable, str(REPO_ROOT / "manage.py"), "export", "--format", fmt,
               "--output", str(output)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE)
    # wait4 gives this child's own figures (RUSAGE_CHILDREN would be the max of all runs).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    report = process.stdout.read().decode().strip()
    process.stdout.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"export --format {fmt} exited {code}")
    return {
        "format": fmt,
        "seconds": wall,
        "peak_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "bytes": output.stat().st_size,
        "report": report,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--spans", type=int, default=1_000_000, help="dataset size")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msgtrace-bench"))
    parser.add_argument("--pg-admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--format", action="append", choices=FORMATS, help="(repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the exported files")
    args = parser.parse_args(argv)

    db_env, manifest = dataset.ensure(
        args.db, args.spans, directory=args.dir, pg_admin_url=args.pg_admin_url
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
    env.update(db_env)
    spans, traces = manifest["spans"], manifest["traces"]
    print(
        f"\nmsgtrace export on {manifest['location']}: {traces:,} traces, {spans:,} spans; "
        f"one process per format, peak RSS of that process"
    )
    header = f"{'format':<10} {'seconds':>8} {'spans/s':>9} {'traces/s':>9} {'output MB':>10} {'peak RSS MB':>12}"  # noqa: E501
    print(header)
    print("-" * len(header))
    results = []
    for fmt in args.format or FORMATS:
        output = args.dir / f"export.{fmt}"
        try:
            result = run_export(env, fmt, output)
        finally:
            if not args.keep:
                output.unlink(missing_ok=True)
        results.append(result)
        over = result["peak_mb"] >= TARGET_MB
        print(
            f"{fmt:<10} {result['seconds']:>8.1f} {spans / result['seconds']:>9,.0f} "
            f"{traces / result['seconds']:>9,.0f} {result['bytes'] / 1e6:>10,.0f} "
            f"{result['peak_mb']:>12.1f}" + (f"   <-- OVER {TARGET_MB:.0f} MB" if over else ""),
            flush=True,
        )
    worst = max(results, key=lambda r: r["peak_mb"])
    over = [r["format"] for r in results if r["peak_mb"] >= TARGET_MB]
    print(
        f"peak RSS max {worst['peak_mb']:.1f} MB ({worst['format']}); target < {TARGET_MB:.0f} MB: "
        + ("OVER for " + ", ".join(over) if over else "met by every format")
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
