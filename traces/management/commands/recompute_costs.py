"""``msgtrace recompute_costs``: re-price stored spans after the price table changed."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from search.compiler import compile_query
from search.parser import QueryError, parse_moment
from traces.models import Trace
from traces.pricing import reprice


class Command(BaseCommand):
    help = (
        "Re-price stored spans from the price table (ModelPrice), in batches. Spans that "
        "report their own cost keep it; trace totals are recomputed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since", help="only traces that started since then: 7d, 24h, or an ISO date"
        )
        parser.add_argument("--query", help="only traces this search query selects")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="traces per transaction (default 500): each batch is one short write",
        )

    def handle(self, *args, **options):
        traces = Trace.objects.all()
        if options["since"] is not None:
            try:
                since = parse_moment(options["since"], timezone.now())
            except QueryError as exc:
                raise CommandError(f"--since: {exc.message}") from None
            traces = traces.started_between(since=since)
        if options["query"]:
            try:
                traces = traces.filter(compile_query(options["query"]))
            except QueryError as exc:
                raise CommandError(f"--query: {exc.message} at {exc.position}") from None
        if not 1 <= options["batch_size"] <= 10_000:
            raise CommandError("--batch-size must be from 1 to 10000")

        show_progress = sys.stderr.isatty()

        def progress(done, total, spans, changed):
            if show_progress:
                sys.stderr.write(
                    f"\r  {done:,}/{total:,} traces · {spans:,} spans priced · {changed:,} changed"
                )
                sys.stderr.flush()

        result = reprice(traces, batch_size=options["batch_size"], progress=progress)
        if show_progress:
            sys.stderr.write("\n")
        self.stdout.write(
            f"Re-priced {result.spans:,} spans in {result.traces:,} traces: "
            f"{result.changed:,} spans changed cost, {result.unpriced:,} have no price."
        )
