"""``msgtrace stats``: totals over every trace, from the database or a server (``--url``)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from traces import terminal


class Command(BaseCommand):
    help = (
        "Totals over all traces: traces, spans, error rate, tokens, cost, p50/p95 duration. "
        "Reads the configured database, or a msgtrace server's API with --url."
    )

    def add_arguments(self, parser):
        terminal.add_url_argument(parser)

    def handle(self, *args, **options):
        source = terminal.source(options["url"])
        for line in terminal.stats_lines(source.stats(), source.where):
            self.stdout.write(line)
