"""``msgtrace purge``: delete traces by age or search query, in batches ingest barely notices."""

from __future__ import annotations

import re
import sys
import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from search.compiler import compile_query
from search.parser import QueryError
from traces.models import Trace
from traces.purge import PurgeResult, sqlite_reclaim, traces_purge

_AGE = re.compile(r"([0-9]+)(s|m|h|d|w)")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_AGE = timedelta(days=36500)
PROGRESS_SECONDS = 2.0


def parse_age(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``2w``: a whole positive amount and one unit, nothing else."""
    match = _AGE.fullmatch(text.strip().lower())
    if not match:
        raise CommandError(
            f"--older-than must be a whole number and a unit (s, m, h, d, w), like 30m, "
            f"24h or 7d; got {text[:40]!r}"
        )
    amount, unit = match.groups()
    seconds = int(amount) * _AGE_SECONDS[unit]
    if seconds == 0:
        raise CommandError("--older-than must be more than 0; to purge every trace pass --all")
    if seconds > _MAX_AGE.total_seconds():
        raise CommandError(f"--older-than must be at most 36500d (100 years); got {text!r}")
    return timedelta(seconds=seconds)


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:,.1f} MB" if num_bytes >= 100_000 else f"{num_bytes / 1e3:,.0f} KB"


class Command(BaseCommand):
    help = (
        "Delete traces (and their spans) older than an age and/or matching a search query, "
        "in short batches that leave ingest running; then give the space back (SQLite)."
    )
    # Tests hand in their own stdin, as Django's createsuperuser allows.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            metavar="AGE",
            help="traces that started more than AGE ago: 30m, 24h, 7d, 2w",
        )
        parser.add_argument(
            "--query",
            metavar="Q",
            help="traces matching this search query (docs/query-language.md)",
        )
        parser.add_argument(
            "--all", action="store_true", help="every trace (needed when nothing else selects)"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would go; delete nothing"
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, **options):
        traces, described = self._selection(options)
        totals = traces.totals()
        count, spans = totals["traces"], totals["spans"]
        self.stdout.write(f"{count:,} traces ({spans:,} spans) {described}.")
        if count == 0:
            self.stdout.write("Nothing to purge.")
            return
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing deleted.")
            return
        if not options["yes"] and not self._confirmed(options.get("stdin") or sys.stdin, count):
            self.stdout.write("Cancelled: nothing deleted.")
            return
        progress = self._progress(count) if options["verbosity"] >= 1 else None
        result = traces_purge(traces=traces, progress=progress)
        self.stdout.write(
            f"Deleted {result.traces:,} traces ({result.spans:,} spans) in {result.batches:,} "
            f"batches, {result.seconds:.1f} s. A batch's transaction took "
            f"{result.batch_percentile(0.5) * 1000:.0f} ms (median), "
            f"{result.batch_percentile(0.99) * 1000:.0f} ms (p99); "
            f"longest batch {result.longest_batch * 1000:.0f} ms."
        )
        self._reclaim()

    def _selection(self, options):
        older_than, query, everything = options["older_than"], options["query"], options["all"]
        if everything and (older_than is not None or query is not None):
            raise CommandError(
                "--all selects every trace: do not combine it with --older-than or --query"
            )
        if not everything and older_than is None and query is None:
            raise CommandError(
                "say which traces to purge: --older-than AGE, --query Q (both: traces "
                "matching both), or --all for every trace"
            )
        now = timezone.now()
        traces, described = Trace.objects.all(), []
        if older_than is not None:
            traces = traces.started_between(until=now - parse_age(older_than))
            described.append(f"started more than {older_than.strip()} ago")
        if query is not None:
            if not query.strip():
                raise CommandError("--query is empty; to purge every trace pass --all")
            try:
                condition = compile_query(query, now=now)
            except QueryError as exc:
                raise CommandError(
                    f"--query: {exc.message} (at character {exc.position + 1} of {query!r})"
                ) from None
            traces = traces.filter(condition)
            described.append(f"matching {query!r}")
        return traces, " and ".join(described) or "in the database (--all)"

    def _confirmed(self, stdin, count: int) -> bool:
        if not stdin.isatty():
            raise CommandError(
                "nobody can confirm: stdin is not a terminal. Pass --yes to delete without "
                "asking, or --dry-run to only count"
            )
        self.stdout.write(f"Delete these {count:,} traces for good? [y/N] ", ending="")
        self.stdout.flush()
        return stdin.readline().strip().lower() in {"y", "yes"}

    def _progress(self, total: int):
        last = [time.monotonic()]

        def report(result: PurgeResult) -> None:
            if time.monotonic() - last[0] >= PROGRESS_SECONDS:
                last[0] = time.monotonic()
                share = min(result.traces / total, 1.0)
                self.stdout.write(f"  {result.traces:,} of {total:,} traces deleted ({share:.0%})")

        return report

    def _reclaim(self) -> None:
        reclaimed = sqlite_reclaim()
        if reclaimed is None:
            self.stdout.write("PostgreSQL's autovacuum makes the freed space reusable.")
        elif reclaimed.mode == "incremental":
            self.stdout.write(
                f"Gave {_size(reclaimed.freed_bytes)} ({reclaimed.freed_pages:,} pages) back to "
                f"the file system in {reclaimed.steps:,} steps; longest step "
                f"{reclaimed.longest_step * 1000:.0f} ms."
            )
        elif reclaimed.mode == "full":
            self.stdout.write("SQLite's auto_vacuum=FULL gave the space back as it deleted.")
        else:
            self.stdout.write(
                f"{_size(reclaimed.free_bytes)} of free pages stay inside the database file: it "
                f"was created before msgtrace turned on incremental vacuum. New spans reuse "
                f"them. To shrink the file once (and let later purges do it themselves), stop "
                f"the server and run a VACUUM: see docs/operations.md."
            )
