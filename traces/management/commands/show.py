"""``msgtrace show TRACE_ID``: one trace's span tree, drawn in the terminal."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from traces import terminal


class Command(BaseCommand):
    help = (
        "One trace as a span tree: durations, a timeline, types, models, tokens, costs and "
        "errors. Reads the configured database, or a msgtrace server's API with --url."
    )

    def add_arguments(self, parser):
        parser.add_argument("trace_id", help="the trace's id (32 hex digits, as `list` shows)")
        terminal.add_url_argument(parser)

    def handle(self, *args, **options):
        source = terminal.source(options["url"])
        summary, tree = source.trace_tree(options["trace_id"].strip())
        lines = terminal.show_lines(
            summary,
            tree,
            terminal.Glyphs.for_stream(self.stdout.encoding),
            paint=terminal.painter(self.style),
            width=terminal.terminal_width(self.stdout),
        )
        for line in lines:
            self.stdout.write(line)
