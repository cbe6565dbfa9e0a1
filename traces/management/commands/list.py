"""``msgtrace list``: the newest traces as an aligned table, optionally searched (``--q``)."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand

from traces import terminal

MAX_LIMIT = 10_000


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT:,}, got {number}")
    return number


class Command(BaseCommand):
    help = (
        "The newest traces as a table (id, start, workflow, service, duration, spans, errors, "
        "tokens, cost). Reads the configured database, or a msgtrace server's API with --url."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--q", default="", metavar="QUERY",
            help="a search query, as in the web UI: 'error:true', 'duration:>2s since:1h', "
            "'model:gpt-4o' (docs/query-language.md)",
        )  # fmt: skip
        parser.add_argument(
            "--limit", type=_limit, default=20, metavar="N", help="how many traces (default 20)"
        )
        terminal.add_url_argument(parser)

    def handle(self, *args, **options):
        source = terminal.source(options["url"])
        traces, total = source.traces(options["q"], options["limit"])
        lines = terminal.list_lines(
            traces,
            total,
            options["q"],
            terminal.Glyphs.for_stream(self.stdout.encoding),
            paint=terminal.painter(self.style),
            width=terminal.terminal_width(self.stdout),
        )
        for line in lines:
            self.stdout.write(line)
