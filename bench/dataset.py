"""A large benchmark database, built once through the real write path and reused.

``ensure(db)`` gives the environment (``MSGTRACE_DB_PATH`` or ``MSGTRACE_DATABASE_URL``)
of a database holding ~1,000,000 spans in ~100,000 agent traces whose start times are
spread over the last 30 days. The first call builds it: it starts ``msgtrace start`` (the
console script next to this Python) on the database, and posts OTLP/protobuf batches
made by ``bench/ingest.py``'s generator from a few keep-alive clients, exactly as
exporters would. Each generated trace is shifted in time before it is encoded, so the
stored traces cover 30 days rather than the last hour. A manifest next to the data
(``/tmp/msgtrace-bench/<name>.json``) records what was built; later calls reuse the
database when the manifest and the span count agree, so benches (search, pages,
analytics) share one dataset.

Build (or check) from the repository root with the project's virtualenv::

    python bench/dataset.py --db sqlite              # /tmp/msgtrace-bench/sqlite-1m.db
    python bench/dataset.py --db postgres            # PostgreSQL database msgtrace_bench_1m
    python bench/dataset.py --db both --rebuild      # throw away and build again
    python bench/dataset.py --db sqlite --spans 100000 --name sqlite-100k

From another bench::

    from dataset import ensure        # bench/ on sys.path, or load by file path
    env = ensure("sqlite")            # {"MSGTRACE_DB_PATH": "..."}
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DIR = Path("/tmp/msgtrace-bench")
DEFAULT_SPANS = 1_000_000
DEFAULT_PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
WINDOW_NS = 30 * 86400 * 10**9  # trace starts spread over the last 30 days
MANIFEST_VERSION = 1


def load_ingest():
    """``bench/ingest.py`` as a module (registered first, for its dataclasses)."""
    name = "msgtrace_bench_ingest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Target:
    """Where one benchmark database lives."""

    db: str  # "sqlite" or "postgres"
    name: str  # file stem / database name
    directory: Path
    pg_admin_url: str

    @property
    def sqlite_path(self) -> Path:
        return self.directory / f"{self.name}.db"

    @property
    def pg_url(self) -> str:
        return f"{self.pg_admin_url.rsplit('/', 1)[0]}/{self.name}"

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.name}.json"

    def env(self) -> dict[str, str]:
        if self.db == "postgres":
            return {"MSGTRACE_DATABASE_URL": self.pg_url}
        return {"MSGTRACE_DB_PATH": str(self.sqlite_path)}

    def describe(self) -> str:
        if self.db == "postgres":
            return f"PostgreSQL {self.pg_url}"
        return f"SQLite {self.sqlite_path}"


def target(
    db: str,
    spans: int = DEFAULT_SPANS,
    name: str | None = None,
    directory: Path = DEFAULT_DIR,
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL,
) -> Target:
    size = f"{spans // 1_000_000}m" if spans % 1_000_000 == 0 else f"{spans // 1000}k"
    default = f"sqlite-{size}" if db == "sqlite" else f"msgtrace_bench_{size}"
    return Target(db, name or default, Path(directory), pg_admin_url)


# --- the database itself ----------------------------------------------------------------------


def _pg(admin_url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def _exists(t: Target) -> bool:
    if t.db == "postgres":
        rows = _pg(t.pg_admin_url, f"SELECT 1 FROM pg_database WHERE datname = '{t.name}'")
        return bool(rows)
    return t.sqlite_path.exists()


def _drop(t: Target) -> None:
    if t.db == "postgres":
        _pg(t.pg_admin_url, f'DROP DATABASE IF EXISTS "{t.name}" WITH (FORCE)')
    else:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{t.sqlite_path}{suffix}").unlink()
    with contextlib.suppress(FileNotFoundError):
        t.manifest_path.unlink()


def _create(t: Target) -> None:
    t.directory.mkdir(parents=True, exist_ok=True)
    if t.db == "postgres":
        _pg(t.pg_admin_url, f'CREATE DATABASE "{t.name}"')


def stored_counts(t: Target) -> tuple[int, int] | None:
    """(traces, spans) in the database, or None when it is missing or not migrated."""
    try:
        if t.db == "postgres":
            import psycopg

            with psycopg.connect(t.pg_url) as conn:
                spans = conn.execute("SELECT count(*) FROM traces_span").fetchone()[0]
                traces = conn.execute("SELECT count(*) FROM traces_trace").fetchone()[0]
                return traces, spans
        import sqlite3

        if not t.sqlite_path.exists():
            return None
        with contextlib.closing(sqlite3.connect(f"file:{t.sqlite_path}?mode=ro", uri=True)) as c:
            spans = c.execute("SELECT count(*) FROM traces_span").fetchone()[0]
            traces = c.execute("SELECT count(*) FROM traces_trace").fetchone()[0]
            return traces, spans
    except Exception:
        return None


def read_manifest(t: Target) -> dict | None:
    try:
        return json.loads(t.manifest_path.read_text())
    except (OSError, ValueError):
        return None


# --- the server -------------------------------------------------------------------------------


class Server:
    """``msgtrace start`` on a free port, on the target database; stopped by ``stop()``."""

    def __init__(self, t: Target) -> None:
        self.ingest = load_ingest()
        self.target = t
        self.port = self.ingest._free_port()
        self.log_path = t.directory / f"{t.name}.server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSGTRACE_")}
        env.update(self.target.env())
        self.process = self.ingest.launch_server(env, self.port, self.log_path, timeout=120)

    def stats(self) -> dict:
        status, body = self.ingest._get_json("127.0.0.1", self.port, "/api/v1/stats", timeout=300)
        if status != 200:
            raise RuntimeError(f"GET /api/v1/stats answered {status}")
        return body

    def stop(self) -> None:
        self.ingest.stop_server(self.process, timeout=30)


# --- generating and posting -------------------------------------------------------------------


def _batches(total_spans: int, batch_size: int, seed: int, now_ns: int, out: queue.Queue) -> None:
    """Put protobuf batches of ``total_spans`` spans on ``out``, then None.

    ``bench/ingest.py``'s ``generate()``, except that each trace is moved in time as it is
    made: trace k of ~N starts near ``now - 30 days + k/N * 30 days`` (with jitter), so
    arrival order is roughly time order, as from a live app, and no trace ends in the future.
    """
    ingest = load_ingest()
    rng = random.Random(seed)
    generator = ingest.TraceGenerator(rng)
    window_start = now_ns - WINDOW_NS
    window = WINDOW_NS - 10 * 60 * 10**9  # the last traces start 10 minutes ago
    carry: dict[str, list] = {service: [] for service in ingest._SERVICES}
    made = 0
    remaining = total_spans
    try:
        while remaining > 0:
            size = min(batch_size, remaining)
            service = rng.choice(ingest._SERVICES)
            spans = carry[service]
            while len(spans) < size:
                trace = generator.trace(service)
                position = min(made / total_spans, 1.0)
                jitter = rng.randint(0, 60 * 10**9)
                target_start = window_start + int(position * window) - jitter
                shift = target_start - min(s.start_ns for s in trace)
                for s in trace:
                    s.start_ns += shift
                    s.end_ns += shift
                    s.events = [(name, at + shift, attrs) for name, at, attrs in s.events]
                made += len(trace)
                spans.extend(trace)
            batch, carry[service] = spans[:size], spans[size:]
            errors = sum(1 for s in batch if s.status_code == ingest.STATUS_ERROR)
            out.put(ingest.Batch(ingest.encode_protobuf(service, batch), size, errors))
            remaining -= size
    finally:
        out.put(None)


def _post_all(port: int, batches: queue.Queue, clients: int, progress_every: int):
    """Post batches from ``clients`` keep-alive connections until the producer is done."""
    ingest = load_ingest()
    outcome = ingest.Outcome()
    lock = threading.Lock()
    done = threading.Event()
    posted = [0, time.perf_counter()]

    def work() -> None:
        client = ingest.Client("127.0.0.1", port, ingest.OTLP_PATH, "application/x-protobuf")
        mine = ingest.Outcome()
        try:
            while not done.is_set():
                batch = batches.get()
                if batch is None:
                    done.set()
                    batches.put(None)  # let the other clients see the end too
                    break
                client.post(batch, mine)
                with lock:
                    before = posted[0]
                    posted[0] += batch.spans
                    if posted[0] // progress_every > before // progress_every:
                        rate = posted[0] / (time.perf_counter() - posted[1])
                        print(f"  {posted[0]:>9,} spans posted ({rate:,.0f}/s)", flush=True)
        finally:
            client.close()
            with lock:
                outcome.acknowledged += mine.acknowledged
                outcome.rejected += mine.rejected
                for status, count in mine.statuses.items():
                    outcome.statuses[status] = outcome.statuses.get(status, 0) + count

    threads = [threading.Thread(target=work, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def build(t: Target, spans: int, batch: int = 500, clients: int = 4, seed: int = 1) -> dict:
    """Drop and build ``t`` through ``msgtrace start``; return (and write) its manifest."""
    print(f"building {t.describe()}: {spans:,} spans, ~{spans // 10:,} traces over 30 days")
    _drop(t)
    _create(t)
    now_ns = time.time_ns()
    server = Server(t)
    server.start()  # migrates the fresh database
    try:
        started = time.perf_counter()
        batches: queue.Queue = queue.Queue(maxsize=64)
        producer = threading.Thread(
            target=_batches, args=(spans, batch, seed, now_ns, batches), daemon=True
        )
        producer.start()
        outcome = _post_all(server.port, batches, clients, progress_every=100_000)
        producer.join()
        wall = time.perf_counter() - started
        stats = server.stats()
    finally:
        server.stop()
    if t.db == "postgres":
        # What autovacuum would do soon after a bulk load; without it the first plans
        # are made on empty-table statistics.
        _pg(t.pg_url, "VACUUM ANALYZE")
    non_ok = {k: v for k, v in outcome.statuses.items() if k != 200}
    if stats.get("total_spans") != spans or outcome.acknowledged != spans:
        raise RuntimeError(
            f"build incomplete: {outcome.acknowledged:,} acknowledged, "
            f"{stats.get('total_spans')} stored of {spans:,}; non-200: {non_ok}"
        )
    manifest = {
        "version": MANIFEST_VERSION,
        "schema": schema_fingerprint(),
        "db": t.db,
        "location": t.describe(),
        "spans": stats["total_spans"],
        "traces": stats["total_traces"],
        "seed": seed,
        "built_at_ns": now_ns,
        "window_days": WINDOW_NS // (86400 * 10**9),
        "build_seconds": round(wall, 1),
    }
    t.manifest_path.write_text(json.dumps(manifest, indent=2))
    print(
        f"built {t.describe()}: {manifest['spans']:,} spans, {manifest['traces']:,} traces in "
        f"{wall:.0f} s ({spans / wall:,.0f} spans/s, generation included); non-200: "
        f"{non_ok or 'none'}",
        flush=True,
    )
    return manifest


def setup_django(env: dict[str, str]) -> None:
    """Django in this process, on the database ``env`` names (from ``ensure``)."""
    for key in ("MSGTRACE_DB_PATH", "MSGTRACE_DATABASE_URL"):
        os.environ.pop(key, None)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "msgtrace_site.settings"
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def run_per_database(script: str, argv: list[str] | None) -> int:
    """Run ``script`` again for SQLite, then PostgreSQL, with the same options.

    Django is set up once per process, so each database gets its own. ``--db`` goes last:
    argparse keeps the last value, whatever ``--db`` the command line already had.
    """
    status = 0
    rest = list(argv if argv is not None else sys.argv[1:])
    for db in ("sqlite", "postgres"):
        command = [sys.executable, str(Path(script).resolve()), *rest, "--db", db]
        status |= subprocess.call(command, cwd=REPO_ROOT)
    return status


def schema_fingerprint() -> str:
    """A hash of the migrations: a database built under another schema is migrated."""
    digest = hashlib.sha256()
    for path in sorted(REPO_ROOT.glob("*/migrations/*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure(
    db: str,
    spans: int = DEFAULT_SPANS,
    *,
    name: str | None = None,
    directory: Path = DEFAULT_DIR,
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL,
    rebuild: bool = False,
    seed: int = 1,
) -> tuple[dict[str, str], dict]:
    """(environment, manifest) of a built database; builds it unless a complete one is there.

    Benches run side by side share the dataset: a lock file makes a second caller wait for
    the first one's build instead of building (and dropping) the same database again.
    """
    t = target(db, spans, name, directory, pg_admin_url)
    t.directory.mkdir(parents=True, exist_ok=True)
    with open(t.directory / f"{t.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(t, spans, rebuild=rebuild, seed=seed)


def _ensure(t: Target, spans: int, *, rebuild: bool, seed: int) -> tuple[dict[str, str], dict]:
    if not rebuild and _exists(t):
        manifest = read_manifest(t)
        counts = stored_counts(t)
        if (
            manifest
            and manifest.get("version") == MANIFEST_VERSION
            and manifest.get("spans") == spans
            and counts == (manifest.get("traces"), manifest.get("spans"))
        ):
            if manifest.get("schema") != schema_fingerprint():
                # New migrations (an index, a column): apply them to the data rather than
                # spend minutes rebuilding it, and while another bench may be reading it.
                print(f"migrating {t.describe()} to the current schema")
                subprocess.run(
                    [sys.executable, str(REPO_ROOT / "manage.py"), "migrate", "--no-input"],
                    env={**os.environ, **t.env()},
                    check=True,
                )
                manifest["schema"] = schema_fingerprint()
                t.manifest_path.write_text(json.dumps(manifest, indent=2))
            age_h = (time.time_ns() - manifest["built_at_ns"]) / 3.6e12
            print(
                f"reusing {t.describe()}: {counts[1]:,} spans, {counts[0]:,} traces, "
                f"built {age_h:.1f} h ago"
            )
            if age_h > 24:
                print("  note: relative times (since:24h) see fewer traces; --rebuild to refresh")
            return t.env(), manifest
        print(f"{t.describe()} exists but is incomplete or unknown ({counts}); rebuilding")
    return t.env(), build(t, spans, seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--spans", type=int, default=DEFAULT_SPANS)
    parser.add_argument("--name", help="file stem / database name (default from --spans)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="SQLite files, manifests")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--rebuild", action="store_true", help="drop and build again")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        env, _ = ensure(
            db,
            args.spans,
            name=args.name,
            directory=args.dir,
            pg_admin_url=args.pg_admin_url,
            rebuild=args.rebuild,
            seed=args.seed,
        )
        print("  " + " ".join(f"{k}={v}" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
